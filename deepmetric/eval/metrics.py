"""Binary detection metrics at frame and video level, and their summary over folds.

Convention: label 1 = fake (positive class), 0 = real; larger score = more likely fake; a
sample is predicted fake when ``score >= threshold`` (the convention of
``sklearn.metrics.roc_curve``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["binary_metrics", "frame_and_video_metrics", "summarize_folds", "METRIC_KEYS"]

#: keys of the dict returned by :func:`binary_metrics`, in order
METRIC_KEYS = (
    "auc",
    "ap",
    "eer",
    "eer_threshold",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "accuracy_eer",
    "precision_eer",
    "recall_eer",
    "f1_eer",
    "n",
    "n_real",
    "n_fake",
)


def _check_binary(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"y_true {y.shape} and scores {s.shape} must be 1-D of equal length")
    if y.size == 0:
        raise ValueError("no samples: y_true is empty")
    if y.dtype == bool:
        y = y.astype(np.int64)
    uniq = np.unique(y)
    if not np.isin(uniq, [0, 1]).all():
        raise ValueError(f"y_true must hold 0 (real) / 1 (fake), found {uniq[:10].tolist()}")
    if np.isnan(s).any():
        rows = np.flatnonzero(np.isnan(s))
        raise ValueError(f"scores has {rows.size} NaN value(s), rows {rows[:5].tolist()}")
    return y.astype(np.int64), s


def _threshold_metrics(y: np.ndarray, s: np.ndarray, thr: float) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    pred = (s >= thr).astype(np.int64)
    kw = {"labels": [0, 1], "pos_label": 1, "zero_division": 0}
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, **kw)),
        "recall": float(recall_score(y, pred, **kw)),
        "f1": float(f1_score(y, pred, **kw)),
    }


def _eer(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, s, pos_label=1, drop_intermediate=False)
    fnr = 1.0 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    t = float(thr[i])
    if not math.isfinite(t):  # roc_curve's first threshold is +inf: "predict nothing fake"
        t = float(np.nextafter(s.max(), np.inf))
    return float((fpr[i] + fnr[i]) / 2), t


def binary_metrics(y_true: Any, scores: Any, *, threshold: float = 0.5) -> dict[str, float]:
    """Threshold-free and thresholded metrics of a fake-vs-real score.

    Parameters
    ----------
    y_true : array-like of {0, 1} or bool, shape (n,)
        1 = fake.
    scores : array-like of float, shape (n,)
        Larger = more likely fake. NaN raises ``ValueError``.
    threshold : float, default=0.5
        Predict fake when ``score >= threshold``.

    Returns
    -------
    dict[str, float]
        ``auc`` (ROC AUC), ``ap`` (average precision, fake = positive), ``eer`` (equal error
        rate: ``(FPR + FNR) / 2`` at the ROC point where ``|FNR - FPR|`` is smallest),
        ``eer_threshold`` (the score threshold of that point; when it is roc_curve's
        ``+inf``, the next float above the largest score), ``accuracy``, ``precision``,
        ``recall``, ``f1`` at ``threshold``, ``accuracy_eer``, ``precision_eer``,
        ``recall_eer``, ``f1_eer`` at ``eer_threshold``, and the counts ``n``, ``n_real``,
        ``n_fake`` (ints). Keys in :data:`METRIC_KEYS` order.

        With a single class present, ``auc``, ``ap``, ``eer``, ``eer_threshold`` and the
        ``*_eer`` metrics are NaN and a ``UserWarning`` is issued; the metrics at
        ``threshold`` are still computed (precision/recall/F1 use ``zero_division=0``).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, s = _check_binary(y_true, scores)
    n_fake = int(y.sum())
    n_real = int(y.size - n_fake)
    out: dict[str, float] = dict.fromkeys(METRIC_KEYS, math.nan)
    if n_fake and n_real:
        out["auc"] = float(roc_auc_score(y, s))
        out["ap"] = float(average_precision_score(y, s, pos_label=1))
        out["eer"], out["eer_threshold"] = _eer(y, s)
        at_eer = _threshold_metrics(y, s, out["eer_threshold"])
        out.update({f"{k}_eer": v for k, v in at_eer.items()})
    else:
        warnings.warn(
            f"binary_metrics: only one class present (n_real={n_real}, n_fake={n_fake}); "
            "auc, ap, eer and the *_eer metrics are NaN",
            UserWarning,
            stacklevel=2,
        )
    out.update(_threshold_metrics(y, s, float(threshold)))
    out["n"], out["n_real"], out["n_fake"] = int(y.size), n_real, n_fake
    return out


