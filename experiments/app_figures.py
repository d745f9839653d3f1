"""What the web app (:mod:`experiments.app`) draws: the per-frame score plot and the
gallery of explained frames."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from experiments.app import Analysis

__all__ = ["score_figure", "gallery_items"]


def score_figure(a: Analysis, threshold: float) -> Any:
    """The per-frame P(fake) plot of an analysis (a matplotlib Figure)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 2.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    df = a.frame_scores
    x, y = df["frame_index"].to_numpy(), df["fake_score"].to_numpy()
    ax.plot(x, y, "o-" if len(x) > 1 else "o", color="#444", ms=4, lw=1)
    shown = {f["frame_index"] for f in a.frames}
    sel = np.array([i in shown for i in x])
    if sel.any():
        ax.plot(x[sel], y[sel], "o", color="#d62728", ms=9, mfc="none", mew=2)
    ax.axhline(threshold, color="#1f77b4", ls="--", lw=1)
    ax.axhline(a.score, color="#d62728" if a.verdict == "fake" else "#2ca02c", lw=1.5)
    ax.set_ylim(-0.03, 1.03)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(x) == 1:
        ax.set_xlim(x[0] - 1, x[0] + 1)
    ax.set_xlabel("frame")
    ax.set_ylabel("P(fake)")
    ax.set_title("P(fake) per frame · line: video score · dashed: threshold · "
                 "circled: explained", fontsize=8)
    return fig


def gallery_items(a: Analysis) -> list:
    """``(image, caption)`` per explained frame: its crop beside its heat-map overlay."""
    out = []
    for f in a.frames:
        pair = np.concatenate([f["crop"], np.full((160, 4, 3), 255, np.uint8), f["overlay"]],
                              axis=1)
        out.append((pair, f"frame {f['frame_index']} · P(fake) {f['score']:.2f}"))
    return out
