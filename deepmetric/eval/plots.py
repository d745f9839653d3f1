"""Figures: ROC curves and the "before / after triplet training" embedding scatter.

Figures are drawn on ``matplotlib.figure.Figure`` objects and saved through the Agg canvas, so
no display is needed and pyplot's global backend/state is never touched. matplotlib is
imported lazily.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deepmetric.storage import atomic_file

__all__ = ["plot_roc", "roc_figure", "plot_embedding_scatter", "plot_projection_before_after"]

_COLORS = {0: "#1f77b4", 1: "#d62728"}  # real: blue, fake: red
_NAMES = {0: "real", 1: "fake"}


def _new_figure(figsize: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path, dpi: int) -> Path:
    """Save a figure atomically (whole or not at all; an error names the file), in the
    format its extension names."""
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".").lower() or "png")
    return path


def roc_figure(
    curves: Mapping[str, tuple[Any, Any]],
    *,
    title: str = "ROC",
    auc_label: str = "AUC",
) -> Any:
    """The figure :func:`plot_roc` saves (a ``matplotlib.figure.Figure``; see there)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    if not curves:
        raise ValueError("plot_roc: no curves given")
    fig = _new_figure((5.6, 5.6))
    ax = fig.add_subplot()
    for name, (y, s, *style) in curves.items():
        y = np.asarray(y)
        s = np.asarray(s, dtype=np.float64)
        if np.unique(y).size < 2:
            raise ValueError(f"plot_roc: curve {name!r} has a single class; ROC undefined")
        fpr, tpr, _ = roc_curve(y, s, pos_label=1)
        ax.plot(fpr, tpr, **{"lw": 1.8, **(style[0] if style else {})},
                label=f"{name} ({auc_label} = {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="grey", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate (real called fake)",
           ylabel="True positive rate (fake detected)")
    ax.set_title(title, fontsize="medium", wrap=True)
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_roc(
    curves: Mapping[str, tuple[Any, Any]],
    path: str | Path,
    *,
    title: str = "ROC",
    auc_label: str = "AUC",
    dpi: int = 120,
) -> Path:
    """ROC curves of several scorers on one axis, AUC in the legend.

    Parameters
    ----------
    curves : mapping name -> (y_true, scores) or (y_true, scores, style)
        ``y_true`` array-like of {0, 1} (1 = fake), shape (n,); ``scores`` float, shape (n,);
        ``style`` a dict of matplotlib line options (``color``, ``ls``, ...). Each needs
        both classes. Name each curve with its level (frame, video, image).
    path : str or Path
        Output image (format from the suffix, e.g. ``.png``); parent folders are created.
    title : str, default="ROC"
        Say what the curves are of: the data set and the protocol.
    auc_label : str, default="AUC"
        How the legend names each curve's AUC, e.g. ``"pooled AUC"`` for out-of-fold scores
        pooled over folds (which differs from the mean of the folds' AUCs).
    dpi : int, default=120

    Returns
    -------
    Path
        ``path``.
    """
    return _save(roc_figure(curves, title=title, auc_label=auc_label), path, dpi)


def _project_2d(X: np.ndarray, method: str, random_state: int) -> np.ndarray:
    if X.shape[1] <= 2:
        return np.pad(X, ((0, 0), (0, 2 - X.shape[1])))
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=random_state).fit_transform(X)
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (X.shape[0] - 1) / 3)))
    return TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=random_state
    ).fit_transform(X)


