"""int8 FaceNet (``FaceEmbedder(quantize="int8")``) against the float network, on real faces
with the real converted CASIA-WebFace weights."""

from __future__ import annotations

import numpy as np
import pytest

from deepmetric.features.backbones.facenet import FaceEmbedder
from deepmetric.features.backbones.quantize import RECIPE, calibration_images

TAPS = ["repeat_2@2x2", "avgpool_1a"]


@pytest.fixture(scope="module")
def faces(aligned, dfdc_dir) -> np.ndarray:
    """uint8 (27, 160, 160, 3): the 5 aligned faces and the 22 DFDC fixture crops."""
    import cv2

    from deepmetric.video.frames import read_image

    crops = [cv2.resize(read_image(p), (160, 160), interpolation=cv2.INTER_AREA)
             for p in sorted((dfdc_dir / "prepared_dataset").glob("*/*.png"))]
    assert len(crops) == 22
    return np.concatenate([aligned, np.stack(crops)])


@pytest.fixture(scope="module")
def both(faces):
    """(float outputs, int8 outputs, the int8 embedder) with the same taps."""
    q = FaceEmbedder(device="cpu", quantize="int8", layers=TAPS)
    return FaceEmbedder(device="cpu", layers=TAPS).embed(faces), q.embed(faces), q


def test_calibration_images_are_seeded_smooth_and_span_the_range():
    a, b = calibration_images(4), calibration_images(4)
    assert a.shape == (4, 160, 160, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, calibration_images(4, seed=1))
    assert a.min() < 30 and a.max() > 225                  # the input range, not a grey wash
    step = np.abs(np.diff(a.astype(int), axis=1)).mean()
    assert step < 6                                         # smooth: no pixel noise


def test_bad_quantize_value_is_a_clear_error():
    with pytest.raises(ValueError, match="quantize must be one of"):
        FaceEmbedder(quantize="int4")


def test_settings_carry_the_recipe_and_float_settings_are_unchanged():
    plain = FaceEmbedder().settings()
    assert "quantize" not in plain                          # old caches keep their key
    q = FaceEmbedder(quantize="int8").settings()
    assert q["quantize"] == RECIPE and {k: v for k, v in q.items() if k != "quantize"} == plain


@pytest.mark.slow
def test_int8_embeddings_stay_close_to_float_ones_on_real_faces(both):
    f, q, _ = both
    assert q["embedding"].shape == (27, 512) and q["embedding"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q["embedding"], axis=1), 1.0, atol=1e-5)
    cos = np.sum(f["embedding"] * q["embedding"], 1)
    assert np.median(cos) > 0.99 and cos.min() > 0.97, cos
    assert not np.array_equal(f["embedding"], q["embedding"])   # it did run in int8
    # who is closest to whom among the 5 people is kept
    df = np.linalg.norm(f["embedding"][:5, None] - f["embedding"][None, :5], axis=-1)
    dq = np.linalg.norm(q["embedding"][:5, None] - q["embedding"][None, :5], axis=-1)
    np.testing.assert_array_equal(np.argsort(df, 1), np.argsort(dq, 1))
    for tap in TAPS:                                        # taps on top-level blocks work
        assert q[tap].shape == f[tap].shape
        assert np.corrcoef(q[tap].ravel(), f[tap].ravel())[0, 1] > 0.99


@pytest.mark.slow
def test_int8_is_deterministic_and_a_row_does_not_depend_on_its_batch(both, faces):
    _, q, emb = both
    again = FaceEmbedder(device="cpu", quantize="int8", layers=TAPS, batch_size=4).embed(faces)
    for name in q:
        np.testing.assert_allclose(again[name], q[name], atol=1e-5)
    one = emb.embed(faces[7:8])
    np.testing.assert_allclose(one["embedding"], q["embedding"][7:8], atol=1e-5)


@pytest.mark.slow
def test_the_float_model_is_left_as_it_was(faces):
    from deepmetric.features.backbones.facenet import QUANTIZED_BLOCKS, standardize_crops
    import torch

    from deepmetric.features.backbones.quantize import quantize_blocks

    model = FaceEmbedder(device="cpu", channels_last=False).model
    x = standardize_crops(faces[:3])
    with torch.inference_mode():
        before = model(x)
        qm = quantize_blocks(model, QUANTIZED_BLOCKS, standardize_crops(calibration_images(8)))
        np.testing.assert_array_equal(model(x).numpy(), before.numpy())
        assert type(qm.repeat_2).__name__ == "QuantizedBlock"
        assert type(model.repeat_2).__name__ == "Sequential"
    with pytest.raises(ValueError, match=r"cannot quantize \['repeat_9'\]"):
        quantize_blocks(model, ["repeat_9"], x)


@pytest.mark.slow
def test_int8_on_a_gpu_device_and_nested_taps_are_clear_errors(faces):
    with pytest.raises(ValueError, match="CPU only.*cuda"):
        FaceEmbedder(device="cuda", quantize="int8").embed(faces[:1])
    with pytest.raises(ValueError, match="'repeat_2.0': with quantize='int8' only top-level"):
        FaceEmbedder(device="cpu", quantize="int8", layers=["repeat_2.0"]).embed(faces[:1])
