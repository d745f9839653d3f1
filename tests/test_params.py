"""Every estimator of deepmetric validates its parameters in one style, at fit, and raises
scikit-learn's NotFittedError when used before fit."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression

import deepmetric as dm
from deepmetric.finetune import FaceNetFineTuner
from deepmetric.learn.nuisance import NuisanceProjection
from deepmetric.learn.projector import TripletProjector
from deepmetric.eval.selection import InnerCVSelector

ESTIMATORS = [TripletProjector, NuisanceProjection, InnerCVSelector, FaceNetFineTuner]
BAD = [
    (TripletProjector, {"margin": 0}, r"TripletProjector: invalid margin=0: expected a number > 0"),
    (TripletProjector, {"hidden": "abc"}, r"invalid hidden='abc': expected a sequence of ints"),
    (TripletProjector, {"dropout": 1.0}, r"invalid dropout=1.0: expected a number in \[0, 1\)"),
    (TripletProjector, {"m_per_class": 600}, r"invalid m_per_class=600: expected at most"),
    (TripletProjector, {"loss": "SupConLoss"}, r"invalid loss='SupConLoss': the training loss"),
    (NuisanceProjection, {"n_components": -1},
     r"NuisanceProjection: invalid n_components=-1: expected an int >= 0"),
    (NuisanceProjection, {"standardize": "yes"}, r"invalid standardize='yes': expected a bool"),
    (InnerCVSelector, {"candidates": {}},
     r"InnerCVSelector: invalid candidates=\{\}: expected a non-empty mapping"),
    (InnerCVSelector, {"n_splits": 1}, r"invalid n_splits=1: expected an int >= 2"),
    (FaceNetFineTuner, {"batch_size": True}, r"invalid batch_size=True: expected an int >= 2"),
]


def _args(cls) -> dict:
    return {"candidates": {"lr": LogisticRegression()}} if cls is InnerCVSelector else {}


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 5)).astype(np.float32)
    y = np.arange(24) % 2
    return X, y, np.arange(24) // 2


@pytest.mark.parametrize("cls, params, match", BAD,
                         ids=[f"{c.__name__}-{next(iter(p))}" for c, p, _ in BAD])
def test_a_bad_parameter_fails_at_fit_naming_it(cls, params, match):
    X, y, groups = _data()
    est = cls(**{**_args(cls), **params})
    with pytest.raises(ValueError, match=match):
        est.fit(X, y, groups=groups)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_every_parameter_has_a_constraint_and_the_defaults_pass(cls):
    from deepmetric.params import validate_params

    est = cls(**_args(cls))
    assert set(cls._parameter_constraints) == set(est.get_params(deep=False))
    validate_params(est)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_using_an_estimator_before_fit_raises_not_fitted(cls):
    est = cls(**_args(cls))
    X, _, _ = _data()
    methods = [m for m in ("transform", "predict", "predict_proba") if hasattr(est, m)]
    assert methods
    for m in methods:
        with pytest.raises(NotFittedError):
            getattr(est, m)(X)


def test_the_public_names_are_listed_once_and_all_resolve():
    import deepmetric

    assert sorted(dir(deepmetric)) == sorted(deepmetric.__all__)
    for name in deepmetric.__all__:
        assert getattr(dm, name) is not None, name
    assert "cross_validate" not in deepmetric.__all__  # scikit-learn's name, another signature
    with pytest.raises(AttributeError, match="no attribute 'cross_validate'"):
        dm.cross_validate  # noqa: B018
