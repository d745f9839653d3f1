"""NuisanceProjection: identity directions out, the class difference kept (arrays only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from deepmetric.eval.evaluation import fit_grouped
from deepmetric.learn.nuisance import NuisanceProjection


def _identities(n_groups=12, per=20, d=40, rank=6, seed=0, spurious=0.0):
    """Frames whose identity offsets (large, in a ``rank``-dim subspace) dwarf a small fake
    shift along the last axis, which is outside that subspace. ``spurious``: the fakes of
    the first half of the groups are also pushed along one identity direction (a trace of
    who was faked in the training data, absent from the other groups)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(d - 1, rank)))[0].T  # (rank, d - 1) orthonormal
    basis = np.hstack([basis, np.zeros((rank, 1))])
    ident = rng.normal(scale=5.0, size=(n_groups, rank)) @ basis
    shift = np.zeros(d)
    shift[-1] = 1.0
    X, y, g = [], [], []
    for i in range(n_groups):
        for label in (0, 1):
            push = spurious * basis[0] if (label and i < n_groups // 2) else 0.0
            X.append(ident[i] + push + label * shift + rng.normal(scale=0.3, size=(per, d)))
            y += [label] * per
            g += [i] * per
    return np.concatenate(X), np.array(y), np.array(g)


def test_identity_means_collapse_and_the_fake_shift_survives():
    X, y, g = _identities()
    nap = NuisanceProjection(n_components=6).fit(X, y, groups=g)
    V = nap.components_
    assert V.shape == (6, 40)
    np.testing.assert_allclose(V @ V.T, np.eye(6), atol=1e-8)
    assert nap.explained_ratio_.sum() > 0.95  # the identity subspace holds the scatter
    Z = nap.transform(X)
    assert Z.dtype == np.float32 and Z.shape == X.shape
    frames = pd.DataFrame({"g": g, "y": y})
    z0 = (X - nap.mean_) / nap.scale_
    spread = []  # of the identity-group means around their class mean
    for A in (z0, Z):
        means = pd.DataFrame(A).groupby([frames.y, frames.g]).mean()
        centred = means - means.groupby(level=0).transform("mean")
        spread.append(np.linalg.norm(centred.values, axis=1).mean())
    assert spread[1] < 0.1 * spread[0], spread
    gap = Z[y == 1].mean(0) - Z[y == 0].mean(0)
    gap0 = z0[y == 1].mean(0) - z0[y == 0].mean(0)
    assert np.linalg.norm(gap) > 0.9 * np.linalg.norm(gap0)
    assert np.argmax(np.abs(gap)) == X.shape[1] - 1


def test_held_out_identities_are_scored_better_without_identity_directions():
    """A head fitted on 8 identities whose fakes carry an identity-tied trace, scored on 8
    others: without the identity subspace it has to use the real fake shift."""
    from sklearn.metrics import roc_auc_score

    X, y, g = _identities(n_groups=16, seed=1, spurious=4.0)
    train = g < 8
    aucs = {}
    for k in (0, 6):
        pipe = Pipeline([("nap", NuisanceProjection(n_components=k)),
                         ("clf", LogisticRegression(C=0.1, max_iter=2000))])
        fitted = fit_grouped(pipe, X[train], y[train], g[train])
        aucs[k] = roc_auc_score(y[~train], fitted.predict_proba(X[~train])[:, 1])
    assert aucs[6] > 0.95 and aucs[6] > aucs[0] + 0.1, aucs


def test_zero_components_is_standardisation_only():
    X, y, g = _identities(seed=3)
    nap = NuisanceProjection(n_components=0).fit(X, y, g)
    assert nap.components_.shape == (0, X.shape[1])
    np.testing.assert_allclose(nap.transform(X), (X - X.mean(0)) / X.std(0), atol=1e-5)


def test_more_components_than_the_data_has_are_capped():
    X, y, g = _identities(n_groups=3, seed=4)
    nap = NuisanceProjection(n_components=100).fit(X, y, g)
    assert len(nap.components_) <= 2 * (3 - 1)
    assert np.isclose(nap.explained_ratio_.sum(), 1.0)


def test_missing_groups_and_bad_shapes_are_named():
    X, y, g = _identities(seed=5)
    with pytest.raises(ValueError, match="needs the identity groups"):
        NuisanceProjection().fit(X, y)
    with pytest.raises(ValueError, match="no class has two identity groups"):
        NuisanceProjection().fit(X, y, np.zeros(len(X)))
    nap = NuisanceProjection(4).fit(X, y, g)
    with pytest.raises(ValueError, match=r"expected \(n, 40\)"):
        nap.transform(X[:, :5])
