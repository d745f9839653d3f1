"""Evaluation: fit a frame-level pipeline on identity-grouped splits and score videos.

Works on arrays and tables only (the metric-learning side of the wall): ``X`` (F, D) frame
features and a ``frames`` table with ``video_id``, ``group``, ``label`` (and optionally
``method``, ``split``) — as :meth:`deepmetric.Extractor.features` returns them.
Splits are made over *videos* with their identity groups (never frames), so frames of one
clip, and a fake with the real clips of its identities, always stay on one side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from deepmetric.eval.metrics import binary_metrics, frame_and_video_metrics, summarize_folds
from deepmetric.eval.scoring import aggregate_scores, frame_scores
from deepmetric.model_selection import (check_group_disjoint, check_two_classes, grouped_kfold,
                                    split_from_column)
from deepmetric.learn.temporal import MIN_FRAMES, pool_frames, video_table

__all__ = ["CVResult", "Evaluation", "evaluate", "role_masks", "fit_pipeline", "score_frames",
           "grouped_cv", "fit_grouped", "per_method_metrics", "has_test_split", "split_masks"]


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
        Every test frame once: ``video_id, frame_index, label, face_prob, fake_score, fold``
        (+ method); ``fake_score`` is the frame's P(fake), ``face_prob`` the face
        detector's confidence.
    video_scores : pandas.DataFrame
        Every test video once: ``video_id, label, fake_score, n_frames, fold`` (+ method,
        group).
    per_method : dict
        Video-level metrics of the pooled out-of-fold scores, real videos vs each method.
    """

    folds: list[dict]
    summary: dict
    frame_scores: pd.DataFrame
    video_scores: pd.DataFrame
    per_method: dict = field(default_factory=dict)


def fit_pipeline(pipeline: Any, X: np.ndarray, frames: pd.DataFrame) -> Any:
    """Fit a (cloned) pipeline on frames; a triplet projector step gets the groups (and
    the source pairs, when the frames carry the manifest's ``pair_id``).

    Parameters
    ----------
    pipeline : sklearn estimator
        Typically ``Pipeline([("proj", TripletProjector()), ("clf", head)])``.
    X : numpy.ndarray
        float32 (F, D) frame features.
    frames : pandas.DataFrame
        F rows with ``label`` and ``group`` (and optionally ``pair_id``).

    Returns
    -------
    estimator
        The fitted clone.
    """
    return fit_grouped(pipeline, X, frames["label"].to_numpy(np.int64),
                       frames["group"].to_numpy(),
                       frames["pair_id"].to_numpy() if "pair_id" in frames else None)


