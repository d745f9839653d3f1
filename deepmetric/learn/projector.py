"""Triplet projection head as a scikit-learn transformer.

:class:`TripletProjector` maps face embeddings (e.g. FaceNet 512-d) to an L2-normalised
``out_dim``-d space trained with the semi-hard triplet margin loss of
:mod:`deepmetric.learn.mining`, so that it can sit in front of any scikit-learn classifier::

    Pipeline([("proj", TripletProjector()), ("clf", RandomForestClassifier())])
    pipe.fit(X, y, proj__groups=video_or_identity_ids)

torch is imported lazily (inside ``fit``/``transform``), so importing this module is cheap.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from deepmetric.device import torch_device
from deepmetric.params import Check, Interval, Options, validate_params
from deepmetric.learn.network import BalancedBatches, build_trunk, embed_normalized
from deepmetric.model_selection import grouped_train_test_split

__all__ = ["TripletProjector"]

_TRANSFORM_BATCH = 8192


class TripletProjector(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """MLP projection trained with a semi-hard triplet margin loss (real vs fake).

    Parameters
    ----------
    hidden : tuple of int, default=(256, 256, 128)
        Widths of the hidden layers (Linear → [BatchNorm] → ReLU → [Dropout] each).
        ``()`` gives a linear projection.
    out_dim : int, default=64
        Output dimension; outputs are L2-normalised.
    margin : float, default=0.2
        Triplet margin (distances between unit vectors lie in [0, 2]).
    miner : {"semihard", "pml"}, default="semihard"
        ``"semihard"``: :class:`deepmetric.learn.mining.SemiHardTripletLoss` (O(B²) memory);
        ``"pml"``: pytorch-metric-learning's ``TripletMarginMiner("semihard")`` +
        ``TripletMarginLoss`` (same value, O(B³) memory). Used when ``loss`` is None.
    loss : torch loss module or None, default=None
        Any metric-learning loss called as ``loss(embeddings, labels)``, composed by its
        constructor: e.g. ``pytorch_metric_learning.losses.SupConLoss()``,
        ``ContrastiveLoss()``, or :class:`deepmetric.learn.losses.MinedLoss` (a PML loss
        with a PML miner). It is deep-copied in ``fit``; its own parameters, if any, are
        trained with the network. None: the semi-hard triplet loss chosen by ``miner``.
        Validation (early stopping) always uses the batch-all triplet loss at ``margin``.
        A model file (:mod:`deepmetric.modelfile`) keeps only the module's name (a str):
        the loaded projector transforms, and needs a loss module again to be refitted.
    batch_size : int, default=512
        Training batch size. When the training split has at most ``batch_size`` rows, each
        epoch is a single full batch (no sampling).
    m_per_class : int or None, default=None
        Samples per class in a class-balanced batch; ``None`` means ``batch_size // 2``.
        A batch holds ``m_per_class`` samples of each of ``min(n_classes, batch_size //
        m_per_class)`` classes. Must be >= 2.
    epochs : int, default=50
        Maximum number of epochs; an epoch is ``ceil(n_train / batch_len)`` batches.
    lr : float, default=1e-3
        Adam learning rate.
    weight_decay : float, default=0.0
        Adam weight decay.
    dropout : float, default=0.0
        Dropout probability after each hidden ReLU.
    batch_norm : bool, default=False
        Insert ``BatchNorm1d`` after each hidden Linear layer.
    validation_fraction : float, default=0.1
        Fraction held out for early stopping (0 disables validation). With ``groups`` the
        split is grouped (and stratified, via ``StratifiedGroupKFold``), so no group is on
        both sides; without, it is a stratified shuffle split. Validation is skipped, with
        a ``UserWarning``, when the split cannot hold two classes on each side.
    patience : int or None, default=10
        Stop after ``patience`` epochs without a decrease of the validation loss; ``None``
        never stops early. With validation, the weights of the best epoch are restored.
    standardize : bool, default=True
        Standardise inputs with the training mean/std (fitted in ``fit``).
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    random_state : int, RandomState or None, default=None
        Seeds weight init, dropout, batch sampling and the validation split. torch's global
        generator is forked and restored around ``fit``, so global RNG state is untouched.
        With an int, CPU fits are repeatable (two fits give identical ``transform``); CUDA
        kernels may still be non-deterministic.
    verbose : int, default=0
        ``>0`` prints one line per epoch.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str, shape (n_features_in_,)
        Only when ``X`` has string column names.
    classes_ : ndarray, shape (n_classes,)
        Labels seen in ``fit``.
    mean_, scale_ : ndarray of float64, shape (n_features_in_,)
        Standardisation (zeros / ones when ``standardize=False``).
    state_dict_ : dict[str, ndarray]
        Learned weights of the trunk as NumPy arrays (device-free, picklable).
    history_ : list of dict
        One dict per epoch: ``epoch`` (1-based), ``train_loss`` (mean semi-hard loss over the
        epoch's batches), ``val_loss`` (batch-all triplet loss on the validation split, see
        below; ``nan`` without validation), ``n_triplets`` (semi-hard triplets used in the
        epoch).
    best_epoch_ : int
        Epoch whose weights are kept (1-based): the best validation epoch, or the last epoch
        without validation.
    n_epochs_ : int
        Epochs actually run.

    Notes
    -----
    *Validation loss.* The semi-hard loss is a poor stopping criterion: a collapsed embedding
    has no semi-hard triplet and scores 0. ``val_loss`` is therefore the mean of
    ``relu(d_ap - d_an + margin)`` over *all* triplets of fixed validation batches
    (:func:`deepmetric.learn.mining.batch_all_triplet_loss`): 0 iff all triplets meet the margin,
    ``margin`` for a collapse.

    *Single class.* ``fit`` raises ``ValueError`` when ``y`` has fewer than 2 classes: there
    is no negative, so no triplet and nothing to learn.

    *Invalid input.* NaN or infinite values in ``X`` raise ``ValueError``.

    *Output dtype.* ``transform`` always returns float32.
    """

    loss: Any = None  # class default: projectors pickled before the loss slot existed

    def __init__(
        self,
        hidden: Sequence[int] = (256, 256, 128),
        out_dim: int = 64,
        margin: float = 0.2,
        miner: str = "semihard",
        loss: Any = None,
        batch_size: int = 512,
        m_per_class: int | None = None,
        epochs: int = 50,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        dropout: float = 0.0,
        batch_norm: bool = False,
        validation_fraction: float = 0.1,
        patience: int | None = 10,
        standardize: bool = True,
        device: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
    ):
        self.hidden = hidden
        self.out_dim = out_dim
        self.margin = margin
        self.miner = miner
        self.loss = loss
        self.batch_size = batch_size
        self.m_per_class = m_per_class
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.standardize = standardize
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ sklearn plumbing
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.transformer_tags.preserves_dtype = []  # always float32 out
        tags.input_tags.allow_nan = False
        return tags

    @property
    def _n_features_out(self) -> int:
        return int(self.out_dim)

    _parameter_constraints: dict = {
        "hidden": [Check(lambda h: not isinstance(h, str) and all(
            isinstance(w, numbers.Integral) and not isinstance(w, bool) and w >= 1
            for w in h), "a sequence of ints >= 1")],
        "out_dim": [Interval(numbers.Integral, 1, None)],
        "margin": [Interval(numbers.Real, 0, None, "neither")],
        "miner": [Options(("semihard", "pml"))],
        "loss": [None, Check(lambda v: not isinstance(v, str), "a loss module")],
        "batch_size": [Interval(numbers.Integral, 2, None)],
        "m_per_class": [None, Interval(numbers.Integral, 2, None)],
        "epochs": [Interval(numbers.Integral, 1, None)],
        "lr": [Interval(numbers.Real, 0, None, "neither")],
        "weight_decay": [Interval(numbers.Real, 0, None)],
        "dropout": [Interval(numbers.Real, 0, 1, "left")],
        "batch_norm": [bool],
        "validation_fraction": [Interval(numbers.Real, 0, 1, "left")],
        "patience": [None, Interval(numbers.Integral, 1, None)],
        "standardize": [bool],
        "device": [str],
        "random_state": [None, numbers.Integral, np.random.RandomState],
        "verbose": [numbers.Integral, bool],
    }

    def _validate_params(self) -> None:
        if isinstance(self.loss, str):  # a projector loaded from a model file
            raise ValueError(
                f"TripletProjector: invalid loss={self.loss!r}: the training loss of a "
                "projector loaded from a model file is not saved with it; set loss to a loss "
                "module (or None) to fit")
        validate_params(self)
        if self.m_per_class is not None and self.m_per_class > self.batch_size:
            raise ValueError(f"TripletProjector: invalid m_per_class={self.m_per_class!r}: "
                             f"expected at most batch_size ({self.batch_size})")

    # ------------------------------------------------------------------ validation split
    def _split(
        self, y: np.ndarray, groups: np.ndarray | None, seed: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        n = y.shape[0]
        all_idx = np.arange(n)
        vf = float(self.validation_fraction)
        if vf == 0:
            return all_idx, None
        if groups is not None:
            try:
                tr, va = grouped_train_test_split(y, groups, test_size=vf, random_state=seed)
            except ValueError as exc:
                warnings.warn(f"TripletProjector: validation disabled ({exc})", stacklevel=3)
                return all_idx, None
        else:
            from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

            n_val = math.ceil(vf * n)
            if n_val < 2 or n - n_val < 2:
                warnings.warn(
                    f"TripletProjector: validation disabled ({n} samples are too few for "
                    f"validation_fraction={vf})",
                    stacklevel=3,
                )
                return all_idx, None
            try:
                splitter = StratifiedShuffleSplit(1, test_size=n_val, random_state=seed)
                tr, va = next(splitter.split(np.zeros(n), y))
            except ValueError:
                splitter = ShuffleSplit(1, test_size=n_val, random_state=seed)
                tr, va = next(splitter.split(np.zeros(n)))

        def has_triplets(idx: np.ndarray) -> bool:
            _, counts = np.unique(y[idx], return_counts=True)
            return counts.size >= 2 and counts.max() >= 2

        if not (has_triplets(tr) and has_triplets(va)):
            warnings.warn(
                "TripletProjector: validation disabled (the training or validation split "
                "would lack a class or a positive pair)",
                stacklevel=3,
            )
            return all_idx, None
        return np.sort(tr), np.sort(va)

    # ------------------------------------------------------------------ fit / transform
    def fit(self, X: Any, y: Any, groups: Any = None, pairs: Any = None) -> "TripletProjector":
        """Train the projection.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features), float
            Input embeddings (NaN/inf raise ``ValueError``).
        y : array-like, shape (n_samples,)
            Class labels (e.g. 0 = real, 1 = fake); at least 2 classes.
        groups : array-like, shape (n_samples,), optional
            Group ids (video or identity) for a leak-free validation split. In a
            ``Pipeline``, pass it as ``proj__groups``.
        pairs : array-like, shape (n_samples,), optional
            Id of the real clip each row pairs with (a fake's original, a real clip's own;
            the manifest's ``pair_id``). Used only when the loss holds a
            :class:`~deepmetric.learn.paired.SourcePairedMiner`, which then gets labels
            packed by :func:`~deepmetric.learn.paired.pair_labels` (class, pair, group).

        Returns
        -------
        self
        """
        import torch

        from deepmetric.learn.mining import batch_all_triplet_loss, make_loss
        from deepmetric.learn.paired import loss_labels

        self._validate_params()
        X, y = validate_data(
            self, X, y, dtype=[np.float64, np.float32], ensure_min_samples=2, y_numeric=False
        )
        check_classification_targets(y)
        self.classes_, y_codes = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError(
                f"TripletProjector needs at least 2 classes in y, got 1 class "
                f"({self.classes_[0]!r}): a triplet needs a negative"
            )
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != (X.shape[0],):
                raise ValueError(
                    f"groups must have shape ({X.shape[0]},), got {groups.shape}"
                )

        rs = check_random_state(self.random_state)
        seed = int(rs.randint(np.iinfo(np.int32).max))
        rng = np.random.default_rng(seed)
        train_idx, val_idx = self._split(y_codes, groups, seed)

        if self.standardize:
            self.mean_ = X[train_idx].mean(axis=0).astype(np.float64)
            scale = X[train_idx].std(axis=0).astype(np.float64)
            scale[~(scale > np.finfo(np.float64).eps * 100)] = 1.0
            self.scale_ = scale
        else:
            self.mean_ = np.zeros(X.shape[1])
            self.scale_ = np.ones(X.shape[1])

        device = torch_device(self.device)
        xt = torch.tensor(self._standardized(X), device=device)
        yt = torch.tensor(y_codes, dtype=torch.int64, device=device)
        packed = loss_labels(self.loss, y_codes, groups, pairs)  # source-paired mining
        lt = None if packed is None else torch.tensor(packed, device=device)

        fork_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            self._train(xt, yt, train_idx, val_idx, rng, device, make_loss, batch_all_triplet_loss,
                        lt)
        return self

    def _standardized(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_).astype(np.float32)

    def _train(self, xt, yt, train_idx, val_idx, rng, device, make_loss, batch_all,
               lt=None) -> None:
        import torch

        hidden = [int(h) for h in self.hidden]
        net = build_trunk(
            xt.shape[1], hidden, int(self.out_dim), float(self.dropout), bool(self.batch_norm)
        ).to(device)
        if getattr(self, "loss", None) is None:  # models pickled before the slot have none
            loss_fn = make_loss(self.miner, float(self.margin))
        else:
            import copy

            loss_fn = copy.deepcopy(self.loss)
            if hasattr(loss_fn, "to"):
                loss_fn = loss_fn.to(device)
        params = list(net.parameters())
        if hasattr(loss_fn, "parameters"):
            params += list(loss_fn.parameters())
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

        bs = int(self.batch_size)
        m = bs // 2 if self.m_per_class is None else int(self.m_per_class)
        n_train = train_idx.size
        full_batch = n_train <= bs
        sampler = None if full_batch else BalancedBatches(yt.cpu().numpy()[train_idx], m, bs, rng)
        n_batches = 1 if full_batch else max(1, math.ceil(n_train / sampler.batch_len))
        train_idx_t = torch.as_tensor(train_idx, device=device)

        val_batches = []
        if val_idx is not None:
            perm = rng.permutation(val_idx)
            val_batches = [
                torch.as_tensor(perm[i : i + bs], device=device) for i in range(0, perm.size, bs)
            ]

        def snapshot() -> dict[str, np.ndarray]:
            return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}

        self.history_ = []
        best = math.inf
        best_state, best_epoch, stale = None, 0, 0
        for epoch in range(1, int(self.epochs) + 1):
            net.train()
            losses, n_trip = [], 0
            for _ in range(n_batches):
                if full_batch:
                    idx = train_idx_t
                else:
                    idx = train_idx_t[torch.as_tensor(sampler.batch(), device=device)]
                emb = embed_normalized(net, xt[idx])
                loss = loss_fn(emb, (yt if lt is None else lt)[idx])
                if not torch.isfinite(loss):
                    raise RuntimeError(
                        f"TripletProjector: non-finite training loss at epoch {epoch}; "
                        f"lower lr (={self.lr})"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                n_trip += int(getattr(loss_fn, "last_n_triplets", 0))

            val_loss = math.nan
            if val_batches:
                net.eval()
                total, count = 0.0, 0
                with torch.no_grad():
                    for vidx in val_batches:
                        v, c = batch_all(embed_normalized(net, xt[vidx]), yt[vidx],
                                         float(self.margin))
                        if c:
                            total += float(v) * c
                            count += c
                val_loss = total / count if count else math.nan

            self.history_.append(
                {
                    "epoch": epoch,
                    "train_loss": float(np.mean(losses)),
                    "val_loss": val_loss,
                    "n_triplets": n_trip,
                }
            )
            if self.verbose:
                print(
                    f"[TripletProjector] epoch {epoch:3d} train_loss={np.mean(losses):.4f} "
                    f"val_loss={val_loss:.4f} n_triplets={n_trip}"
                )
            if val_batches and val_loss < best:
                best, best_epoch, stale = val_loss, epoch, 0
                best_state = snapshot()
            elif val_batches:
                stale += 1
                if self.patience is not None and stale >= int(self.patience):
                    break

        self.n_epochs_ = len(self.history_)
        if best_state is None:
            best_state, best_epoch = snapshot(), self.n_epochs_
        self.state_dict_ = best_state
        self.best_epoch_ = best_epoch

    def build_network(self, device: str = "cpu") -> Any:
        """The fitted trunk as a fresh ``torch.nn.Sequential`` in eval mode.

        It maps *standardised* inputs ``(X - mean_) / scale_`` (float32, shape (N,
        n_features_in_)) to unnormalised outputs; ``transform`` additionally L2-normalises.
        """
        import torch

        check_is_fitted(self, "state_dict_")
        with torch.device("meta"):  # no random init: the global RNG stays untouched
            net = build_trunk(
                self.n_features_in_,
                [int(h) for h in self.hidden],
                int(self.out_dim),
                float(self.dropout),
                bool(self.batch_norm),
            )
        state = {k: torch.from_numpy(np.array(v)) for k, v in self.state_dict_.items()}
        net.load_state_dict(state, assign=True)
        return net.to(torch_device(device)).eval()

    def transform(self, X: Any) -> np.ndarray:
        """Project ``X``.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features_in_), float

        Returns
        -------
        ndarray of float32, shape (n_samples, out_dim)
            L2-normalised rows.
        """
        import torch

        check_is_fitted(self, "state_dict_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        device = torch_device(self.device)
        net = self.build_network(device)
        xs = self._standardized(X)
        out = np.empty((xs.shape[0], int(self.out_dim)), dtype=np.float32)
        with torch.no_grad():
            for i in range(0, xs.shape[0], _TRANSFORM_BATCH):
                chunk = torch.from_numpy(xs[i : i + _TRANSFORM_BATCH]).to(device)
                out[i : i + _TRANSFORM_BATCH] = embed_normalized(net, chunk).cpu().numpy()
        return out
