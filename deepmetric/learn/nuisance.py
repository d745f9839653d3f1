"""Identity nuisance projection: remove the directions in which identities differ.

FaceNet space is dominated by identity. A frame-level head fitted on a few dozen identities
can lean on directions that separate *those* people, which carry nothing to other actors.
Nuisance attribute projection (NAP; Solomonoff, Campbell & Boardman, ICASSP 2005, from
speaker verification) estimates that subspace from the training data and projects it out
of every feature row, fitted and scored alike.

The subspace is spanned by the leading principal directions of the *within-class* scatter
of the identity-group means: each group's mean frame feature of one class minus that
class's mean over groups. The class-mean difference (real vs fake) is therefore not in it,
and what is removed is how one person's faces differ from another's of the same class.
A linear metric learned from identity labels; it works on arrays alone.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from deepmetric.params import Interval, validate_params

__all__ = ["NuisanceProjection"]


class NuisanceProjection(TransformerMixin, BaseEstimator):
    """Project out the top between-identity directions of the (standardised) features.

    Parameters
    ----------
    n_components : int
        Number of identity directions removed (at most the number of (group, class) pairs
        minus the number of classes; fewer are removed when the data has fewer).
    standardize : bool
        Standardise each feature with the training mean and std first (the directions are
        then found on comparable scales, and the output stays standardised).

    Attributes
    ----------
    mean_ : numpy.ndarray
        float64 (D,) training mean (zeros when ``standardize=False``).
    scale_ : numpy.ndarray
        float64 (D,) training std, 1 where a feature is constant (ones when
        ``standardize=False``).
    components_ : numpy.ndarray
        float64 (k, D) orthonormal rows: the removed directions, in the standardised space.
    explained_ratio_ : numpy.ndarray
        float64 (k,) share of the within-class group-mean scatter each direction carries.
    n_features_in_ : int
        D.
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(numbers.Integral, 0, None)],
        "standardize": [bool],
    }

    def __init__(self, n_components: int = 16, standardize: bool = True):
        self.n_components = n_components
        self.standardize = standardize

    def fit(self, X: np.ndarray, y: np.ndarray,
            groups: np.ndarray | None = None) -> NuisanceProjection:
        """Find the identity subspace.

        Parameters
        ----------
        X : numpy.ndarray
            float (n_rows, D) frame features.
        y : numpy.ndarray
            int (n_rows,) labels (0 real, 1 fake).
        groups : numpy.ndarray
            (n_rows,) identity groups (the same groups as the grouped splits).

        Returns
        -------
        NuisanceProjection
            self.

        Raises
        ------
        ValueError
            On missing groups, mismatched lengths, ``n_components < 0``, or no class with
            two groups.
        """
        validate_params(self)
        if groups is None:
            raise ValueError("NuisanceProjection.fit needs the identity groups: fit(X, y, "
                             "groups=...), or a pipeline fitted by deepmetric's evaluate / "
                             "fit_grouped, which pass them")
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        groups = np.asarray(groups)
        if X.ndim != 2 or len(y) != len(X) or len(groups) != len(X):
            raise ValueError(f"NuisanceProjection.fit: X must be (n, D) with n labels and n "
                             f"groups; got X {X.shape}, y {y.shape}, groups {groups.shape}")
        self.n_features_in_ = X.shape[1]
        if self.standardize:
            self.mean_ = X.mean(axis=0)
            sd = X.std(axis=0)
            self.scale_ = np.where(sd > 0, sd, 1.0)
        else:
            self.mean_ = np.zeros(X.shape[1])
            self.scale_ = np.ones(X.shape[1])
        Z = (X - self.mean_) / self.scale_
        centred = []
        for c in np.unique(y):
            in_c = y == c
            g, inv = np.unique(groups[in_c], return_inverse=True)
            if len(g) < 2:
                continue
            sums = np.zeros((len(g), Z.shape[1]))
            np.add.at(sums, inv, Z[in_c])
            means = sums / np.bincount(inv)[:, None]
            centred.append(means - means.mean(axis=0))
        if not centred:
            raise ValueError("NuisanceProjection.fit: no class has two identity groups; "
                             "the identity subspace cannot be estimated")
        M = np.concatenate(centred)
        _, s, vt = np.linalg.svd(M, full_matrices=False)
        rank = int(np.sum(s > s[0] * 1e-10)) if s.size and s[0] > 0 else 0
        k = min(int(self.n_components), rank)
        self.components_ = vt[:k]
        power = s ** 2
        self.explained_ratio_ = power[:k] / power.sum() if power.sum() > 0 else power[:k]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Standardise (if asked) and remove the identity directions.

        Parameters
        ----------
        X : numpy.ndarray
            float (n_rows, D).

        Returns
        -------
        numpy.ndarray
            float32 (n_rows, D): ``Z - Z V^T V`` with ``Z`` the standardised rows and ``V``
            :attr:`components_`.
        """
        check_is_fitted(self, "components_")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"NuisanceProjection.transform: expected (n, "
                             f"{self.n_features_in_}) features, got {X.shape}")
        Z = (X - self.mean_) / self.scale_
        V = self.components_
        return (Z - (Z @ V.T) @ V).astype(np.float32)
