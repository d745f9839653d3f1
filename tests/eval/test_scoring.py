"""Frame scores from fitted heads and their aggregation into video scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from deepmetric.eval.scoring import aggregate_scores, frame_scores


@pytest.fixture(scope="module")
def xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    X = rng.normal(size=(60, 3)) + y[:, None]
    return X, y


def test_aggregate_mean_median_topk() -> None:
    s = np.array([0.1, 0.9, 0.5, 0.2, 0.4, 0.6, 1.0])
    v = np.array(["b", "b", "b", "a", "a", "a", "c"])
    mean = aggregate_scores(s, v)
    assert list(mean.index) == ["b", "a", "c"] and mean.index.name == "video_id"
    assert list(mean.columns) == ["fake_score", "n_frames"]
    np.testing.assert_allclose(mean["fake_score"], [0.5, 0.4, 1.0])
    assert mean["n_frames"].tolist() == [3, 3, 1] and mean["n_frames"].dtype == np.int64
    np.testing.assert_allclose(aggregate_scores(s, v, how="median")["fake_score"], [0.5, 0.4, 1.0])
    top2 = aggregate_scores(s, v, how="topk", k=2)
    np.testing.assert_allclose(top2["fake_score"], [0.7, 0.5, 1.0])  # "c" has 1 frame < k


def test_aggregate_integer_ids_and_errors() -> None:
    out = aggregate_scores([0.2, 0.4], [7, 7])
    assert out.loc[7, "fake_score"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="NaN value"):
        aggregate_scores([0.2, np.nan], [1, 2])
    with pytest.raises(ValueError, match="missing"):
        aggregate_scores([0.2, 0.3], ["a", None])
    with pytest.raises(ValueError, match="equal length"):
        aggregate_scores([0.2, 0.3], ["a"])
    with pytest.raises(ValueError, match="how"):
        aggregate_scores([0.2], ["a"], how="max")
    with pytest.raises(ValueError, match="no frame"):
        aggregate_scores([], [])


def test_frame_scores_predict_proba(xy) -> None:
    X, y = xy
    clf = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    s = frame_scores(clf, X)
    np.testing.assert_allclose(s, clf.predict_proba(X)[:, 1])
    np.testing.assert_allclose(frame_scores(clf, X, pos_label=0), 1 - s)


def test_frame_scores_decision_function_sigmoid(xy) -> None:
    X, y = xy
    svc = LinearSVC().fit(X, y)
    assert not hasattr(svc, "predict_proba")
    s = frame_scores(svc, X)
    np.testing.assert_allclose(s, expit(svc.decision_function(X)))
    np.testing.assert_array_equal(s >= 0.5, svc.predict(X) == 1)
    svc_str = LinearSVC().fit(X, np.where(y == 1, "fake", "real"))  # classes_ [fake, real]
    np.testing.assert_allclose(frame_scores(svc_str, X, pos_label="fake"), s, atol=1e-6)


def test_frame_scores_rejects_non_binary(xy) -> None:
    X, _ = xy
    clf = LogisticRegression().fit(X, np.arange(60) % 3)
    with pytest.raises(ValueError, match="binary"):
        frame_scores(clf, X)
    clf2 = LogisticRegression().fit(X, np.arange(60) % 2 + 2)
    with pytest.raises(ValueError, match="pos_label"):
        frame_scores(clf2, X)


def test_video_table_is_dataframe() -> None:
    out = aggregate_scores(np.linspace(0, 1, 10), np.repeat(np.arange(5), 2))
    assert isinstance(out, pd.DataFrame) and len(out) == 5
