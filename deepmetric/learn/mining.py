"""Semi-hard triplet mining and loss with O(B²) memory.

The selection rule and the reduction replicate pytorch-metric-learning (PML)'s
``TripletMarginMiner(margin, type_of_triplets="semihard")`` followed by
``TripletMarginLoss(margin)`` with their defaults (read from PML 2.9's source):

* distance: ``LpDistance(normalize_embeddings=True, p=2, power=1)``, i.e. embeddings are
  L2-normalised row-wise and ``torch.cdist(e, e, p=2)`` gives ``D`` of shape ``(B, B)``;
* candidate triplets ``(a, p, n)``: ``p != a`` with ``labels[p] == labels[a]`` and
  ``labels[n] != labels[a]`` (PML's ``get_all_triplets_indices``);
* semi-hard selection (miner): ``0 < D[a, n] - D[a, p] <= margin`` — strict on the left,
  inclusive on the right, the difference being computed exactly as PML does;
* per-triplet loss: ``relu((D[a, p] - D[a, n]) + margin)`` (``smooth_loss=False``,
  ``swap=False``);
* reduction: PML's default ``AvgNonZeroReducer`` — the mean over the selected triplets whose
  loss is ``> 0``. A selected triplet sitting exactly on the margin has loss 0 and is not
  counted.

PML enumerates every candidate triplet (about ``B³/4`` index triples for two balanced
classes). :class:`SemiHardTripletLoss` never does: under ``torch.no_grad`` it sorts each
anchor's positive and negative distances and counts, by binary search, how many triplets
each anchor–positive and anchor–negative pair takes part in (``O(B² log B)`` time, ``O(B²)``
memory). Because the loss is linear in the distances once the triplets are fixed,

    loss = mean over kept triplets of (D[a, p] - D[a, n] + margin)
         = sum(W * D) / n_kept + margin,

where ``W[a, p]`` = number of kept triplets using the pair ``(a, p)`` as anchor–positive and
``W[a, n]`` = minus the number of kept triplets using ``(a, n)`` as anchor–negative (a pair is
never both, since labels either match or differ). The autograd graph therefore holds only
``D`` and ``W``: peak memory is ``O(B²)``, and the gradient is the
same as PML's (each kept triplet contributes ``1 / n_kept`` to ``dL/dD[a, p]`` and
``-1 / n_kept`` to ``dL/dD[a, n]``).

Anchor–positive pairs without a semi-hard negative contribute nothing (exactly as in PML: no
triplet is mined for them). If the whole batch has no kept triplet — e.g. a single-label batch,
a batch with no positive pair, or a batch whose triplets are all easy (``D[a, n] > D[a, p] +
margin``) or all hard (``D[a, n] <= D[a, p]``, which includes a collapsed embedding) — the loss
is ``sum(embeddings * 0)``: a zero that is still attached to the graph, as PML returns.

Note the last case: a fully collapsed embedding has *no* semi-hard triplet and hence zero
semi-hard loss. That is why :func:`batch_all_triplet_loss` (mean margin violation over all
candidate triplets, also ``O(B²)``) is offered as a monitoring criterion.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SemiHardTripletLoss",
    "PMLSemiHardTripletLoss",
    "semihard_triplet_loss",
    "batch_all_triplet_loss",
    "pairwise_distances",
]

#: default bound on the number of elements of one ``(c, B, B)`` mining block
DEFAULT_CHUNK_ELEMENTS = 1 << 22


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """PML's default ``LpDistance``: Euclidean distances between L2-normalised rows.

    Parameters
    ----------
    embeddings : torch.Tensor, shape (B, D), floating

    Returns
    -------
    torch.Tensor, shape (B, B), same dtype as ``embeddings``
        ``torch.cdist(normalize(e), normalize(e), p=2)`` — the very call PML makes, so the
        values (and the triplets they select) are bit-identical to PML's.
    """
    e = F.normalize(embeddings, p=2, dim=1)
    return torch.cdist(e, e, p=2)


def _check_inputs(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if embeddings.ndim != 2:
        raise ValueError(
            f"embeddings must have shape (B, D), got {tuple(embeddings.shape)}"
        )
    labels = torch.as_tensor(labels, device=embeddings.device)
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must have shape ({embeddings.shape[0]},), got {tuple(labels.shape)}"
        )
    return labels


def _chunk_rows(b: int, chunk_elements: int) -> int:
    return max(1, int(chunk_elements) // max(1, b * b))


def _semihard_weights(
    dist: torch.Tensor, labels: torch.Tensor, margin: float
) -> tuple[torch.Tensor, int]:
    """Signed triplet-count matrix ``W`` (B, B) and the number of kept triplets.

    ``W[a, j] = n_ap(a, j) - n_an(a, j)``: for a positive ``j``, the number of semi-hard
    negatives of the pair (a, j); for a negative ``j``, minus the number of positives for
    which ``j`` is semi-hard. Both counts come from per-anchor sorted distances and binary
    searches, so this takes ``O(B² log B)`` time and ``O(B²)`` memory (no ``(B, B, B)``
    tensor). The comparisons run in float64, where sums of float32 distances and the margin
    are exact.
    """
    b = dist.shape[0]
    with torch.no_grad():
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(b, dtype=torch.bool, device=dist.device)
        pos = same & ~eye
        neg = ~same
        # the margin as the distances' dtype sees it, then everything in float64
        m = float(torch.tensor(margin, dtype=dist.dtype))
        d = dist.double()
        inf = torch.tensor(float("inf"), dtype=torch.float64, device=dist.device)
        neg_sorted = torch.where(neg, d, inf).sort(dim=1).values
        pos_sorted = torch.where(pos, d, inf).sort(dim=1).values
        # positives p: negatives n with d_ap < d_an < d_ap + margin
        n_ap = (torch.searchsorted(neg_sorted, d + m, right=False)
                - torch.searchsorted(neg_sorted, d, right=True))
        # negatives n: positives p with d_an - margin < d_ap < d_an
        n_an = (torch.searchsorted(pos_sorted, d, right=False)
                - torch.searchsorted(pos_sorted, d - m, right=True))
        n_ap = torch.where(pos, n_ap, 0)
        n_an = torch.where(neg, n_an, 0)
        weights = (n_ap - n_an).to(dist.dtype)
        n_kept = int(n_ap.sum())
    return weights, n_kept


def semihard_triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.2,
) -> tuple[torch.Tensor, int]:
    """Semi-hard triplet margin loss, equal in value and gradient to PML's miner + loss.

    Its memory is ``O(B²)`` (a few ``(B, B)`` tensors; no ``(B, B, B)`` block), so it needs
    no chunking, unlike :func:`batch_all_triplet_loss`.

    Parameters
    ----------
    embeddings : torch.Tensor, shape (B, D), float32 or float64
        Raw (not necessarily normalised) embeddings; rows are L2-normalised here, as PML's
        default distance does.
    labels : torch.Tensor, shape (B,), integer
    margin : float, default=0.2

    Returns
    -------
    loss : torch.Tensor, scalar, dtype of ``embeddings``
        Mean of ``D[a, p] - D[a, n] + margin`` over the semi-hard triplets with a positive
        loss; ``sum(embeddings * 0)`` (zero, differentiable) when there are none.
    n_triplets : int
        Number of triplets averaged over.
    """
    labels = _check_inputs(embeddings, labels)
    if embeddings.shape[0] == 0:
        return torch.sum(embeddings * 0), 0
    dist = pairwise_distances(embeddings)
    weights, n_kept = _semihard_weights(dist.detach(), labels, float(margin))
    if n_kept == 0:
        return torch.sum(embeddings * 0), 0
    loss = torch.sum(weights * dist) / n_kept + margin
    return loss, n_kept


def batch_all_triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.2,
    *,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, int]:
    """Mean of ``relu(D[a, p] - D[a, n] + margin)`` over *all* candidate triplets.

    Unlike the semi-hard loss this is 0 only when every triplet satisfies the margin and is
    ``margin`` for a collapsed embedding, so it is a sound validation / early-stopping
    criterion. Computed without grad, in anchor chunks (``O(B²)`` memory).

    Parameters
    ----------
    embeddings : torch.Tensor, shape (B, D), floating
    labels : torch.Tensor, shape (B,), integer
    margin : float, default=0.2
    chunk_elements : int, default=2**22

    Returns
    -------
    loss : torch.Tensor, scalar (no grad)
        ``nan`` when there is no candidate triplet.
    n_triplets : int
        Number of candidate triplets.
    """
    labels = _check_inputs(embeddings, labels)
    b = embeddings.shape[0]
    with torch.no_grad():
        if b == 0:
            return torch.tensor(float("nan")), 0
        dist = pairwise_distances(embeddings)
        same = labels[:, None] == labels[None, :]
        pos_mask = same & ~torch.eye(b, dtype=torch.bool, device=dist.device)
        neg_mask = ~same
        total = torch.zeros((), dtype=torch.float64, device=dist.device)
        count = 0
        step = _chunk_rows(b, chunk_elements)
        for start in range(0, b, step):
            stop = min(b, start + step)
            rows = dist[start:stop]
            valid = pos_mask[start:stop, :, None] & neg_mask[start:stop, None, :]
            viol = torch.relu((rows[:, :, None] - rows[:, None, :]) + margin)
            total += torch.sum(viol * valid).double()
            count += int(valid.sum())
        if count == 0:
            return torch.tensor(float("nan")), 0
        return (total / count).to(embeddings.dtype), count


class SemiHardTripletLoss(nn.Module):
    """PML-equivalent semi-hard triplet margin loss with ``O(B²)`` memory.

    Same value and gradient as ``TripletMarginLoss(margin)(e, y, TripletMarginMiner(margin,
    type_of_triplets="semihard")(e, y))`` with PML's defaults (see the module docstring for
    the exact rule). Anchor–positive pairs without a semi-hard negative contribute nothing;
    a batch without any kept triplet gives a differentiable zero.

    Parameters
    ----------
    margin : float, default=0.2

    Attributes
    ----------
    last_n_triplets : int
        Number of triplets averaged over in the last call to ``forward``.
    """

    def __init__(self, margin: float = 0.2):
        super().__init__()
        self.margin = float(margin)
        self.last_n_triplets = 0

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of one batch.

        Parameters
        ----------
        embeddings : torch.Tensor, shape (B, D), floating
        labels : torch.Tensor, shape (B,), integer

        Returns
        -------
        torch.Tensor, scalar
        """
        loss, n = semihard_triplet_loss(embeddings, labels, self.margin)
        self.last_n_triplets = n
        return loss

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class PMLSemiHardTripletLoss(nn.Module):
    """PML's own ``TripletMarginMiner("semihard")`` + ``TripletMarginLoss`` (O(B³) memory).

    The reference implementation, kept selectable (``TripletProjector(miner="pml")``).

    Parameters
    ----------
    margin : float, default=0.2

    Attributes
    ----------
    last_n_triplets : int
        Number of triplets mined in the last call (PML then averages over the ones with a
        positive loss, which differs only for triplets exactly on the margin).
    """

    def __init__(self, margin: float = 0.2):
        super().__init__()
        from pytorch_metric_learning import losses, miners

        self.margin = float(margin)
        self.miner = miners.TripletMarginMiner(margin=self.margin, type_of_triplets="semihard")
        self.loss = losses.TripletMarginLoss(margin=self.margin)
        self.last_n_triplets = 0

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of one batch: ``(B, D)`` floating embeddings, ``(B,)`` integer labels."""
        labels = _check_inputs(embeddings, labels)
        triplets = self.miner(embeddings, labels)
        self.last_n_triplets = int(len(triplets[0]))
        return self.loss(embeddings, labels, triplets)


def make_loss(miner: str, margin: float) -> Callable[..., torch.Tensor]:
    """Loss module for ``miner`` in ``{"semihard", "pml"}``."""
    if miner == "semihard":
        return SemiHardTripletLoss(margin)
    if miner == "pml":
        return PMLSemiHardTripletLoss(margin)
    raise ValueError(f"miner must be 'semihard' or 'pml', got {miner!r}")
