"""FaceNet embeddings with the real converted CASIA-WebFace weights."""

from __future__ import annotations

import numpy as np
import pytest

from deepmetric.embedder import FaceEmbedder
from deepmetric.frames import read_image

NAMES = ["angelina_jolie", "bradley_cooper", "kate_siegel", "paul_rudd", "shea_whigham"]


@pytest.fixture(scope="module")
def aligned(faces_dir):
    return np.stack([read_image(faces_dir / "test_images_aligned" / n / "1.png")
                     for n in NAMES])


def test_embeddings_normalised_and_identity_separating(embedder, aligned):
    e = embedder.embed(aligned)["embedding"]
    assert e.shape == (5, 512) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    d = np.linalg.norm(e[:, None] - e[None], axis=-1)
    assert d[0, 2] == pytest.approx(1.0020, abs=1e-3)  # the reference table's value


def test_batching_and_memory_format_do_not_change_results(aligned):
    a = FaceEmbedder(device="cpu", batch_size=5).embed(aligned)["embedding"]
    b = FaceEmbedder(device="cpu", batch_size=2, channels_last=False).embed(aligned)["embedding"]
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_layer_taps(aligned):
    emb = FaceEmbedder(device="cpu", layers=["repeat_1", "avgpool_1a", "mixed_7a"])
    out = emb.embed(aligned[:2])
    assert list(out) == ["embedding", "repeat_1", "avgpool_1a", "mixed_7a"]
    assert out["repeat_1"].shape == (2, 2 * 256)      # mean + std of 256 channels
    assert out["avgpool_1a"].shape == (2, 1792)       # already pooled: 1x1
    assert out["mixed_7a"].shape == (2, 2 * 1792)
    assert np.all(out["repeat_1"][:, 256:] >= 0)      # std half is non-negative
    assert np.isfinite(out["mixed_7a"]).all()


def test_unknown_layer_is_a_clear_error(aligned):
    with pytest.raises(ValueError, match="unknown embedder layer 'repeat_9'"):
        FaceEmbedder(device="cpu", layers=["repeat_9"]).embed(aligned[:1])


def test_bad_input_shape(embedder):
    with pytest.raises(ValueError, match="crops must be"):
        embedder.embed(np.zeros((2, 160, 160), np.uint8))
    out = embedder.embed(np.zeros((0, 160, 160, 3), np.uint8))
    assert out["embedding"].shape[0] == 0