def fit_grouped(estimator: Any, X: np.ndarray, y: np.ndarray, groups: np.ndarray,
                pairs: np.ndarray | None = None) -> Any:
    """Fit a clone of an estimator; each pipeline step (or the estimator itself) whose
    ``fit`` takes ``groups`` gets them, and ``pairs`` (when given) likewise.

    Parameters
    ----------
    estimator : sklearn estimator or Pipeline
    X : numpy.ndarray
        (n_rows, n_features).
    y : numpy.ndarray
        int (n_rows,) labels.
    groups : numpy.ndarray
        (n_rows,) identity groups.
    pairs : numpy.ndarray, optional
        (n_rows,) source pair ids (:mod:`deepmetric.learn.paired`).

    Returns
    -------
    estimator
        The fitted clone.
    """
    est = clone(estimator)
    params = {}
    given = {"groups": groups, **({} if pairs is None else {"pairs": pairs})}
    steps = getattr(est, "steps", None)
    for name, step in [("", est)] if steps is None else steps:
        taken = _fit_params(step)
        params.update((f"{name}__{k}" if name else k, v) for k, v in given.items() if k in taken)
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
        ``frame_df``: the frames table plus ``fake_score`` (float, P(fake)); ``video_df``:
        one row per video with ``fake_score`` (aggregated by ``how``) and ``n_frames``.
    """
    s = frame_scores(estimator, X)
    fdf = frames.reset_index(drop=True).copy()
    fdf["fake_score"] = s
    agg = aggregate_scores(s, fdf["video_id"].to_numpy(), how=how, k=k)  # type: ignore[arg-type]
    vdf = video_table(fdf).set_index("video_id").join(agg).reset_index()
    return fdf, vdf


def per_method_metrics(videos: pd.DataFrame) -> dict:
    """Video metrics of real videos vs each manipulation method's fakes.

    Parameters
    ----------
    videos : pandas.DataFrame
        ``label, fake_score, method`` per video (``method`` is ``"real"`` for label 0).
    """
    if "method" not in videos or videos["method"].isna().all():
        return {}
    real = videos[videos["label"] == 0]
    out = {}
    for method in sorted(videos.loc[videos["label"] == 1, "method"].dropna().unique()):
        fake = videos[(videos["label"] == 1) & (videos["method"] == method)]
        both = pd.concat([real, fake])
        out[str(method)] = binary_metrics(both["label"].to_numpy(), both["fake_score"].to_numpy())
    return out


def grouped_cv(pipeline: Any, X: np.ndarray, frames: pd.DataFrame, *, n_splits: int = 5,
                   random_state: int = 0, how: str = "mean", k: int = 5,
                   threshold: float = 0.5) -> CVResult:
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
    threshold : float
        Score at or above which a frame or video counts as fake (accuracy, precision,
        recall, F1; the EER-threshold metrics do not depend on it).

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
        check_two_classes(frames["label"].to_numpy()[tr],
                          f"training part of fold {fold + 1} of {n_splits} (grouped CV)")
        est = fit_pipeline(pipeline, X[tr], frames.iloc[tr])
        fdf, vdf = score_frames(est, X[te], frames.iloc[te], how=how, k=k)
        fdf["fold"] = fold
        vdf["fold"] = fold
        fdfs.append(fdf)
        vdfs.append(vdf)
        folds.append(frame_and_video_metrics(fdf["label"], fdf["fake_score"], fdf["video_id"],
                                             how=how, k=k, threshold=threshold))
    return CVResult(folds=folds, summary=summarize_folds(folds),
                    frame_scores=pd.concat(fdfs, ignore_index=True),
                    video_scores=pd.concat(vdfs, ignore_index=True),
                    per_method=per_method_metrics(pd.concat(vdfs, ignore_index=True)))


@dataclass
class Evaluation:
    """What :func:`evaluate` measured for one pipeline.

    Attributes
    ----------
    metrics : dict
        The structure ``metrics.json`` holds for a pipeline: ``protocol``, ``test``
        (``{"frame": {...}, "video": {...}}``; means over folds under CV), ``test_std``,
        ``folds`` and ``pooled`` (CV only: the metrics of all out-of-fold scores pooled,
        what a ROC curve of them shows), ``per_method`` (pooled too), and ``cross`` /
        ``cross_skipped`` when cross-dataset data was given. A video-level model's
        frame-level entries are NaN, and ``n_left_out_few_frames`` / ``left_out_few_frames``
        count and name the videos it could not score (fewer than ``MIN_FRAMES`` frames with a
        face).
    frame_scores, video_scores : pandas.DataFrame
        Out-of-fold (or test-split) scores: one row per test frame / video.
    cross_frame_scores, cross_video_scores : pandas.DataFrame or None
        Scores of the cross-dataset data.
    estimator : sklearn estimator or None
        The pipeline fitted on every trainable row of the data (when ``fit_final`` or
        cross-dataset data asked for it).
    frame_estimator : sklearn estimator or None
        For a video-level model: the same pipeline fitted on the frames, which scores items
        with too few frames for the video-level path (an image), fitted with ``estimator``.
    """

    metrics: dict
    frame_scores: pd.DataFrame
    video_scores: pd.DataFrame
    cross_frame_scores: pd.DataFrame | None = None
    cross_video_scores: pd.DataFrame | None = None
    estimator: Any = None
    frame_estimator: Any = None


def has_test_split(frames: pd.DataFrame) -> bool:
    """Whether the table's ``split`` column defines the protocol (every row set, some test)."""
    return "split" in frames and frames["split"].notna().all() \
        and frames["split"].astype(str).str.lower().isin(["test", "testing"]).any()


