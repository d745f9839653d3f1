"""The study's ``source_paired`` rows on small arrays: the pairing reaches the projector
from the frames' ``pair_id``, and the rows carry group-bootstrap intervals against the
no-projector baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import generalization as g


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n_pairs: int, frames: int, seed: int, tag: str, pairs: bool) -> g.Data:
    """``n_pairs`` originals, each with one fake made from it, in groups of two pairs."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_pairs):
        for label, vid in ((0, f"{tag}real/{k}"), (1, f"{tag}fake/{k}")):
            for f in range(frames):
                rows.append({"video_id": vid, "group": f"{tag}g{k // 2}", "label": label,
                             "frame_index": f, **({"pair_id": f"{tag}real/{k}"} if pairs
                                                  else {})})
    fr = pd.DataFrame(rows)
    y = fr["label"].to_numpy()
    X = {b: (rng.normal(size=(len(y), 4)) + y[:, None]).astype(np.float32)
         for b in g.DEEPMETRIC}
    return g.Data(X, fr)


def test_source_paired_rows_train_on_the_pairs_and_carry_intervals():
    data = {"ffpp": _data(20, 3, 0, "ff", pairs=True),
            "dfdc": _data(30, 1, 1, "dd", pairs=False)}
    out = g.rows(data, {"source_paired"})
    assert [r["group"] for r in out] == ["source_paired"] * 4
    assert not [r for r in out if "error" in r], [r.get("error") for r in out]
    names = [r["name"] for r in out]
    assert any("source-paired" in n and not n.startswith("paired:") for n in names)
    for r in out:
        if r["name"].startswith("paired:"):
            lo, hi = r["diff_ci"]
            assert lo <= r["diff_vs_deepmetric"] <= hi and r["n_groups"] == 15
        else:
            assert 0 <= r["dfdc_image_auc"] <= 1 and r["ffpp_video_auc"] > 0.5


def test_without_pair_ids_the_source_paired_row_says_what_is_missing():
    data = {"ffpp": _data(20, 3, 0, "ff", pairs=False),
            "dfdc": _data(30, 1, 1, "dd", pairs=False)}
    out = {r["name"]: r for r in g.rows(data, {"source_paired"})}
    errors = [r["error"] for n, r in out.items() if "source-paired" in n]
    assert len(errors) == 2 and all("pair_id" in e for e in errors)
    assert not [r for n, r in out.items() if "source-paired" not in n and "error" in r]
