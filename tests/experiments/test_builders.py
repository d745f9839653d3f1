"""The builders shared by the experiment scripts: the sweep objective."""

from __future__ import annotations

import math

import pytest

from experiments.builders import compose, objective

METRICS = {"test": {"video": {"auc": 0.81, "eer": None}, "frame": {"auc": math.nan}},
           "cross": {"frame": {"auc": 0.66}}}


def test_the_objective_is_any_metrics_path():
    assert objective(METRICS, "test.video.auc") == 0.81
    assert objective(METRICS, "cross.frame.auc") == 0.66


@pytest.mark.parametrize("key, error, match", [
    ("cross.video.auc", KeyError, r"'cross.video.auc': 'cross.video' is not in the run's "
                                  r"metrics \(there: \['frame'\]\)"),
    ("test.frame.auc", ValueError, r"'test.frame.auc' is NaN"),
    ("test.video.eer", ValueError, r"'test.video.eer' is None, not a number"),
    ("test.video", ValueError, r"'test.video' is \{"),
])
def test_a_missing_or_nan_objective_fails_naming_the_key(key, error, match):
    with pytest.raises(error, match=match):
        objective(METRICS, key)


def test_the_default_objective_is_the_video_auc_and_presets_compose():
    assert compose([]).optimized_metric == "test.video.auc"
    cfg = compose(["exp=triplet_rf", "optimized_metric=cross.frame.auc"])
    assert (cfg.name, cfg.optimized_metric) == ("triplet_rf", "cross.frame.auc")
