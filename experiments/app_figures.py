"""What the web app (:mod:`experiments.app`) shows of one file: its :class:`Analysis`, the
per-frame score plot and the gallery of explained frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Analysis", "score_figure", "gallery_items"]


@dataclass
class Analysis:
    """What :meth:`DetectorApp.analyze` found out about one file.

    ``ok`` is False when the file could not be scored; ``message`` (Markdown) then says why
    (too large, unsupported, unreadable, no face). ``frames`` are the explained frames
    (see :func:`deepmetric.explain.explain_arrays`).
    """

    ok: bool
    message: str
    name: str = ""
    sha256: str | None = None
    score: float | None = None
    verdict: str | None = None
    n_frames: int = 0
    n_faces: int = 0
    seconds: float = 0.0
    explain_seconds: float = 0.0
    frame_scores: Any = None          # pandas.DataFrame: frame_index, fake_score, face_prob
    frames: list = field(default_factory=list)
    explanation: dict = field(default_factory=dict)
    error: str | None = None          # "too_large", "unsupported", "unreadable", "no_face",
                                      # "too_few_frames"


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
