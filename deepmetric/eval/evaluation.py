"""Evaluation: fit a frame-level pipeline on identity-grouped splits and score videos.

Works on arrays and tables only (the metric-learning side of the wall): ``X`` (F, D) frame
features and a ``frames`` table with ``video_id``, ``group``, ``label`` (and optionally
``method``, ``split``) — as :meth:`deepmetric.Extractor.features` returns them.
Splits are made over *videos* with their identity groups (never frames), so frames of one
clip, and a fake with the real clips of its identities, always stay on one side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from deepmetric.eval.metrics import binary_metrics, frame_and_video_metrics, summarize_folds
from deepmetric.eval.scoring import aggregate_scores, frame_scores
from deepmetric.eval.splits import check_group_disjoint, grouped_kfold, split_from_column
from deepmetric.learn.temporal import video_table

__all__ = ["CVResult", "role_masks", "fit_pipeline", "score_frames", "cross_validate",
           "train_test_evaluate", "per_method_metrics"]


@dataclass
class CVResult:
    """Out-of-fold scores and metrics of one pipeline.

    Attributes
    ----------
    folds : list of dict
        Per fold: ``{"frame": {...}, "video": {...}}`` metrics of its test videos.
    summary : dict
        Mean and std of each metric over folds (``summarize_folds``).
    frame_scores : pandas.DataFrame
        Every test frame once: ``video_id, frame_index, label, score, fold`` (+ method).
    video_scores : pandas.DataFrame
        Every test video once: ``video_id, label, score, n_frames, fold`` (+ method, group).
    per_method : dict
        Video-level metrics of the pooled out-of-fold scores, real videos vs each method.
    """

    folds: list[dict]
    summary: dict
    frame_scores: pd.DataFrame
    video_scores: pd.DataFrame
    per_method: dict = field(default_factory=dict)


def fit_pipeline(pipeline: Any, X: np.ndarray, frames: pd.DataFrame) -> Any:
    """Fit a (cloned) pipeline on frames; a triplet projector step gets the groups.

    Parameters
    ----------
    pipeline : sklearn estimator
        Typically ``Pipeline([("proj", TripletProjector()), ("clf", head)])``.
    X : numpy.ndarray
        float32 (F, D) frame features.
    frames : pandas.DataFrame
        F rows with ``label`` and ``group``.

    Returns
    -------
    estimator
        The fitted clone.
    """
    est = clone(pipeline)
    y = frames["label"].to_numpy(np.int64)
    params = {}
    steps = dict(getattr(est, "steps", []))
    for name, step in steps.items():
        if "groups" in _fit_params(step):
            params[f"{name}__groups"] = frames["group"].to_numpy()
    est.fit(X, y, **params)
    return est


def _fit_params(est: Any) -> tuple[str, ...]:
    import inspect

    try:
        return tuple(inspect.signature(est.fit).parameters)
    except (TypeError, ValueError):
        return ()


def score_frames(estimator: Any, X: np.ndarray, frames: pd.DataFrame, *, how: str = "mean",
                 k: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Frame and video scores (P(fake)) of a fitted estimator.

    Returns
    -------
    frame_df, video_df : pandas.DataFrame
        ``frame_df``: the frames table plus ``score``; ``video_df``: one row per video with
        ``score`` (aggregated by ``how``) and ``n_frames``.
    """
    s = frame_scores(estimator, X)
    fdf = frames.reset_index(drop=True).copy()
    fdf["score"] = s
    agg = aggregate_scores(s, fdf["video_id"].to_numpy(), how=how, k=k)  # type: ignore[arg-type]
    vdf = video_table(fdf).set_index("video_id").join(agg).reset_index()
    return fdf, vdf


def per_method_metrics(videos: pd.DataFrame) -> dict:
    """Video metrics of real videos vs each manipulation method's fakes.

    Parameters
    ----------
    videos : pandas.DataFrame
        ``label, score, method`` per video (``method`` is ``"real"`` for label 0).
    """
    if "method" not in videos or videos["method"].isna().all():
        return {}
    real = videos[videos["label"] == 0]
    out = {}
    for method in sorted(videos.loc[videos["label"] == 1, "method"].dropna().unique()):
        fake = videos[(videos["label"] == 1) & (videos["method"] == method)]
        both = pd.concat([real, fake])
        out[str(method)] = binary_metrics(both["label"].to_numpy(), both["score"].to_numpy())
    return out


