"""Frame scores from a fitted head, and their aggregation into video scores.

Convention: label 1 = fake, 0 = real; a score is P(fake) (or a monotone proxy of it).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = ["frame_scores", "aggregate_scores"]


def frame_scores(estimator: Any, X: Any, *, pos_label: Any = 1) -> np.ndarray:
    """Per-frame fake score from a fitted binary classifier (or Pipeline).

    Parameters
    ----------
    estimator : fitted scikit-learn classifier or Pipeline ending in one
        Must expose ``classes_`` with exactly two classes, one of them ``pos_label``.
    X : array-like, shape (n_frames, n_features)
    pos_label : default=1
        The fake class.

    Returns
    -------
    ndarray of float64, shape (n_frames,)
        ``predict_proba(X)[:, j]`` with ``classes_[j] == pos_label`` when the estimator has
        ``predict_proba``; otherwise ``sigmoid(±decision_function(X))`` (sign chosen so that
        larger means ``pos_label``). The sigmoid only maps the margin into (0, 1): it is
        monotone (AUC, AP and EER are unaffected) but *not* a calibrated probability, so a
        0.5 threshold on it equals the head's own decision threshold and nothing more.

    Raises
    ------
    ValueError
        If the estimator is not binary or lacks ``pos_label``.
    AttributeError
        If it has neither ``predict_proba`` nor ``decision_function``.
    """
    classes = np.asarray(getattr(estimator, "classes_", None))
    if classes.ndim != 1 or classes.size != 2:
        raise ValueError(
            f"{type(estimator).__name__} must be a fitted binary classifier; "
            f"classes_ = {classes!r}"
        )
    matches = np.flatnonzero(classes == pos_label)
    if matches.size != 1:
        raise ValueError(
            f"pos_label={pos_label!r} not among {type(estimator).__name__}.classes_ "
            f"{classes.tolist()}"
        )
    j = int(matches[0])
    if hasattr(estimator, "predict_proba"):
        proba = np.asarray(estimator.predict_proba(X), dtype=np.float64)
        return proba[:, j]
    if hasattr(estimator, "decision_function"):
        from scipy.special import expit

        dec = np.asarray(estimator.decision_function(X), dtype=np.float64).reshape(-1)
        # decision_function > 0 means classes_[1]
        return expit(dec if j == 1 else -dec)
    raise AttributeError(
        f"{type(estimator).__name__} has neither predict_proba nor decision_function"
    )


def aggregate_scores(
    frame_scores: Any,
    video_ids: Any,
    *,
    how: Literal["mean", "median", "topk"] = "mean",
    k: int = 5,
) -> pd.DataFrame:
    """Video scores from frame scores.

    Parameters
    ----------
    frame_scores : array-like of float, shape (n_frames,)
    video_ids : array-like, shape (n_frames,)
        Video of each frame (any hashable values).
    how : {"mean", "median", "topk"}, default="mean"
        ``"topk"``: mean of the ``k`` highest frame scores of the video (all of them when the
        video has fewer than ``k`` frames).
    k : int, default=5
        Used by ``"topk"`` only.

    Returns
    -------
    pandas.DataFrame
        Index ``video_id`` (videos in order of first appearance), columns ``fake_score``
        (float64, the video's P(fake)) and ``n_frames`` (int64).

    Raises
    ------
    ValueError
        On length mismatch, empty input, NaN scores or missing video ids (naming the rows),
        or an unknown ``how``.
    """
    s = np.asarray(frame_scores, dtype=np.float64)
    v = np.asarray(video_ids)
    if s.ndim != 1 or v.shape != s.shape:
        raise ValueError(
            f"frame_scores {s.shape} and video_ids {v.shape} must be 1-D of equal length"
        )
    if s.size == 0:
        raise ValueError("no frame scores to aggregate")
    if np.isnan(s).any():
        rows = np.flatnonzero(np.isnan(s))
        raise ValueError(f"frame_scores has {rows.size} NaN value(s), rows {rows[:5].tolist()}")
    missing = pd.isna(v)
    if missing.any():
        rows = np.flatnonzero(missing)
        raise ValueError(f"video_ids has {rows.size} missing value(s), rows {rows[:5].tolist()}")
    if how not in ("mean", "median", "topk"):
        raise ValueError(f"how must be 'mean', 'median' or 'topk', got {how!r}")
    if how == "topk" and int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")

    df = pd.DataFrame({"video_id": v, "fake_score": s})
    grouped = df.groupby("video_id", sort=False)["fake_score"]
    if how == "mean":
        score = grouped.mean()
    elif how == "median":
        score = grouped.median()
    else:
        kk = int(k)
        score = grouped.apply(lambda x: float(np.mean(np.sort(x.to_numpy())[-kk:])))
    out = pd.DataFrame(
        {"fake_score": score.astype(np.float64), "n_frames": grouped.size().astype(np.int64)}
    )
    out.index.name = "video_id"
    return out
