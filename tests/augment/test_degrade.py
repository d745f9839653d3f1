"""The degradation chain on real face crops (the DFDC fixture's crops)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deepmetric.augment.degrade import DegradeParams, degrade_crops, sample_degrade_params

pytestmark = pytest.mark.slow  # the real networks on real media


@pytest.fixture(scope="module")
def crops(dfdc_dir) -> np.ndarray:
    files = sorted((dfdc_dir / "prepared_dataset").rglob("*.png"))[:6] \
        or sorted((dfdc_dir / "prepared_dataset").rglob("*.jpg"))[:6]
    assert files, "no crops in the DFDC fixture"
    return np.stack([cv2.resize(cv2.imread(str(f))[..., ::-1], (160, 160)) for f in files])


def test_identity_params_change_nothing(crops):
    np.testing.assert_array_equal(degrade_crops(crops, DegradeParams()), crops)


def _sharpness(crops: np.ndarray) -> float:
    """Mean variance of the Laplacian of the grey crops (high-frequency energy)."""
    return float(np.mean([cv2.Laplacian(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
                          for c in crops]))


def test_downscaling_and_blur_remove_high_frequencies(crops):
    base = _sharpness(crops)
    for p in (DegradeParams(scale=0.4), DegradeParams(blur=1.5)):
        out = degrade_crops(crops, p)
        assert out.shape == crops.shape and out.dtype == np.uint8
        assert _sharpness(out) < 0.5 * base, p
        assert np.abs(out.astype(int) - crops).mean() < 20  # still the same faces


def test_jpeg_quality_orders_the_error(crops):
    err = {q: np.abs(degrade_crops(crops, DegradeParams(jpeg_quality=q)).astype(int)
                     - crops).mean() for q in (30, 95)}
    assert 0 < err[95] < err[30]


def test_draws_are_deterministic_and_varied():
    a = [sample_degrade_params(np.random.default_rng(s)) for s in range(50)]
    b = [sample_degrade_params(np.random.default_rng(s)) for s in range(50)]
    assert a == b
    assert len({p.jpeg_quality for p in a}) > 10
    assert any(p.scale == 1.0 for p in a) and any(p.scale < 0.5 for p in a)
    assert any(p.blur > 0 for p in a) and any(p.jpeg_quality == 0 for p in a)


def test_bad_input_is_named(crops):
    with pytest.raises(ValueError, match="uint8"):
        degrade_crops(crops.astype(np.float32), DegradeParams())
    with pytest.raises(ValueError, match="bad parameters"):
        degrade_crops(crops, DegradeParams(scale=0.0))
