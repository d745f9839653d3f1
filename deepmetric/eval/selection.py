"""Nested selection: a choice among pipelines made by an inner grouped CV of the training data.

A choice (feature blocks, a regularisation strength, with or without a projector) made by
looking at the test folds inflates the test figure. :class:`InnerCVSelector` is an
estimator that makes the choice *inside* ``fit``, by identity-grouped CV of the rows it is
given, then refits the winner on all of them. Put it where a pipeline goes, e.g. in
:func:`deepmetric.eval.evaluation.evaluate`: each outer training fold then makes its own
choice, and the outer test folds never see it (nested cross-validation)::

    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    pick = lambda cols: ColumnTransformer([("keep", "passthrough", cols)])
    candidates = {"texture": make_pipeline(pick(tex), StandardScaler(), LogisticRegression()),
                  "spectrum": make_pipeline(pick(spec), StandardScaler(), LogisticRegression())}
    ev = evaluate(InnerCVSelector(candidates, n_splits=3), X, frames)

Rows are frames (or clips, for a video-level model) and ``groups`` their identity groups, so
an inner fold never splits a clip or an identity.
"""

from __future__ import annotations

import numbers
from typing import Any, Mapping

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from deepmetric.params import Check, Interval, validate_params

__all__ = ["InnerCVSelector"]


class InnerCVSelector(ClassifierMixin, BaseEstimator):
    """Pick one of several candidate classifiers by inner identity-grouped CV, then refit it.

    Parameters
    ----------
    candidates : mapping of str to sklearn classifier
        Named candidates (each cloned before every fit). A candidate with a ``groups`` fit
        parameter (a :class:`~deepmetric.learn.projector.TripletProjector` step) gets them.
    n_splits : int, default=3
        Inner folds (stratified, grouped).
    random_state : int, default=0
        Seeds the inner fold assignment.

    Attributes
    ----------
    inner_scores_ : dict of str to float
        Mean inner-fold ROC AUC of each candidate (rows: frames, or clips).
    best_name_ : str
        The candidate with the highest mean inner AUC (the first listed on a tie).
    best_estimator_ : sklearn classifier
        That candidate refitted on every row given to ``fit``.
    classes_ : numpy.ndarray
        The labels seen in ``fit``.
    """

    _parameter_constraints: dict = {
        "candidates": [Check(lambda c: isinstance(c, Mapping) and len(c) > 0,
                             "a non-empty mapping of name to estimator")],
        "n_splits": [Interval(numbers.Integral, 2, None)],
        "random_state": [None, numbers.Integral, np.random.RandomState],
    }

    def __init__(self, candidates: Mapping[str, Any], n_splits: int = 3, random_state: int = 0):
        self.candidates = candidates
        self.n_splits = n_splits
        self.random_state = random_state

    def fit(self, X: Any, y: Any, groups: Any = None) -> "InnerCVSelector":
        """Score each candidate by inner grouped CV and refit the best on all rows.

        Parameters
        ----------
        X : array-like, shape (n_rows, n_features)
        y : array-like of int, shape (n_rows,)
            0 real, 1 fake.
        groups : array-like, shape (n_rows,), optional
            Identity groups (no group straddles an inner fold); without them every row is
            its own group.

        Returns
        -------
        InnerCVSelector
        """
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedGroupKFold

        from deepmetric.eval.evaluation import fit_grouped
        from deepmetric.eval.scoring import frame_scores

        validate_params(self)
        X = np.asarray(X)
        y = np.asarray(y)
        groups = np.arange(len(y)) if groups is None else np.asarray(groups)
        self.classes_ = np.unique(y)
        if self.classes_.size != 2:
            raise ValueError(f"InnerCVSelector needs two classes in the training rows, got "
                             f"{self.classes_.tolist()}")
        cv = StratifiedGroupKFold(n_splits=int(self.n_splits), shuffle=True,
                                  random_state=self.random_state)
        folds = list(cv.split(X, y, groups))
        self.inner_scores_ = {}
        for name, cand in self.candidates.items():
            aucs = []
            for tr, te in folds:
                if np.unique(y[te]).size < 2 or np.unique(y[tr]).size < 2:
                    continue
                est = fit_grouped(cand, X[tr], y[tr], groups[tr])
                aucs.append(roc_auc_score(y[te], frame_scores(est, X[te])))
            self.inner_scores_[str(name)] = float(np.mean(aucs)) if aucs else float("nan")
        scored = {n: s for n, s in self.inner_scores_.items() if not np.isnan(s)}
        if not scored:
            raise ValueError("no inner fold held both classes on each side: too few groups "
                             f"for {self.n_splits} inner folds")
        self.best_name_ = max(scored, key=scored.__getitem__)
        self.best_estimator_ = fit_grouped(self.candidates[self.best_name_], X, y, groups)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """float64 (n_rows, 2): the chosen candidate's class probabilities."""
        check_is_fitted(self, "best_estimator_")
        if hasattr(self.best_estimator_, "predict_proba"):
            return self.best_estimator_.predict_proba(X)
        from deepmetric.eval.scoring import frame_scores

        p = frame_scores(self.best_estimator_, X)
        return np.stack([1 - p, p], axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """int (n_rows,): the chosen candidate's predicted labels."""
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict(X)

