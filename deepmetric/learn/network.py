"""The projection network of :class:`~deepmetric.learn.projector.TripletProjector` and its
class-balanced batch sampler (torch imported lazily)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["build_trunk", "embed_normalized", "BalancedBatches"]


def build_trunk(
    n_in: int, hidden: Sequence[int], out_dim: int, dropout: float, batch_norm: bool
) -> Any:
    """The projection network.

    Parameters
    ----------
    n_in : int
        Input width.
    hidden : sequence of int
        Widths of the hidden layers.
    out_dim : int
        Output width.
    dropout : float
        Dropout after each hidden layer (0: none).
    batch_norm : bool
        BatchNorm1d after each hidden Linear.

    Returns
    -------
    torch.nn.Sequential
        [Linear → (BatchNorm1d) → ReLU → (Dropout)]* → Linear.
    """
    from torch import nn

    layers: list[nn.Module] = []
    d = n_in
    for h in hidden:
        layers.append(nn.Linear(d, int(h)))
        if batch_norm:
            layers.append(nn.BatchNorm1d(int(h)))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = int(h)
    layers.append(nn.Linear(d, int(out_dim)))
    return nn.Sequential(*layers)


def embed_normalized(net: Any, x: Any) -> Any:
    """``net(x)`` L2-normalised row by row: (N, D) float32 tensor."""
    import torch.nn.functional as F

    return F.normalize(net(x), p=2, dim=1)


class BalancedBatches:
    """Class-balanced batch sampler with a local NumPy generator.

    Every batch holds ``m`` samples of each of ``min(K, batch_size // m)`` classes (chosen at
    random when there are more classes than fit), drawn from per-class streams of fresh
    permutations: a class is exhausted before any of its samples repeats, and a class
    smaller than ``m`` repeats within a batch (as PML's ``MPerClassSampler`` does).
    """

    def __init__(self, y: np.ndarray, m: int, batch_size: int, rng: np.random.Generator):
        self.m = m
        self.rng = rng
        self.by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
        self.by_class = [idx for idx in self.by_class if idx.size > 0]
        self.classes_per_batch = max(1, min(len(self.by_class), batch_size // m))
        self.streams: list[np.ndarray] = [np.empty(0, dtype=np.int64) for _ in self.by_class]

    def _take(self, c: int, k: int) -> np.ndarray:
        while self.streams[c].size < k:
            self.streams[c] = np.concatenate(
                [self.streams[c], self.rng.permutation(self.by_class[c])]
            )
        out, self.streams[c] = self.streams[c][:k], self.streams[c][k:]
        return out

    @property
    def batch_len(self) -> int:
        return self.m * self.classes_per_batch

    def batch(self) -> np.ndarray:
        k = len(self.by_class)
        if self.classes_per_batch >= k:
            chosen = np.arange(k)
        else:
            chosen = self.rng.choice(k, size=self.classes_per_batch, replace=False)
        return np.concatenate([self._take(int(c), self.m) for c in chosen])
