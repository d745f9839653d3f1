"""Group-bootstrap AUC intervals and paired differences (arrays only)."""

from __future__ import annotations

import numpy as np
import pytest

from deepmetric.eval.bootstrap import bootstrap_auc


def _scores(n=400, seed=0, signal=0.6):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, signal * y + rng.normal(size=n)


def test_groups_of_copies_widen_the_interval():
    """Each item repeated 5 times: resampling items treats the copies as new evidence;
    resampling groups does not, and its interval is about sqrt(5) wider."""
    y, s = _scores()
    y5, s5, g5 = np.repeat(y, 5), np.repeat(s, 5), np.repeat(np.arange(len(y)), 5)
    items = bootstrap_auc(y5, s5, n_boot=400)
    grouped = bootstrap_auc(y5, s5, g5, n_boot=400)
    assert items["auc"] == grouped["auc"]
    width = lambda r: r["ci"][1] - r["ci"][0]  # noqa: E731
    assert 1.7 < width(grouped) / width(items) < 3.0
    assert grouped["n_groups"] == len(y) and grouped["ci"][0] < grouped["auc"] < grouped["ci"][1]


def test_a_small_consistent_gain_is_clear_when_paired():
    y, s = _scores(n=2000, seed=1)
    better = s + 0.15 * y  # the same items, a little better separated
    r = bootstrap_auc(y, better, baseline=s, n_boot=500)
    alone = bootstrap_auc(y, s, n_boot=500)
    assert r["diff"] > 0 and r["diff_ci"][0] > 0 and r["p_not_better"] == 0.0
    assert r["ci"][0] < alone["ci"][1]  # the unpaired intervals overlap
    same = bootstrap_auc(y, s, baseline=s, n_boot=50)
    assert same["diff"] == 0 and same["diff_ci"] == (0.0, 0.0) and same["p_not_better"] == 1


def test_bad_input_is_named():
    y, s = _scores(n=20)
    with pytest.raises(ValueError, match="one entry per item"):
        bootstrap_auc(y, s[:-1])
    with pytest.raises(ValueError, match="single class"):
        bootstrap_auc(np.ones(20), s)


def test_aucs_are_scikit_learns_with_ties_and_the_draws_resample_groups():
    """The AUCs (the point estimates and every draw's) are ``roc_auc_score``'s, ties and
    all; a draw of one group per class gives that group pair's AUC."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)   # many ties
    b = rng.integers(0, 4, 500).astype(float)   # a coarse baseline: ties everywhere
    r = bootstrap_auc(y, s, baseline=b, n_boot=50)
    assert r["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert r["baseline_auc"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    # two groups, one per class: every two-class draw holds both once, so every draw's AUC
    # is the whole set's and the interval collapses onto it
    groups = y.astype(str)
    r = bootstrap_auc(y, s, groups, n_boot=20)
    assert r["ci"] == pytest.approx((roc_auc_score(y, s),) * 2, abs=1e-12)
