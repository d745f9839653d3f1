"""Self-blended images on scikit-image's public-domain astronaut portrait."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from deepmetric.augment.blend import (BlendParams, apply_blend, face_outline, sample_blend_params,
                              self_blend)

# MTCNN's 5 landmarks on skimage.data.astronaut() (facenet-pytorch 2.5.3, p = 0.99999)
LANDMARKS = np.array([[205.0, 101.7], [246.8, 103.7], [224.7, 129.0], [201.7, 139.2],
                      [245.3, 141.9]])
FACE_BOX = (181, 62, 268, 172)  # MTCNN box x0, y0, x1, y1


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return skimage.data.astronaut()


def test_shapes_dtypes_and_range(image: np.ndarray):
    for seed in range(5):
        out, mask = self_blend(image, LANDMARKS, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.uint8
        assert mask.shape == image.shape[:2] and mask.dtype == np.float32
        assert mask.min() >= 0.0 and mask.max() <= 1.0
        assert mask.max() > 0.2


def test_changes_stay_inside_the_mask(image: np.ndarray):
    out, mask = self_blend(image, LANDMARKS, np.random.default_rng(3), ratio=1.0,
                           brightness=0.1, contrast=1.1)
    diff = np.abs(out.astype(int) - image.astype(int)).max(axis=2)
    assert (diff[mask == 0] == 0).all()
    assert diff[mask > 0.9].mean() > 10
    # far corners untouched; the face centre is blended
    assert (mask[:100, :100] == 0).all() and (mask[-100:, -100:] == 0).all()
    x0, y0, x1, y1 = FACE_BOX
    assert mask[(y0 + y1) // 2, (x0 + x1) // 2] == pytest.approx(1.0)
    # the mask covers most of the face box and stays near it
    assert (mask[y0 + 20:y1 - 20, x0 + 15:x1 - 15] > 0.5).mean() > 0.9
    assert (mask > 0.01).sum() < 4 * (x1 - x0) * (y1 - y0)


def test_deterministic_given_seed(image: np.ndarray):
    a = self_blend(image, LANDMARKS, np.random.default_rng(7))
    b = self_blend(image, LANDMARKS, np.random.default_rng(7))
    c = self_blend(image, LANDMARKS, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_grey_input_stays_grey(image: np.ndarray):
    grey = np.dstack([cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)] * 3)
    out, mask = self_blend(grey, LANDMARKS, np.random.default_rng(1), ratio=1.0,
                           brightness=-0.1)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert np.abs(out.astype(int) - grey.astype(int))[mask > 0.9].mean() > 5


def test_mask_moves_with_the_face(image: np.ndarray):
    params = sample_blend_params(np.random.default_rng(4))
    _, mask = apply_blend(image, LANDMARKS, params)
    shifted = np.roll(image, (13, -9), axis=(0, 1))
    _, moved = apply_blend(shifted, LANDMARKS + [-9, 13], params)
    assert np.abs(np.roll(mask, (13, -9), axis=(0, 1)) - moved).max() < 1e-4


def test_generic_landmarks_and_errors(image: np.ndarray):
    x0, y0, x1, y1 = FACE_BOX
    t = np.linspace(0, 2 * np.pi, 17, endpoint=False)
    ring = np.column_stack([(x0 + x1) / 2 + 40 * np.cos(t), (y0 + y1) / 2 + 50 * np.sin(t)])
    out, mask = self_blend(image, ring, np.random.default_rng(0))
    assert mask[(y0 + y1) // 2, (x0 + x1) // 2] > 0 and out.shape == image.shape
    assert face_outline(ring).shape == (17, 2)
    assert face_outline(LANDMARKS, n_points=32).shape == (37, 2)
    with pytest.raises(ValueError, match="K >= 3"):
        self_blend(image, LANDMARKS[:2], np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        self_blend(image.astype(np.float32), LANDMARKS, np.random.default_rng(0))
    with pytest.raises(TypeError, match="unknown blend parameter"):
        self_blend(image, LANDMARKS, np.random.default_rng(0), ratoi=1.0)


def test_identity_params_change_nothing(image: np.ndarray):
    out, mask = apply_blend(image, LANDMARKS, BlendParams())
    assert mask.max() == pytest.approx(1.0)
    assert np.abs(out.astype(int) - image.astype(int)).max() <= 1
