"""Cross-validation with roles: train-only pseudo-fakes are never scored, test-only never fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from deepmetric.eval.evaluation import cross_validate, role_masks, split_masks


def _table(rng):
    rows, X = [], []
    for g in range(10):
        for kind, label, role in (("real", 0, "both"), ("fake", 1, "both"),
                                  ("sbi", 1, "train")):
            for f in range(4):
                rows.append({"video_id": f"{kind}{g}", "group": f"g{g}", "label": label,
                             "method": kind, "role": role, "frame_index": f})
                X.append(rng.normal(label, 1.0, 3))
    return np.asarray(X, np.float32), pd.DataFrame(rows)


def test_train_only_rows_are_never_tested_and_test_only_never_fitted():
    X, frames = _table(np.random.default_rng(0))
    cv = cross_validate(LogisticRegression(), X, frames, n_splits=5)
    assert not cv.video_scores["video_id"].str.startswith("sbi").any()
    assert len(cv.video_scores) == 20 and "sbi" not in cv.per_method
    # a fold's training set held the pseudo-fakes of its groups only (groups never cross)
    frames2 = frames.copy()
    frames2.loc[frames2["method"] == "fake", "role"] = "test"
    tr, te = role_masks(frames2)
    assert not tr[frames2["method"] == "fake"].any() and not te[frames2["method"] == "sbi"].any()
    cv2 = cross_validate(LogisticRegression(), X, frames2, n_splits=5)
    assert set(cv2.video_scores["method"]) == {"real", "fake"}


def test_split_column_respects_roles_and_bad_roles_fail():
    X, frames = _table(np.random.default_rng(1))
    frames["split"] = np.where(frames["group"].isin(["g0", "g1", "g2"]), "test", "train")
    tr, te = split_masks(frames)
    assert not (te & (frames["role"] == "train")).any()
    assert (tr & (frames["role"] == "train")).sum() == 7 * 4
    frames.loc[0, "role"] = "eval"
    with pytest.raises(ValueError, match="unknown role"):
        role_masks(frames)
