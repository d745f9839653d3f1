"""Source-paired triplet mining: a fake against the real clip it was made from.

A FaceForensics++ fake ``TTT_SSS`` is the original clip ``TTT`` with its face manipulated:
everything but the manipulation (scene, lighting, compression, pose) is shared with the
real clip. A triplet whose negative is that real clip (for a fake anchor), or one of its
fakes (for a real anchor), can only be told apart by the manipulation itself. Positives are
taken from *other* identity groups, so "same class" is never "same person" either.

:class:`SourcePairedMiner` is a pytorch-metric-learning miner (``BaseMiner``: it returns
``(anchors, positives, negatives)`` index tensors) and so works with any PML loss that takes
an ``indices_tuple``. A PML miner sees only ``(embeddings, labels)``; the pairing travels in
the labels, packed by :func:`pair_labels` (class, pair id and identity group in one int64)::

    from pytorch_metric_learning import losses
    labels = torch.as_tensor(pair_labels(y, pair_ids, groups))
    miner, loss_fn = SourcePairedMiner(), losses.TripletMarginLoss(margin=0.2)
    loss = loss_fn(embeddings, labels, miner(embeddings, labels))

A loss that reads labels only through the tuple (triplet, contrastive, margin losses) can
take the packed labels as they are; a classification-style loss (ArcFace, proxies) needs
the class codes, :func:`unpack_pair_labels` ``[0]``.
:class:`~deepmetric.learn.projector.TripletProjector` packs them itself when its loss holds
this miner (:func:`uses_source_pairs`) and ``fit`` gets ``pairs``.

Arrays only: the pair ids come from the manifest (FF++'s ``pair_id`` column).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pytorch_metric_learning.miners import BaseMiner

__all__ = ["SourcePairedMiner", "loss_labels", "pair_labels", "unpack_pair_labels",
           "uses_source_pairs"]

#: Bit layout of a packed label: class (4 bits) | identity group (28 bits) | pair (31 bits).
_CLASS_BITS, _GROUP_BITS, _PAIR_BITS = 4, 28, 31
_TYPES = ("all", "hard", "semihard", "easy")


def pair_labels(y: Any, pairs: Any, groups: Any) -> np.ndarray:
    """Pack class, source pair and identity group into one int64 label per row.

    Parameters
    ----------
    y : array-like, shape (N,)
        Class codes, integers in [0, 16) (0 real, 1 fake).
    pairs : array-like, shape (N,)
        Id of the real clip each row pairs with: for a fake, the real clip it was made
        from; for a real clip, its own id. Missing (None, NaN, ``""``) marks a row without
        a pair (it is never a paired negative, and gets none).
    groups : array-like, shape (N,)
        Identity group of each row (positives are taken across groups).

    Returns
    -------
    numpy.ndarray
        int64 (N,): ``class | group_code << 4 | pair_code << 32``, where codes number the
        distinct values from 0 (groups) and 1 (pairs; 0 = no pair) in sorted order.

    Raises
    ------
    ValueError
        On mismatched lengths or a class code outside [0, 16).
    """
    y = np.asarray(y)
    pairs, groups = np.asarray(pairs, dtype=object), np.asarray(groups, dtype=object)
    if not (y.ndim == 1 and y.shape == pairs.shape == groups.shape):
        raise ValueError(f"pair_labels: y, pairs and groups must be (N,) arrays of one length;"
                         f" got {y.shape}, {pairs.shape}, {groups.shape}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= 1 << _CLASS_BITS):
        raise ValueError(f"pair_labels: class codes must lie in [0, {1 << _CLASS_BITS}), "
                         f"got {y.min()}..{y.max()}")
    missing = np.array([p is None or p == "" or (isinstance(p, float) and p != p)
                        for p in pairs], dtype=bool)
    pair_code = np.zeros(len(y), np.int64)
    if (~missing).any():
        pair_code[~missing] = 1 + np.unique(pairs[~missing].astype(str),
                                            return_inverse=True)[1]
    group_code = np.unique(groups.astype(str), return_inverse=True)[1].astype(np.int64)
    if len(y) and (group_code.max() >= 1 << _GROUP_BITS or pair_code.max() >= 1 << _PAIR_BITS):
        raise ValueError("pair_labels: too many groups or pairs to pack")
    return y | (group_code << _CLASS_BITS) | (pair_code << (_CLASS_BITS + _GROUP_BITS))


def unpack_pair_labels(labels: Any) -> tuple[Any, Any, Any]:
    """The class, group and pair codes of packed labels (see :func:`pair_labels`).

    Parameters
    ----------
    labels : torch.Tensor or numpy.ndarray
        int64 (N,) packed labels.

    Returns
    -------
    cls, group, pair : same type as ``labels``
        int64 (N,) each; ``pair`` 0 means no pair.
    """
    cls = labels & ((1 << _CLASS_BITS) - 1)
    group = (labels >> _CLASS_BITS) & ((1 << _GROUP_BITS) - 1)
    pair = labels >> (_CLASS_BITS + _GROUP_BITS)
    return cls, group, pair


def uses_source_pairs(loss: Any) -> bool:
    """Whether a loss module (or a module inside it, e.g. a
    :class:`~deepmetric.learn.losses.MinedLoss`'s miner) is a :class:`SourcePairedMiner`,
    i.e. expects packed labels."""
    modules = loss.modules() if isinstance(loss, torch.nn.Module) else []
    return any(isinstance(m, SourcePairedMiner) for m in modules)


def loss_labels(loss: Any, y: np.ndarray, groups: Any, pairs: Any) -> np.ndarray | None:
    """The labels a training loss should see: packed with the source pairs when it mines
    them (:func:`uses_source_pairs`), else None (use the class codes).

    Parameters
    ----------
    loss : torch.nn.Module or None
        The training loss.
    y : numpy.ndarray
        int64 (N,) class codes.
    groups : array-like, shape (N,), or None
        Identity groups; None: each pair its own identity.
    pairs : array-like, shape (N,), or None
        Source pair ids (see :func:`pair_labels`).

    Returns
    -------
    numpy.ndarray or None
        int64 (N,) packed labels, or None when the loss does not mine source pairs.

    Raises
    ------
    ValueError
        When the loss mines source pairs and ``pairs`` is None or of another length.
    """
    if loss is None or not uses_source_pairs(loss):
        return None
    if pairs is None:
        raise ValueError("the loss mines source pairs (SourcePairedMiner) but no pairs were "
                         "given: pass pairs, e.g. the manifest's pair_id column (the FF++ "
                         "adapter writes it)")
    pairs = np.asarray(pairs, dtype=object)
    if pairs.shape != np.shape(y):
        raise ValueError(f"pairs must have shape {np.shape(y)}, got {pairs.shape}")
    return pair_labels(y, pairs, pairs if groups is None else groups)


class SourcePairedMiner(BaseMiner):
    """Triplets whose negative comes from the anchor's source pair, whose positive from
    another identity.

    For packed labels (:func:`pair_labels`), a triplet ``(a, p, n)`` is kept when

    * ``cls[p] == cls[a]``, ``p != a`` and, with ``cross_identity``, ``group[p] !=
      group[a]`` (positives across identities);
    * ``cls[n] != cls[a]`` and ``pair[n] == pair[a] != 0`` (the negative is the real clip a
      fake was made from, or a fake made from the real anchor);

    and then filtered by ``type_of_triplets`` exactly as PML's ``TripletMarginMiner`` does
    (``margin`` on ``d(a, n) - d(a, p)``, with the miner's ``distance``; default PML's
    ``LpDistance`` on normalised embeddings). An anchor with no paired negative in the
    batch takes part in no triplet: batches should hold both sides of some pairs.

    Parameters
    ----------
    margin : float
        Margin of the ``type_of_triplets`` filter.
    type_of_triplets : {"all", "hard", "semihard", "easy"}
        ``"all"``: every triplet violating the margin; ``"hard"``/``"semihard"``: those
        with the negative closer / farther than the positive; ``"easy"``: the rest.
    cross_identity : bool
        Take positives only from other identity groups.
    max_triplets : int or None
        Keep at most this many triplets, drawn at random (torch's global generator) without
        replacement; None keeps all.
    **kwargs
        Passed to PML's ``BaseMiner`` (e.g. ``distance``).

    Raises
    ------
    ValueError
        From ``forward``, when no label carries a pair (labels were not packed).
    """

    def __init__(self, margin: float = 0.2, type_of_triplets: str = "all",
                 cross_identity: bool = True, max_triplets: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if type_of_triplets not in _TYPES:
            raise ValueError(f"type_of_triplets must be one of {_TYPES}, got "
                             f"{type_of_triplets!r}")
        if max_triplets is not None and int(max_triplets) < 1:
            raise ValueError(f"max_triplets must be >= 1 or None, got {max_triplets!r}")
        self.margin = float(margin)
        self.type_of_triplets = type_of_triplets
        self.cross_identity = bool(cross_identity)
        self.max_triplets = None if max_triplets is None else int(max_triplets)
        self.add_to_recordable_attributes(list_of_names=["margin"], is_stat=False)

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor, ref_emb: torch.Tensor,
             ref_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Index triplets into ``embeddings`` (anchors) and ``ref_emb`` (positives,
        negatives).

        Parameters
        ----------
        embeddings : torch.Tensor
            float (B, D).
        labels : torch.Tensor
            int64 (B,) packed labels.
        ref_emb, ref_labels : torch.Tensor
            float (R, D) and int64 (R,); PML passes ``embeddings``/``labels`` again when no
            reference set is given.

        Returns
        -------
        anchors, positives, negatives : torch.Tensor
            int64 (T,) each.
        """
        ca, ga, pa = unpack_pair_labels(labels.long())
        cr, gr, pr = unpack_pair_labels(ref_labels.long())
        if not bool((pa != 0).any()) and not bool((pr != 0).any()):
            raise ValueError("SourcePairedMiner: no label carries a source pair; pack the "
                             "labels with deepmetric.learn.paired.pair_labels(y, pairs, "
                             "groups)")
        pos = ca[:, None] == cr[None, :]
        if self.cross_identity:
            pos &= ga[:, None] != gr[None, :]
        if ref_emb is embeddings:  # PML hands the batch itself when no reference set is given
            pos.fill_diagonal_(False)
        neg = (ca[:, None] != cr[None, :]) & (pa[:, None] == pr[None, :]) & (pa[:, None] != 0)
        a, p, n = _combine(pos, neg)
        if len(a):
            a, p, n = self._filter(embeddings, ref_emb, a, p, n)
        if self.max_triplets is not None and len(a) > self.max_triplets:
            keep = torch.randperm(len(a), device=a.device)[:self.max_triplets]
            a, p, n = a[keep], p[keep], n[keep]
        return a, p, n

    def _filter(self, embeddings, ref_emb, a, p, n):
        """PML ``TripletMarginMiner``'s margin rule on the paired triplets."""
        mat = self.distance(embeddings, ref_emb)
        ap, an = mat[a, p], mat[a, n]
        margin = ap - an if self.distance.is_inverted else an - ap
        if self.type_of_triplets == "easy":
            keep = margin > self.margin
        else:
            keep = margin <= self.margin
            if self.type_of_triplets == "hard":
                keep &= margin <= 0
            elif self.type_of_triplets == "semihard":
                keep &= margin > 0
        return a[keep], p[keep], n[keep]


def _combine(pos: torch.Tensor, neg: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every ``(a, p, n)`` with ``pos[a, p]`` and ``neg[a, n]``, without a (B, R, R) mask:
    each anchor's positive pairs repeated once per negative of that anchor (O(T) memory)."""
    ap = pos.nonzero()
    an = neg.nonzero()  # sorted by anchor
    n_neg = neg.sum(1)
    reps = n_neg[ap[:, 0]]
    total = int(reps.sum())
    if total == 0:
        empty = torch.zeros(0, dtype=torch.long, device=pos.device)
        return empty, empty.clone(), empty.clone()
    a = ap[:, 0].repeat_interleave(reps)
    p = ap[:, 1].repeat_interleave(reps)
    first_neg = torch.cumsum(n_neg, 0) - n_neg  # where each anchor's negatives start in an
    start_of_pair = torch.cumsum(reps, 0) - reps
    offset = torch.arange(total, device=pos.device) - start_of_pair.repeat_interleave(reps)
    n = an[first_neg[a] + offset, 1]
    return a, p, n
