"""FaceNet embeddings with the real converted CASIA-WebFace weights."""

from __future__ import annotations

import numpy as np
import pytest

from deepmetric.features.backbones.facenet import FaceEmbedder

pytestmark = pytest.mark.slow  # the real networks on real media



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


def test_grid_taps_keep_where_and_agree_with_the_whole_map(aligned):
    emb = FaceEmbedder(device="cpu", layers=["repeat_2", "repeat_2@2x2"])
    out = emb.embed(aligned[:3])
    whole, grid = out["repeat_2"], out["repeat_2@2x2"]
    c = 896                                               # repeat_2: 8x8x896 at 160 px
    assert whole.shape == (3, 2 * c) and grid.shape == (3, 2 * c * 4)
    means = grid[:, :4 * c].reshape(3, c, 4)              # channel-major, 4 equal 4x4 cells
    stds = grid[:, 4 * c:].reshape(3, c, 4)
    np.testing.assert_allclose(means.mean(-1), whole[:, :c], atol=1e-4)
    # law of total variance over equal cells: var = mean(cell var) + var(cell means)
    total = (stds ** 2).mean(-1) + means.var(-1)
    np.testing.assert_allclose(np.sqrt(total), whole[:, c:], atol=2e-3)
    assert (means.std(-1) > 1e-3).mean() > 0.5           # cells differ: position is kept


@pytest.mark.parametrize("spec", ["repeat_2@2x3", "repeat_2@", "repeat_2@0x0", "@2x2"])
def test_bad_grid_spec_is_a_clear_error(spec, aligned):
    with pytest.raises(ValueError, match="bad embedder layer"):
        FaceEmbedder(device="cpu", layers=[spec]).embed(aligned[:1])


def test_grid_on_a_pooled_block_is_a_clear_error(aligned):
    with pytest.raises(ValueError, match="needs a spatial"):
        FaceEmbedder(device="cpu", layers=["avgpool_1a@2x2"]).embed(aligned[:1])


def test_flip_average_is_the_mean_of_both_views_and_mirror_invariant(aligned):
    plain = FaceEmbedder(device="cpu", layers=["repeat_2@2x2", "repeat_3"])
    flip = FaceEmbedder(device="cpu", layers=["repeat_2@2x2", "repeat_3"], flip_average=True,
                        batch_size=2)
    mirrored = np.ascontiguousarray(aligned[:, :, ::-1])
    a, b, f = plain.embed(aligned), plain.embed(mirrored), flip.embed(aligned)
    for n in ("repeat_2@2x2", "repeat_3"):
        np.testing.assert_allclose(f[n], (a[n] + b[n]) / 2, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(f["embedding"], axis=1), 1.0, atol=1e-5)
    assert (np.sum(f["embedding"] * a["embedding"], axis=1) > 0.9).all()
    g = flip.embed(mirrored)                              # the mirror has the same features
    for n in f:
        np.testing.assert_allclose(g[n], f[n], atol=1e-4)
    assert np.abs(a["repeat_3"] - b["repeat_3"]).max() > 1e-2   # a face is not symmetric
    assert "flip_average" not in plain.settings() and flip.settings()["flip_average"]


def test_unknown_layer_is_a_clear_error(aligned):
    with pytest.raises(ValueError, match="unknown embedder layer 'repeat_9'"):
        FaceEmbedder(device="cpu", layers=["repeat_9"]).embed(aligned[:1])


def test_bad_input_shape(embedder):
    with pytest.raises(ValueError, match="crops must be"):
        embedder.embed(np.zeros((2, 160, 160), np.uint8))
    out = embedder.embed(np.zeros((0, 160, 160, 3), np.uint8))
    assert out["embedding"].shape[0] == 0
