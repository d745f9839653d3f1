"""binary_metrics, frame_and_video_metrics and summarize_folds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from deepmetric.eval.metrics import (
    METRIC_KEYS,
    binary_metrics,
    frame_and_video_metrics,
    summarize_folds,
)


def test_keys_and_values_against_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(0.3 * y + rng.normal(0.35, 0.25, 200), 0, 1)
    m = binary_metrics(y, s)
    assert tuple(m) == METRIC_KEYS
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["ap"] == pytest.approx(average_precision_score(y, s))
    pred = s >= 0.5
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    assert m["recall"] == pytest.approx(pred[y == 1].mean())
    assert m["precision"] == pytest.approx(y[pred].mean())
    assert (m["n"], m["n_real"], m["n_fake"]) == (200, int((y == 0).sum()), int(y.sum()))
    # at the EER threshold false-positive and false-negative rates are about equal
    p = s >= m["eer_threshold"]
    fpr, fnr = p[y == 0].mean(), 1 - p[y == 1].mean()
    assert abs(fpr - fnr) < 0.05 and m["eer"] == pytest.approx((fpr + fnr) / 2)
    assert m["recall_eer"] == pytest.approx(1 - fnr)
    assert 0.1 < m["eer"] < 0.5


def test_perfect_and_small_exact_cases() -> None:
    m = binary_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert m["auc"] == 1.0 and m["ap"] == 1.0 and m["eer"] == 0.0
    assert m["accuracy_eer"] == 1.0 and m["f1"] == 1.0
    # one fake ranked below one real: EER = 1/3 with 3 + 3 samples
    m = binary_metrics([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.7, 0.6, 0.8, 0.9])
    assert m["eer"] == pytest.approx(1 / 3)
    assert m["auc"] == pytest.approx(8 / 9)


def test_single_class_gives_nan_and_warns() -> None:
    with pytest.warns(UserWarning, match="one class"):
        m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    for k in ("auc", "ap", "eer", "eer_threshold", "f1_eer"):
        assert math.isnan(m[k])
    assert m["recall"] == pytest.approx(2 / 3) and m["n_real"] == 0


def test_input_errors() -> None:
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="0 \\(real\\) / 1"):
        binary_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="equal length"):
        binary_metrics([0, 1], [0.1])
    assert binary_metrics([False, True], [0.1, 0.9])["auc"] == 1.0


def test_frame_and_video_metrics() -> None:
    vid = np.repeat(["v0", "v1", "v2", "v3"], 3)
    y = np.repeat([0, 1, 0, 1], 3)
    s = np.array([0.1, 0.9, 0.2, 0.6, 0.7, 0.8, 0.3, 0.2, 0.1, 0.4, 0.6, 0.5])
    out = frame_and_video_metrics(y, s, vid)
    assert set(out) == {"frame", "video"}
    assert out["frame"]["n"] == 12 and out["video"]["n"] == 4
    assert out["video"]["auc"] == 1.0 and out["frame"]["auc"] < 1.0
    top = frame_and_video_metrics(y, s, vid, how="topk", k=1)
    assert top["video"]["auc"] == pytest.approx(0.5)  # v0's top frame (0.9) beats all fakes
    y_bad = y.copy()
    y_bad[0] = 1
    with pytest.raises(ValueError, match="both labels.*v0"):
        frame_and_video_metrics(y_bad, s, vid)


def test_summarize_folds() -> None:
    folds = [
        {"auc": 0.8, "n": 10, "name": "a", "eer": math.nan},
        {"auc": 0.9, "n": 12, "name": "b", "eer": 0.2},
        {"auc": 1.0, "n": 14, "name": "c", "eer": 0.1},
    ]
    s = summarize_folds(folds)
    assert "name" not in s
    assert s["auc"]["mean"] == pytest.approx(0.9)
    assert s["auc"]["std"] == pytest.approx(np.std([0.8, 0.9, 1.0]))
    assert s["eer"] == {"mean": pytest.approx(0.15), "std": pytest.approx(0.05), "n": 2}
    assert summarize_folds(folds, ddof=1)["auc"]["std"] == pytest.approx(0.1)
    nested = summarize_folds([{"frame": {"auc": 0.5}, "video": {"auc": 0.7}},
                              {"frame": {"auc": 0.7}, "video": {"auc": 0.9}}])
    assert nested["video"]["auc"]["mean"] == pytest.approx(0.8)
    with pytest.raises(ValueError):
        summarize_folds([])
