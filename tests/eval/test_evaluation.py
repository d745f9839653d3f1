"""Cross-validation with roles: train-only pseudo-fakes are never scored, test-only never fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from deepmetric.eval.evaluation import grouped_cv, role_masks, split_masks


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
    cv = grouped_cv(LogisticRegression(), X, frames, n_splits=5)
    assert not cv.video_scores["video_id"].str.startswith("sbi").any()
    assert len(cv.video_scores) == 20 and "sbi" not in cv.per_method
    # a fold's training set held the pseudo-fakes of its groups only (groups never cross)
    frames2 = frames.copy()
    frames2.loc[frames2["method"] == "fake", "role"] = "test"
    tr, te = role_masks(frames2)
    assert not tr[frames2["method"] == "fake"].any() and not te[frames2["method"] == "sbi"].any()
    cv2 = grouped_cv(LogisticRegression(), X, frames2, n_splits=5)
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


@pytest.mark.parametrize("split_column", [False, True])
def test_threshold_reaches_every_protocol(split_column):
    """Issue #19: under CV, accuracy/F1 used to stay at threshold 0.5 whatever was asked."""
    from deepmetric.eval.evaluation import evaluate

    X, frames = _table(np.random.default_rng(2))
    if split_column:
        frames["split"] = np.where(frames["group"].isin(["g0", "g1", "g2"]), "test", "train")
    at = {t: evaluate(LogisticRegression(), X, frames, n_splits=5, threshold=t).metrics
          for t in (0.5, 0.99)}
    for level in ("frame", "video"):
        assert at[0.99]["test"][level]["recall"] < at[0.5]["test"][level]["recall"]
        assert at[0.99]["test"][level]["accuracy"] != at[0.5]["test"][level]["accuracy"]
        assert at[0.99]["test"][level]["auc"] == at[0.5]["test"][level]["auc"]
    assert at[0.5]["protocol"] == ("split column" if split_column
                                   else "identity-grouped 5-fold CV (mean over folds)")


def test_evaluate_scores_cross_dataset_data_and_fits_a_final_model():
    from deepmetric.eval.evaluation import evaluate

    X, frames = _table(np.random.default_rng(3))
    eX, eframes = _table(np.random.default_rng(4))
    ev = evaluate(LogisticRegression(), X, frames, cross_X=eX, cross_frames=eframes,
                  threshold=0.3)
    assert ev.estimator is not None and ev.metrics["cross"]["video"]["auc"] > 0.9
    assert len(ev.cross_video_scores) == eframes["video_id"].nunique()
    # a video-level model: clips of 4 frames go through the pooled path; images (one frame
    # per item) through the same pipeline fitted on frames, fitted in the same call
    one = eframes.groupby("video_id").head(1).index.to_numpy()
    single = eframes.loc[one].assign(video_id=lambda d: d["video_id"] + "-image")
    mixed_X = np.concatenate([eX, eX[one]])
    mixed = pd.concat([eframes, single], ignore_index=True)
    video = evaluate(LogisticRegression(), X, frames, temporal=["std"], cross_X=mixed_X,
                     cross_frames=mixed)
    n_clips = eframes["video_id"].nunique()
    assert video.metrics["cross_scored_by"] == {"video": n_clips, "frame": len(one)}
    vs = video.cross_video_scores
    assert set(vs.loc[vs["video_id"].str.endswith("-image"), "scored_by"]) == {"frame"}
    assert video.metrics["cross"]["video"]["n"] == n_clips + len(one)
    assert video.metrics["cross"]["frame"]["auc"] > 0.8  # the frame path is a real model
    assert all(np.isnan(v) for v in video.metrics["test"]["frame"].values())
    # training items with one frame are left out of the video-level path, and counted
    train = pd.concat([frames, frames.groupby("video_id").head(1).assign(
        video_id=lambda d: d["video_id"] + "-image")], ignore_index=True)
    Xtr = np.concatenate([X, X[frames.groupby("video_id").head(1).index.to_numpy()]])
    ev = evaluate(LogisticRegression(), Xtr, train, temporal=["std"], fit_final=True)
    assert ev.metrics["n_left_out_few_frames"] == frames["video_id"].nunique()
    # ... and named (issue #33): not reported as scored videos without a word
    assert sorted(ev.metrics["left_out_few_frames"]) == sorted(
        train.loc[train["video_id"].str.endswith("-image"), "video_id"])
    assert not ev.video_scores["video_id"].str.endswith("-image").any()
    assert ev.frame_estimator is not None