def plot_embedding_scatter(
    before: Any,
    after: Any,
    y: Any,
    path: str | Path,
    *,
    method: str = "pca",
    max_points: int = 5000,
    random_state: int = 0,
    titles: tuple[str, str] | None = None,
    dpi: int = 120,
) -> Path:
    """Two panels: 2-D view of the embeddings before and after triplet training.

    Parameters
    ----------
    before : array-like of float, shape (N, D)
        E.g. FaceNet 512-d embeddings.
    after : array-like of float, shape (N, d)
        The same rows after :class:`deepmetric.learn.projector.TripletProjector`.
    y : array-like of {0, 1}, shape (N,)
        0 = real (blue), 1 = fake (red).
    path : str or Path
        Output image; parent folders are created.
    method : {"pca", "tsne"}, default="pca"
        2-D reduction, fitted separately on each panel.
    max_points : int, default=5000
        Rows beyond this are subsampled (same rows in both panels) to keep t-SNE tractable.
    random_state : int, default=0
        Subsampling, PCA solver and t-SNE seed.
    titles : (str, str), optional
        Panel titles; default ``"before triplet training (D-d)"`` / ``"after ... (d-d)"``.
    dpi : int, default=120

    Returns
    -------
    Path
        ``path``.
    """
    if method not in ("pca", "tsne"):
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    y = np.asarray(y)
    if before.ndim != 2 or after.ndim != 2 or not (before.shape[0] == after.shape[0] == y.size):
        raise ValueError(
            f"before {before.shape}, after {after.shape} and y {y.shape} must have the same "
            "number of rows (2-D, 2-D, 1-D)"
        )
    if y.size < 3:
        raise ValueError(f"need at least 3 rows to plot, got {y.size}")
    if not (np.isfinite(before).all() and np.isfinite(after).all()):
        raise ValueError("before/after contain NaN or infinite values")
    if y.size > max_points:
        rng = np.random.default_rng(random_state)
        keep = np.sort(rng.choice(y.size, max_points, replace=False))
        before, after, y = before[keep], after[keep], y[keep]
    if titles is None:
        titles = (
            f"before triplet training ({before.shape[1]}-d)",
            f"after triplet training ({after.shape[1]}-d)",
        )
    fig = _new_figure((10.0, 4.8))
    axes = fig.subplots(1, 2)
    label = "PC" if method == "pca" else "t-SNE "
    for ax, X, title in zip(axes, (before, after), titles):
        xy = _project_2d(X, method, random_state)
        for cls in np.unique(y):
            sel = y == cls
            key = int(cls) if cls in (0, 1) else cls
            ax.scatter(
                xy[sel, 0], xy[sel, 1], s=6, alpha=0.6, linewidths=0,
                color=_COLORS.get(key), label=f"{_NAMES.get(key, cls)} (n={int(sel.sum())})",
            )
        ax.set(title=title, xlabel=f"{label}1", ylabel=f"{label}2")
        ax.legend(loc="best", fontsize="small", markerscale=2)
    return _save(fig, path, dpi)


def plot_projection_before_after(projector: Any, X: np.ndarray, frames: Any,
                                 path: str | Path, *, test_size: float = 0.25,
                                 random_state: int = 0) -> Path:
    """The poster's figure: test frames before and after the projector, on a grouped split.

    The projector is fitted on the training videos of one identity-grouped split (its
    identities never reach the plotted test frames).

    Parameters
    ----------
    projector : sklearn transformer or Pipeline of transformers
        E.g. ``TripletProjector()`` or ``FaceNetFineTuner()`` (then ``X`` holds uint8
        crops, and "before" is the untrained network's output), or a pipeline whose steps
        take ``groups`` (see :func:`~deepmetric.eval.evaluation.fit_pipeline`); cloned
        before fitting.
    X : numpy.ndarray
        (F, D) frame features (float32) or flattened crops (uint8).
    frames : pandas.DataFrame
        F rows with ``video_id, group, label``.
    path : path-like
        The PNG to write.
    test_size, random_state
        Share of the videos held out, and the split's seed.

    Returns
    -------
    pathlib.Path
    """
    from sklearn.base import clone

    from deepmetric.eval.evaluation import fit_pipeline
    from deepmetric.model_selection import grouped_train_test_split
    from deepmetric.learn.temporal import video_table

    videos = video_table(frames)
    tr_v, _ = grouped_train_test_split(videos["label"].to_numpy(), videos["group"].to_numpy(),
                                       test_size=test_size, random_state=random_state)
    tr = frames["video_id"].isin(videos["video_id"].iloc[tr_v]).to_numpy()
    te = ~tr
    fitted = fit_pipeline(projector, X[tr], frames[tr])
    before = X[te]
    if X.dtype == np.uint8:  # face crops (fine-tuning): "before" is the untrained network
        last = projector.steps[-1][1] if hasattr(projector, "steps") else projector
        untrained = clone(last).set_params(epochs=0)
        before = untrained.fit(X[tr], frames["label"].to_numpy()[tr]).transform(X[te])
    return plot_embedding_scatter(before, fitted.transform(X[te]),
                                  frames["label"].to_numpy()[te], path)
