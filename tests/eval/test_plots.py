"""plot_roc and plot_embedding_scatter write real, decodable PNGs."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from deepmetric.eval.plots import plot_embedding_scatter, plot_roc, roc_figure


def _png_ok(path, min_bytes: int = 10_000) -> np.ndarray:
    assert path.exists() and path.stat().st_size > min_bytes
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    assert img[..., :3].std() > 0.05  # not a blank canvas
    return img


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(90) % 2
    before = rng.normal(size=(90, 32)) + 0.3 * y[:, None]
    after = rng.normal(size=(90, 8)) + 2.0 * y[:, None]
    return before, after, y


def test_plot_roc(tmp_path, data) -> None:
    before, after, y = data
    out = plot_roc({"raw": (y, before[:, 0]), "projected": (y, after[:, 0])},
                   tmp_path / "sub" / "roc.png")
    assert out == tmp_path / "sub" / "roc.png"
    _png_ok(out)
    with pytest.raises(ValueError, match="single class"):
        plot_roc({"x": (np.zeros(5), np.arange(5.0))}, tmp_path / "bad.png")


def test_roc_figure_says_what_each_curve_is(data) -> None:
    """Issue #32: the title names the data set and protocol, the legend each curve's level
    and how its AUC was computed (pooled, not the mean over folds)."""
    from sklearn.metrics import roc_auc_score

    before, after, y = data
    fig = roc_figure({"p, video level": (y, after[:, 0]), "p, frame level": (y, before[:, 0])},
                     title="ffpp: ffpp-c23, in-dataset: pooled", auc_label="pooled AUC")
    ax = fig.axes[0]
    assert ax.get_title() == "ffpp: ffpp-c23, in-dataset: pooled"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"p, video level (pooled AUC = {roc_auc_score(y, after[:, 0]):.3f})",
                      f"p, frame level (pooled AUC = {roc_auc_score(y, before[:, 0]):.3f})",
                      "chance"]
    assert len(ax.get_lines()) == 3


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_plot_embedding_scatter(tmp_path, data, method: str) -> None:
    before, after, y = data
    # one OpenMP thread: Barnes-Hut t-SNE spin-waits badly on a shared, loaded CPU
    with threadpool_limits(1, user_api="openmp"):
        out = plot_embedding_scatter(before, after, y, tmp_path / f"scatter_{method}.png",
                                     method=method, max_points=60)
    img = _png_ok(out)
    assert img.shape[1] > 1.5 * img.shape[0]  # two side-by-side panels


def test_plot_embedding_scatter_errors(tmp_path, data) -> None:
    before, after, y = data
    with pytest.raises(ValueError, match="same number of rows"):
        plot_embedding_scatter(before, after[:10], y, tmp_path / "x.png")
    with pytest.raises(ValueError, match="method"):
        plot_embedding_scatter(before, after, y, tmp_path / "x.png", method="umap")
