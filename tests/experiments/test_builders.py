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


@pytest.mark.parametrize("override, match", [
    ("threshold=2", r"threshold must be a number between 0 and 1, got 2 \(threshold=2\)"),
    ("threshold=-0.1", r"threshold must be a number between 0 and 1, got -0.1"),
    ("threshold=nan", r"threshold must be a number between 0 and 1, got nan"),
    ("cv.n_splits=1", r"cv.n_splits must be an integer >= 2, got 1"),
    ("aggregate.how=max", r"aggregate.how must be mean, median or topk, got 'max'"),
    ("aggregate.k=0", r"aggregate.k must be an integer >= 1, got 0"),
    ("temporal.ddof=2", r"temporal.ddof must be 0 or 1, got 2"),
    ("temporal.stats=[std,var]", r"temporal.stats must be a list of distinct mean, std"),
    ("self_blend.copies=-1", r"self_blend.copies must be an integer >= 0, got -1"),
    ("extractor.n_frames=0", r"extractor.n_frames must be an integer >= 1, got 0"),
    ("extract.jobs=0", r"extract.jobs must be an integer >= 1, got 0"),
])
def test_config_values_are_range_checked_at_compose_time(override, match):
    """Issue #33: `threshold=2` was accepted by a run (the CLI's --threshold 2 is refused)."""
    with pytest.raises(ValueError, match=match):  # a ConfigError
        compose([override])
    assert compose(["threshold=0.7", "cv.n_splits=3"]).threshold == 0.7  # in range: fine
