"""InnerCVSelector: the choice is made by inner grouped CV of the training rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from deepmetric.eval.evaluation import evaluate
from deepmetric.eval.selection import InnerCVSelector


def _data(n_videos: int = 60, frames: int = 4, seed: int = 0):
    """Columns 0-3 carry the label, 4-7 are noise; 2 videos per identity group."""
    rng = np.random.default_rng(seed)
    vid = np.repeat(np.arange(n_videos), frames)
    y = (np.arange(n_videos) % 2)[vid]
    X = rng.normal(size=(len(vid), 8))
    X[:, :4] += 1.2 * y[:, None]
    frames_df = pd.DataFrame({"video_id": vid.astype(str), "group": (vid // 2).astype(str),
                              "label": y})
    return X.astype(np.float32), frames_df


def _candidates():
    def cols(c):
        return make_pipeline(ColumnTransformer([("keep", "passthrough", c)]),
                             LogisticRegression())
    return {"noise": cols([4, 5, 6, 7]), "signal": cols([0, 1, 2, 3])}


def test_picks_the_informative_candidate_and_refits_it() -> None:
    X, f = _data()
    sel = InnerCVSelector(_candidates(), n_splits=3).fit(X, f["label"], f["group"])
    assert sel.best_name_ == "signal"
    assert sel.inner_scores_["signal"] > 0.8 > 0.65 > sel.inner_scores_["noise"]
    p = sel.predict_proba(X)
    assert p.shape == (len(X), 2) and np.allclose(p.sum(1), 1)
    np.testing.assert_allclose(p, sel.best_estimator_.predict_proba(X))


def test_nested_in_evaluate_each_outer_fold_chooses_on_its_own_rows() -> None:
    X, f = _data()
    ev = evaluate(InnerCVSelector(_candidates(), n_splits=3), X, f, n_splits=3,
                  fit_final=True)
    assert ev.metrics["test"]["video"]["auc"] > 0.9
    assert ev.estimator.best_name_ == "signal"
    # the inner folds never see the outer test rows: a selector fitted on the training rows
    # of one outer fold scores the same as the one evaluate used (same seed, same rows)
    assert set(ev.video_scores["fold"]) == {0, 1, 2}


def test_one_class_training_rows_are_refused() -> None:
    X, f = _data()
    with pytest.raises(ValueError, match="two classes"):
        InnerCVSelector(_candidates()).fit(X[f["label"] == 0], f["label"][f["label"] == 0],
                                           f["group"][f["label"] == 0])