def frame_and_video_metrics(
    y_frame: Any,
    s_frame: Any,
    video_ids: Any,
    *,
    how: str = "mean",
    k: int = 5,
    threshold: float = 0.5,
) -> dict[str, dict[str, float]]:
    """Metrics of frame scores and of the video scores aggregated from them.

    Parameters
    ----------
    y_frame : array-like of {0, 1}, shape (n_frames,)
        Label of each frame; all frames of a video must share it.
    s_frame : array-like of float, shape (n_frames,)
    video_ids : array-like, shape (n_frames,)
    how : {"mean", "median", "topk"}, default="mean"
        Aggregation, see :func:`deepmetric.eval.scoring.aggregate_scores`.
    k : int, default=5
        For ``how="topk"``.
    threshold : float, default=0.5

    Returns
    -------
    dict
        ``{"frame": binary_metrics(...), "video": binary_metrics(...)}``.

    Raises
    ------
    ValueError
        If a video's frames carry different labels (naming the first such videos).
    """
    import pandas as pd

    from deepmetric.eval.scoring import aggregate_scores

    y, s = _check_binary(y_frame, s_frame)
    v = np.asarray(video_ids)
    if v.shape != y.shape:
        raise ValueError(f"video_ids {v.shape} must match y_frame {y.shape}")
    video = aggregate_scores(s, v, how=how, k=k)  # type: ignore[arg-type]
    labels = pd.Series(y).groupby(v, sort=False)
    mixed = labels.nunique()
    mixed = mixed[mixed > 1]
    if len(mixed):
        raise ValueError(
            f"{len(mixed)} video(s) have frames with both labels: {mixed.index[:5].tolist()}"
        )
    y_video = labels.first().reindex(video.index).to_numpy()
    return {
        "frame": binary_metrics(y, s, threshold=threshold),
        "video": binary_metrics(y_video, video["fake_score"].to_numpy(), threshold=threshold),
    }


def summarize_folds(
    results: Sequence[Mapping[str, Any]], *, ddof: int = 0
) -> dict[str, Any]:
    """Mean and standard deviation of each metric over folds.

    Parameters
    ----------
    results : sequence of dict
        One dict per fold, e.g. from :func:`binary_metrics`; nested dicts (as from
        :func:`frame_and_video_metrics`) are summarised recursively. Non-numeric values are
        skipped; a key missing from a fold counts as NaN there.
    ddof : int, default=0
        Delta degrees of freedom of the standard deviation (0: population std, as
        ``numpy.std`` and scikit-learn's ``cv_results_`` use).

    Returns
    -------
    dict
        ``{metric: {"mean": float, "std": float, "n": int}}`` (nested like the input), where
        NaN fold values are ignored and ``n`` counts the finite ones (mean/std NaN if 0).
    """
    if len(results) == 0:
        raise ValueError("summarize_folds: no fold results given")
    keys: list[str] = []
    for r in results:
        keys.extend(k for k in r if k not in keys)
    out: dict[str, Any] = {}
    for key in keys:
        vals = [r.get(key, math.nan) for r in results]
        if any(isinstance(v, Mapping) for v in vals):
            sub = [v for v in vals if isinstance(v, Mapping)]
            out[key] = summarize_folds(sub, ddof=ddof)
            continue
        num: list[float] = []
        for v in vals:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)):
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    num.append(math.nan)
                    continue
                break
            num.append(float(v))
        else:
            arr = np.asarray(num, dtype=np.float64)
            fin = arr[np.isfinite(arr)]
            n = int(fin.size)
            out[key] = {
                "mean": float(fin.mean()) if n else math.nan,
                "std": float(fin.std(ddof=ddof)) if n > ddof else math.nan,
                "n": n,
            }
    return out
