"""Temporal statistics: a clip's frame features pooled into one video-level feature row.

FaceNet features are dominated by identity, and identity is constant within a clip. The
spread of a clip's frame features around their own mean (``"std"``) is therefore free of the
clip's identity, while it keeps how much the face's texture statistics flicker from frame to
frame: face-swap and reenactment methods synthesise every frame on its own, and temporal
inconsistency is one of their known traces. A video-level head is then fitted on one row per
clip. Works on arrays and tables only (the metric-learning side of the wall).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["STATS", "MIN_FRAMES", "pool_frames", "video_table"]

#: Per-feature statistics over a clip's frames, in the order they can be requested.
STATS = ("mean", "std")

#: Frames with a face a clip needs before a video-level model scores it (one frame has no
#: spread: an image, or a clip where the face was found once).
MIN_FRAMES = 2


def pool_frames(X: np.ndarray, frames: pd.DataFrame, stats: Sequence[str] = ("std",),
                ddof: int = 1) -> tuple[np.ndarray, pd.DataFrame]:
    """Pool frame features into one row per video.

    Parameters
    ----------
    X : numpy.ndarray
        float (F, D) frame features.
    frames : pandas.DataFrame
        F rows with ``video_id`` (and whatever per-video columns it carries: ``group``,
        ``label``, ``method``, ``split``, ``role``; see
        :func:`video_table`).
    stats : sequence of {"mean", "std"}
        Statistics over each video's frames, concatenated in this order. ``"std"`` is
        ``sqrt(sum((x - mean)**2) / (n - ddof))`` over a video's ``n`` frames (0 for a
        single-frame item, such as an image).
    ddof : {1, 0}
        1 (default): the sample standard deviation, whose variance is unbiased, so that
        clips with few frames are not pulled toward low spread (with ``ddof=0`` the expected
        variance of ``n`` frames is ``(n - 1) / n`` of the clip's, half of it for 2 frames);
        0: the population standard deviation (what models saved before this option used).

    Returns
    -------
    V : numpy.ndarray
        float32 (n_videos, len(stats) * D).
    videos : pandas.DataFrame
        One row per video, in order of first appearance in ``frames``: its per-video columns
        (``video_id``, ``group``, ``label``, ...) plus ``n_frames`` (int64) and
        ``frame_index`` (-1: the row stands for the whole video), so it can take the place
        of a frames table in :func:`deepmetric.eval.evaluation.grouped_cv` and
        :func:`deepmetric.eval.evaluation.score_frames` (each video is then scored once).

    Raises
    ------
    ValueError
        Unknown or repeated statistics, ``ddof`` not 0 or 1, or ``X`` and ``frames`` of
        different lengths.
    """
    stats = list(stats)
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof!r}")
    bad = [s for s in stats if s not in STATS]
    if bad or not stats or len(set(stats)) != len(stats):
        raise ValueError(f"stats must be distinct names from {STATS}, got {stats}")
    X = np.asarray(X)
    if X.ndim != 2 or len(X) != len(frames):
        raise ValueError(f"X must be (F, D) with F = len(frames) = {len(frames)}, "
                         f"got shape {X.shape}")
    frames = frames.reset_index(drop=True)
    vid = frames["video_id"].to_numpy()
    codes, uniq = pd.factorize(vid)  # first-appearance order
    n = np.bincount(codes, minlength=len(uniq))
    order = np.argsort(codes, kind="stable")
    Xs = X[order].astype(np.float64)  # frames grouped by video
    starts = np.concatenate([[0], np.cumsum(n)[:-1]])
    mean = np.add.reduceat(Xs, starts, axis=0) / n[:, None]
    parts = {"mean": mean}
    if "std" in stats:
        dev = Xs - np.repeat(mean, n, axis=0)
        dof = np.maximum(n - ddof, 1)[:, None]  # a single frame: 0 / 1
        parts["std"] = np.sqrt(np.add.reduceat(dev * dev, starts, axis=0) / dof)
    V = np.concatenate([parts[s] for s in stats], axis=1).astype(np.float32)
    videos = video_table(frames)
    videos["n_frames"] = n.astype(np.int64)
    videos["frame_index"] = np.int64(-1)
    return V, videos


def video_table(frames: pd.DataFrame) -> pd.DataFrame:
    """One row per video (first appearance order): ``video_id, group, label`` (+ method, split)."""
    cols = [c for c in ("video_id", "group", "label", "method", "split", "role") if c in frames]
    return frames[cols].drop_duplicates("video_id").reset_index(drop=True)
