"""Per-clip statistics of real FF++ frame features (video-level rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepmetric import Extractor
from deepmetric.learn.temporal import pool_frames


@pytest.fixture(scope="module")
def ffpp_features(ffpp_manifest, detector, embedder, tmp_path_factory):
    """4 frames of 6 FF++ clips (3 real, 3 fake), interleaved by frame as a shuffled
    frames table would be."""
    items = pd.concat([ffpp_manifest[ffpp_manifest["label"] == 0].head(3),
                       ffpp_manifest[ffpp_manifest["label"] == 1].head(3)])
    ex = Extractor(detector, embedder, n_frames=4, spectrum_bins=16, progress=False,
                   cache_dir=tmp_path_factory.mktemp("cache"))
    ex.run(items)
    feats = ex.features(items, ["embedding", "spectrum"])
    order = np.argsort(feats.frames.groupby("video_id").cumcount().to_numpy(), kind="stable")
    return feats.X[order], feats.frames.iloc[order].reset_index(drop=True)


def test_pool_frames_is_the_per_video_mean_and_std(ffpp_features):
    X, frames = ffpp_features
    V, videos = pool_frames(X, frames, ["mean", "std"])
    want = pd.DataFrame(X.astype(np.float64)).groupby(frames["video_id"].to_numpy(), sort=False)
    assert list(videos["video_id"]) == list(frames["video_id"].drop_duplicates())
    np.testing.assert_allclose(V[:, :X.shape[1]], want.mean().to_numpy(), atol=1e-6)
    np.testing.assert_allclose(V[:, X.shape[1]:], want.std(ddof=1).to_numpy(), atol=1e-6)
    population, _ = pool_frames(X, frames, ["std"], ddof=0)
    np.testing.assert_allclose(population, want.std(ddof=0).to_numpy(), atol=1e-6)
    assert V.dtype == np.float32 and V.shape == (6, 2 * X.shape[1])
    assert (videos["n_frames"] == 4).all() and (videos["frame_index"] == -1).all()
    assert videos[["video_id", "group", "label"]].equals(
        frames.drop_duplicates("video_id")[["video_id", "group", "label"]]
        .reset_index(drop=True))


def test_std_leaves_out_what_is_constant_within_a_clip(ffpp_features):
    """Adding a per-clip constant (say, an identity offset) changes the mean, not the std."""
    X, frames = ffpp_features
    codes = pd.factorize(frames["video_id"])[0]
    offset = np.random.default_rng(0).normal(size=(codes.max() + 1, X.shape[1])) * 5
    shifted = X + offset[codes].astype(np.float32)
    s0, _ = pool_frames(X, frames, ["std"])
    s1, _ = pool_frames(shifted, frames, ["std"])
    m0, _ = pool_frames(X, frames, ["mean"])
    m1, _ = pool_frames(shifted, frames, ["mean"])
    np.testing.assert_allclose(s0, s1, atol=1e-4)
    assert np.abs(m1 - m0).min() > 1e-3
    assert s0.std() > 0  # real clips do vary over their frames


def test_single_frame_items_and_bad_arguments(ffpp_features):
    X, frames = ffpp_features
    one = frames.drop_duplicates("video_id")
    V, videos = pool_frames(X[one.index], one, ["std"])
    assert (V == 0).all() and (videos["n_frames"] == 1).all()
    with pytest.raises(ValueError, match="stats"):
        pool_frames(X, frames, ["max"])
    with pytest.raises(ValueError, match="stats"):
        pool_frames(X, frames, ["std", "std"])
    with pytest.raises(ValueError, match="len\\(frames\\)"):
        pool_frames(X[:-1], frames)
    with pytest.raises(ValueError, match="ddof must be 0 or 1"):
        pool_frames(X, frames, ddof=2)


def test_sample_std_does_not_shrink_with_fewer_frames(ffpp_features):
    """Clips cut to 2 of their 4 frames: with ddof=1 their mean variance matches the full
    clips' (unbiased); with ddof=0 it is half, which a model would read as a calmer clip."""
    X, frames = ffpp_features
    pairs = [np.flatnonzero(frames["video_id"].to_numpy() == v)[list(ij)]
             for v in frames["video_id"].unique()
             for ij in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]]
    cut = np.concatenate(pairs)
    cut_frames = frames.iloc[cut].assign(video_id=np.repeat(np.arange(len(pairs)), 2))
    for ddof, want in ((1, 1.0), (0, 0.5 * 4 / 3)):
        full, _ = pool_frames(X, frames, ["std"], ddof=ddof)
        part, _ = pool_frames(X[cut], cut_frames, ["std"], ddof=ddof)
        ratio = (part.astype(np.float64) ** 2).mean() / (full.astype(np.float64) ** 2).mean()
        assert ratio == pytest.approx(want, rel=1e-4), ddof


def test_metric_learning_core_imports_no_video_or_face_code():
    """The wall: the array-only modules load without frames, faces, OpenCV or Hydra."""
    import subprocess
    import sys

    core = ["learn.temporal", "learn.mining", "learn.projector", "eval.scoring",
            "eval.metrics", "model_selection", "eval.evaluation", "eval.plots"]
    code = ("import sys\n" + "".join(f"import deepmetric.{m}\n" for m in core)
            + "print(','.join(m for m in ('cv2', 'facenet_pytorch', 'deepmetric.video.frames', "
              "'deepmetric.video.faces', 'deepmetric.video.mtcnn', "
              "'deepmetric.features.backbones.facenet', 'deepmetric.features.extract', 'hydra', "
              "'experiments') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "", out.stdout
