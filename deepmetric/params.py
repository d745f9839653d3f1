"""Parameter validation for deepmetric's estimators, in scikit-learn's style.

An estimator declares ``_parameter_constraints``: for each ``__init__`` parameter, a list of
constraints, any one of which the value must satisfy. ``fit`` calls
:func:`validate_params` first, so a bad value fails before any work, with one message
shape for every estimator: ``"<Class>: invalid <name>=<value>: expected <constraints>"``.
(scikit-learn's own validator lives in a private module, so deepmetric keeps this small one.)

A constraint is a :class:`Interval`, an :class:`Options`, ``None`` (the value None), a
type (``isinstance``; ``bool`` is not taken as ``int``) or a :class:`Check` (a predicate
with its description).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Interval", "Options", "Check", "validate_params"]


@dataclass(frozen=True)
class Interval:
    """A real (``numbers.Real``) or integral (``numbers.Integral``) value in a range.

    ``closed`` is ``"both"``, ``"left"``, ``"right"`` or ``"neither"``; a bound of None is
    unbounded.
    """

    kind: type
    left: float | None
    right: float | None
    closed: str = "both"

    def __call__(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, self.kind):
            return False
        lo_ok = self.left is None or (v >= self.left if self.closed in ("both", "left")
                                      else v > self.left)
        hi_ok = self.right is None or (v <= self.right if self.closed in ("both", "right")
                                       else v < self.right)
        return bool(lo_ok and hi_ok)

    def __str__(self) -> str:
        what = "an int" if self.kind is numbers.Integral else "a number"
        lo = "(" if self.closed in ("right", "neither") else "["
        hi = ")" if self.closed in ("left", "neither") else "]"
        if self.right is None:
            return f"{what} {'>=' if lo == '[' else '>'} {self.left}"
        if self.left is None:
            return f"{what} {'<=' if hi == ']' else '<'} {self.right}"
        return f"{what} in {lo}{self.left}, {self.right}{hi}"


@dataclass(frozen=True)
class Options:
    """One of a few values."""

    values: tuple

    def __call__(self, v: Any) -> bool:
        try:
            return v in self.values
        except TypeError:  # unhashable or incomparable
            return False

    def __str__(self) -> str:
        return "one of " + ", ".join(map(repr, self.values))


@dataclass(frozen=True)
class Check:
    """A predicate with the description of what it accepts."""

    test: Callable[[Any], bool]
    description: str

    def __call__(self, v: Any) -> bool:
        try:
            return bool(self.test(v))
        except (TypeError, ValueError):
            return False

    def __str__(self) -> str:
        return self.description


def _holds(constraint: Any, v: Any) -> bool:
    if constraint is None:
        return v is None
    if isinstance(constraint, type):
        return isinstance(v, constraint) and not (isinstance(v, bool) and constraint is not bool)
    return constraint(v)


def _describe(constraint: Any) -> str:
    if constraint is None:
        return "None"
    if isinstance(constraint, type):
        return f"a {constraint.__name__}"
    return str(constraint)


def validate_params(estimator: Any) -> None:
    """Check an estimator's parameters against its ``_parameter_constraints``.

    Parameters
    ----------
    estimator : object
        Has ``get_params(deep=False)`` and a class attribute ``_parameter_constraints``
        (parameter name → list of constraints; a parameter not listed is not checked).

    Raises
    ------
    ValueError
        ``"<Class>: invalid <name>=<value>: expected <a> or <b>"`` for the first parameter
        that satisfies none of its constraints.
    """
    params = estimator.get_params(deep=False)
    for name, constraints in type(estimator)._parameter_constraints.items():
        v = params[name]
        if not any(_holds(c, v) for c in constraints):
            raise ValueError(f"{type(estimator).__name__}: invalid {name}={v!r}: expected "
                             + " or ".join(_describe(c) for c in constraints))