def cross_validate(pipeline: Any, X: np.ndarray, frames: pd.DataFrame, *, n_splits: int = 5,
                   random_state: int = 0, how: str = "mean", k: int = 5) -> CVResult:
    """Identity-grouped, stratified k-fold CV at video level, scored at frame and video level.

    Parameters
    ----------
    pipeline : sklearn estimator
        Cloned and fitted once per fold.
    X : numpy.ndarray
        float32 (F, D) frame features.
    frames : pandas.DataFrame
        F rows: ``video_id, group, label`` (+ ``method``).
    n_splits : int
        Folds (needs at least that many groups).
    random_state : int
        Seeds the fold assignment (and nothing else).
    how, k
        Frame → video aggregation (``"mean"``, ``"median"``, ``"topk"``).

    Returns
    -------
    CVResult
    """
    frames = frames.reset_index(drop=True)
    videos = video_table(frames)
    fdfs, vdfs, folds = [], [], []
    vid_pos = pd.Series(np.arange(len(videos)), index=videos["video_id"])
    frame_video = vid_pos.loc[frames["video_id"]].to_numpy()
    trainable, testable = role_masks(frames)
    for fold, (tr_v, te_v) in enumerate(grouped_kfold(videos["label"].to_numpy(),
                                                      videos["group"].to_numpy(),
                                                      n_splits=n_splits,
                                                      random_state=random_state)):
        check_group_disjoint(videos["group"].to_numpy(), tr_v, te_v)
        tr = np.flatnonzero(np.isin(frame_video, tr_v) & trainable)
        te = np.flatnonzero(np.isin(frame_video, te_v) & testable)
        est = fit_pipeline(pipeline, X[tr], frames.iloc[tr])
        fdf, vdf = score_frames(est, X[te], frames.iloc[te], how=how, k=k)
        fdf["fold"] = fold
        vdf["fold"] = fold
        fdfs.append(fdf)
        vdfs.append(vdf)
        folds.append(frame_and_video_metrics(fdf["label"], fdf["score"], fdf["video_id"],
                                             how=how, k=k))
    return CVResult(folds=folds, summary=summarize_folds(folds),
                    frame_scores=pd.concat(fdfs, ignore_index=True),
                    video_scores=pd.concat(vdfs, ignore_index=True),
                    per_method=per_method_metrics(pd.concat(vdfs, ignore_index=True)))


def train_test_evaluate(pipeline: Any, X_train: np.ndarray, frames_train: pd.DataFrame,
                        X_test: np.ndarray, frames_test: pd.DataFrame, *, how: str = "mean",
                        k: int = 5) -> tuple[Any, dict, pd.DataFrame, pd.DataFrame]:
    """Fit on one set, evaluate on another (official split or cross-dataset).

    Returns
    -------
    estimator, metrics, frame_df, video_df
        ``metrics`` is ``{"frame": {...}, "video": {...}, "per_method": {...}}``.
    """
    est = fit_pipeline(pipeline, X_train, frames_train)
    fdf, vdf = score_frames(est, X_test, frames_test, how=how, k=k)
    m = _metrics_or_scores(fdf, how=how, k=k)
    m["per_method"] = per_method_metrics(vdf)
    return est, m, fdf, vdf


def _metrics_or_scores(fdf: pd.DataFrame, how: str, k: int) -> dict:
    return frame_and_video_metrics(fdf["label"], fdf["score"], fdf["video_id"], how=how, k=k)


def role_masks(frames: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Frame masks (may train, may test) from the optional ``role`` column.

    ``"train"`` rows (self-blended pseudo-fakes) are never tested on, ``"test"`` rows are
    never trained on; without the column every frame may be both.
    """
    if "role" not in frames:
        ones = np.ones(len(frames), bool)
        return ones, ones.copy()
    role = frames["role"].fillna("both").astype(str).to_numpy()
    bad = sorted(set(role) - {"both", "train", "test"})
    if bad:
        raise ValueError(f"unknown role(s) {bad}; expected 'both', 'train' or 'test'")
    return role != "test", role != "train"


def split_masks(frames: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Frame masks (train, test) from an explicit ``split`` column (``val`` joins train).

    The ``role`` column (see :func:`role_masks`) further restricts both.
    """
    videos = video_table(frames)
    idx = split_from_column(videos["split"].to_numpy(), videos["group"].to_numpy())
    train_v = set(videos["video_id"].iloc[np.concatenate([idx["train"], idx["val"]])])
    test_v = set(videos["video_id"].iloc[idx["test"]])
    if not test_v or not train_v:
        raise ValueError("the split column needs both train and test videos")
    vid = frames["video_id"]
    trainable, testable = role_masks(frames)
    return vid.isin(train_v).to_numpy() & trainable, vid.isin(test_v).to_numpy() & testable