def evaluate(pipeline: Any, X: np.ndarray, frames: pd.DataFrame, *, n_splits: int = 5,
             random_state: int = 0, how: str = "mean", k: int = 5, threshold: float = 0.5,
             temporal: Sequence[str] = (), ddof: int = 1, cross_X: np.ndarray | None = None,
             cross_frames: pd.DataFrame | None = None, fit_final: bool = False) -> Evaluation:
    """The evaluation protocol of ``python -m experiments.run``, without a config.

    - The data's ``split`` column when it has test rows (e.g. Celeb-DF's official list),
      else identity-grouped, stratified ``n_splits``-fold CV (mean ± std over folds).
    - ``temporal`` non-empty: a video-level model, fitted on one row per clip of per-clip
      statistics of the frame features (:func:`~deepmetric.learn.temporal.pool_frames`);
      clips with fewer than :data:`~deepmetric.learn.temporal.MIN_FRAMES` frames with a
      face are not scored by it (counted in ``cross_skipped`` for cross-dataset data).
    - With ``cross_X``/``cross_frames``: the pipeline is also fitted on every trainable row
      of the data and scores them (cross-dataset, frame and video level).

    Parameters
    ----------
    pipeline : sklearn estimator
        Cloned before every fit (a projector step gets the groups, see :func:`fit_pipeline`).
    X : numpy.ndarray
        float32 (F, D) frame features.
    frames : pandas.DataFrame
        F rows: ``video_id, group, label`` (+ ``method``, ``split``, ``role``).
    n_splits, random_state
        Folds and their seed (grouped CV only).
    how, k
        Frame → video score aggregation of a frame-level model.
    threshold : float
        Score at or above which an item counts as fake, in every protocol.
    temporal, ddof
        Per-clip statistics of a video-level model, and the ``ddof`` of ``"std"``.
    cross_X, cross_frames : optional
        Frame features and table of the cross-dataset data.
    fit_final : bool
        Also fit the pipeline on all the data (``Evaluation.estimator``), e.g. to save it.

    Returns
    -------
    Evaluation
    """
    temporal = [str(t) for t in temporal]
    X_frames, frames_frames = X, frames
    if temporal:
        X, frames = pool_frames(X, frames, temporal, ddof=ddof)
        few = frames["n_frames"].to_numpy() < MIN_FRAMES  # images: no spread to learn from
        left_out = frames.loc[few, "video_id"].astype(str).tolist()
        X, frames = X[~few], frames[~few].reset_index(drop=True)
    if has_test_split(frames):
        tr, te = split_masks(frames)
        check_two_classes(frames["label"].to_numpy()[tr], "the split column's train videos")
        est = fit_pipeline(pipeline, X[tr], frames[tr])
        fdf, vdf = score_frames(est, X[te], frames[te], how=how, k=k)
        res: dict = {"protocol": "split column",
                     "test": frame_and_video_metrics(fdf["label"], fdf["fake_score"],
                                                     fdf["video_id"], how=how, k=k,
                                                     threshold=threshold),
                     "per_method": per_method_metrics(vdf)}
    else:
        cv = grouped_cv(pipeline, X, frames, n_splits=n_splits, random_state=random_state,
                            how=how, k=k, threshold=threshold)
        mean = {lv: {m: v["mean"] for m, v in ms.items()} for lv, ms in cv.summary.items()}
        std = {lv: {m: v["std"] for m, v in ms.items()} for lv, ms in cv.summary.items()}
        fdf, vdf = cv.frame_scores, cv.video_scores
        res = {"protocol": f"identity-grouped {n_splits}-fold CV (mean over folds)",
               "test": mean, "test_std": std, "folds": cv.folds, "per_method": cv.per_method,
               "pooled": {"frame": binary_metrics(fdf["label"].to_numpy(),
                                                  fdf["fake_score"].to_numpy(),
                                                  threshold=threshold),
                          "video": binary_metrics(vdf["label"].to_numpy(),
                                                  vdf["fake_score"].to_numpy(),
                                                  threshold=threshold)}}
    if temporal:
        res["protocol"] += f"; video-level model on per-clip {temporal} of frame features"
        res["n_left_out_few_frames"] = int(few.sum())
        res["left_out_few_frames"] = left_out
    out = Evaluation(res, fdf, vdf)
    if fit_final or cross_X is not None:
        trainable, _ = role_masks(frames)
        out.estimator = fit_pipeline(pipeline, X[trainable], frames[trainable])
        if temporal:  # the frame-level path for images and clips with one face
            trainable, _ = role_masks(frames_frames)
            out.frame_estimator = fit_pipeline(pipeline, X_frames[trainable],
                                               frames_frames[trainable])
    if cross_X is not None and cross_frames is not None:
        _score_cross(out, cross_X, cross_frames, how=how, k=k, threshold=threshold,
                     temporal=temporal, ddof=ddof)
    if temporal:
        _no_frame_level({k: v for k, v in res.items() if k != "cross"})
    return out


