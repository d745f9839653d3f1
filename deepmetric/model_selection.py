"""Identity-grouped, leak-free splits on video-level arrays.

All functions work on one row per *video* (clip): ``y`` is the clip label (0 real, 1 fake)
and ``groups`` the unit that must never straddle train and test (the source identity, or the
clip itself). Frames are mapped afterwards with :func:`frame_indices`, so the frames of a clip
always follow it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = [
    "grouped_kfold",
    "grouped_train_test_split",
    "split_from_column",
    "frame_indices",
    "check_group_disjoint",
    "check_two_classes",
]

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "test": "test",
    "testing": "test",
    "val": "val",
    "valid": "val",
    "validation": "val",
}


def _check_y_groups(y: Any, groups: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    groups = np.asarray(groups)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per video), got shape {y.shape}")
    if groups.shape != y.shape:
        raise ValueError(
            f"groups must have the shape of y {y.shape}, got {groups.shape}"
        )
    if y.size == 0:
        raise ValueError("y is empty: nothing to split")
    if groups.dtype.kind == "f" and np.isnan(groups).any():
        rows = np.flatnonzero(np.isnan(groups))[:5].tolist()
        raise ValueError(f"groups contains NaN (rows {rows})")
    if groups.dtype == object and any(g is None for g in groups):
        rows = [i for i, g in enumerate(groups) if g is None][:5]
        raise ValueError(f"groups contains None (rows {rows})")
    return y, groups


def grouped_kfold(
    y: Any, groups: Any, n_splits: int = 5, random_state: int | None = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stratified, grouped K-fold (``StratifiedGroupKFold(shuffle=True)``).

    Parameters
    ----------
    y : array-like, shape (n_videos,)
        Labels (stratification target).
    groups : array-like, shape (n_videos,)
        Group of each video; a group lies entirely in one test fold.
    n_splits : int, default=5
    random_state : int or None, default=0

    Yields
    ------
    train_idx, test_idx : ndarray of int64
        Indices into the video-level arrays, sorted.

    Raises
    ------
    ValueError
        If ``n_splits < 2`` or there are fewer distinct groups than ``n_splits``.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y, groups = _check_y_groups(y, groups)
    n_splits = int(n_splits)
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    n_groups = np.unique(groups).size
    if n_groups < n_splits:
        raise ValueError(
            f"cannot make {n_splits} grouped folds from {n_groups} distinct group(s): "
            f"need at least as many groups as folds"
        )
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    for train, test in cv.split(np.zeros((y.size, 1)), y, groups):
        yield np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)


def grouped_train_test_split(
    y: Any, groups: Any, test_size: float = 0.2, random_state: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One stratified, grouped train/test split.

    Implemented as one fold of ``StratifiedGroupKFold(n_splits=k, shuffle=True)`` with
    ``k = round(1 / test_size)`` (the test fold), or, for ``test_size > 0.5``, with ``k =
    round(1 / (1 - test_size))`` (the train fold). The realised test fraction is therefore
    about ``1 / k`` of the *groups*, not exactly ``test_size`` of the rows.

    Parameters
    ----------
    y : array-like, shape (n_videos,)
    groups : array-like, shape (n_videos,)
    test_size : float in (0, 1), default=0.2
    random_state : int or None, default=0

    Returns
    -------
    train_idx, test_idx : ndarray of int64, sorted

    Raises
    ------
    ValueError
        If ``test_size`` is outside (0, 1) or there are too few groups.
    """
    if not 0 < float(test_size) < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size!r}")
    test_size = float(test_size)
    swap = test_size > 0.5
    k = max(2, int(round(1 / (1 - test_size if swap else test_size))))
    train, test = next(grouped_kfold(y, groups, n_splits=k, random_state=random_state))
    return (test, train) if swap else (train, test)