def _score_cross(out: Evaluation, X: np.ndarray, frames: pd.DataFrame, *, how: str, k: int,
                 threshold: float, temporal: list[str], ddof: int) -> None:
    """Score cross-dataset data; a video-level model's images go to its frame-level path."""
    frames = frames.reset_index(drop=True)
    if not temporal:
        fdf, vdf = score_frames(out.estimator, X, frames, how=how, k=k)
        vdf["scored_by"] = "frame"
    else:
        V, videos = pool_frames(X, frames, temporal, ddof=ddof)
        clip = videos["n_frames"].to_numpy() >= MIN_FRAMES
        parts = []
        if clip.any():
            _, v = score_frames(out.estimator, V[clip], videos[clip].drop(columns="n_frames"),
                                how=how, k=k)
            parts.append(v.assign(scored_by="video"))
        # every frame through the frame-level path once: the frame metrics, and the video
        # scores of the items too short for the pooled path
        fdf, vf = score_frames(out.frame_estimator, X, frames, how=how, k=k)
        single = ~vf["video_id"].isin(videos["video_id"][clip])
        if single.any():
            parts.append(vf[single].assign(scored_by="frame"))
        vdf = pd.concat(parts, ignore_index=True)
        out.metrics["cross_scored_by"] = {p: int((vdf["scored_by"] == p).sum())
                                      for p in ("video", "frame")}
    m = {"frame": frame_and_video_metrics(fdf["label"], fdf["fake_score"], fdf["video_id"],
                                          how=how, k=k, threshold=threshold)["frame"],
         "video": binary_metrics(vdf["label"].to_numpy(), vdf["fake_score"].to_numpy(),
                                 threshold=threshold),
         "per_method": per_method_metrics(vdf)}
    out.metrics["cross"] = m
    out.cross_frame_scores, out.cross_video_scores = fdf, vdf


def _no_frame_level(metrics: dict) -> None:
    """Blank the frame-level entries (NaN) of a video-level model's metrics, in place.

    Its rows are whole clips, so the "frame" metrics computed over them would only repeat
    the video ones under a frame-level label.
    """
    for key, value in metrics.items():
        if key == "frame" and isinstance(value, dict):
            metrics[key] = {m: math.nan for m in value}
        elif isinstance(value, dict):
            _no_frame_level(value)
        elif isinstance(value, list):
            for v in value:
                if isinstance(v, dict):
                    _no_frame_level(v)


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