def split_from_column(
    split_values: Any, groups: Any = None
) -> dict[str, np.ndarray]:
    """Indices of an explicit ``split`` column.

    Parameters
    ----------
    split_values : array-like of str, shape (n_videos,)
        ``"train"``, ``"test"`` or ``"val"`` (case and surrounding blanks ignored; also
        ``"training"``, ``"testing"``, ``"valid"``, ``"validation"``).
    groups : array-like, shape (n_videos,), optional
        When given, a group found in two different splits raises ``ValueError``.

    Returns
    -------
    dict with keys ``"train"``, ``"val"``, ``"test"`` → ndarray of int64 (possibly empty)

    Raises
    ------
    ValueError
        Naming the rows with a missing or unknown value, or the leaking groups.
    """
    values = np.asarray(split_values, dtype=object)
    if values.ndim != 1:
        raise ValueError(f"split_values must be 1-D, got shape {values.shape}")
    norm = np.empty(values.shape, dtype=object)
    bad: list[tuple[int, Any]] = []
    for i, v in enumerate(values):
        key = _SPLIT_ALIASES.get(str(v).strip().lower()) if isinstance(v, str) else None
        if key is None:
            bad.append((i, v))
        norm[i] = key
    if bad:
        shown = ", ".join(f"row {i}: {v!r}" for i, v in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ValueError(
            f"split column: {len(bad)} value(s) not in train/val/test: {shown}{more}"
        )
    out = {k: np.flatnonzero(norm == k).astype(np.int64) for k in ("train", "val", "test")}
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != values.shape:
            raise ValueError(
                f"groups must have the shape of split_values {values.shape}, "
                f"got {groups.shape}"
            )
        check_group_disjoint(groups, out["train"], out["val"], out["test"])
    return out


def check_two_classes(y: Any, where: str) -> None:
    """Refuse training labels with fewer than two classes, naming where they come from.

    Parameters
    ----------
    y : array-like
        0 (real) / 1 (fake) labels of the rows a model is about to be fitted on.
    where : str
        What the rows are, for the message (a manifest, a fold).

    Raises
    ------
    ValueError
        ``y`` is empty or has one class; the message names ``where`` and the class.
    """
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    if classes.size >= 2:
        return
    names = {0: "real (0)", 1: "fake (1)"}
    have = "no rows" if not classes.size else \
        f"only {names.get(int(classes[0]), repr(classes[0]))}: all {int(counts[0])} row(s)"
    raise ValueError(f"{where}: training needs both real (0) and fake (1) items; it has "
                     f"{have} (add the other class, or self_blend.copies for pseudo-fakes)")


def check_group_disjoint(groups: Any, *index_sets: Sequence[int]) -> None:
    """Raise ``ValueError`` if any group appears in more than one of ``index_sets``.

    Parameters
    ----------
    groups : array-like, shape (n,)
    *index_sets : array-like of int
        Indices into ``groups`` (e.g. train, val, test).
    """
    groups = np.asarray(groups)
    seen: dict[Any, int] = {}
    for k, idx in enumerate(index_sets):
        for g in np.unique(groups[np.asarray(idx, dtype=np.int64)]):
            if seen.setdefault(g, k) != k:
                shown = g.item() if isinstance(g, np.generic) else g
                raise ValueError(
                    f"group {shown!r} appears in index sets {seen[g]} and {k}: the split leaks"
                )


def frame_indices(
    frame_video_ids: Any, video_ids: Any, video_idx: Any
) -> np.ndarray:
    """Map video-level indices to the indices of those videos' frames.

    Parameters
    ----------
    frame_video_ids : array-like, shape (n_frames,)
        Video id of every frame.
    video_ids : array-like, shape (n_videos,)
        Video id of every row of the video-level arrays the split was made on.
    video_idx : array-like of int
        Selected video-level indices (e.g. ``train_idx``).

    Returns
    -------
    ndarray of int64, sorted
        Frame rows whose video is among ``video_ids[video_idx]``.
    """
    frame_video_ids = np.asarray(frame_video_ids)
    video_ids = np.asarray(video_ids)
    chosen = video_ids[np.asarray(video_idx, dtype=np.int64)]
    return np.flatnonzero(np.isin(frame_video_ids, chosen)).astype(np.int64)
