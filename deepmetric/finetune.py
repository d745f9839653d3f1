"""Fine-tuning: end-to-end metric learning on face crops, through the last FaceNet blocks.

:class:`FaceNetFineTuner` is a scikit-learn transformer whose input is face *crops* and whose
output is features of a fine-tuned InceptionResnetV1. It trains the blocks from ``start``
to the end of the network (``start="repeat_3"``: ``repeat_3``, ``block8`` and the
bottleneck; ``"conv2d_1a"``: the whole network) with one of three losses:

* ``"triplet"``: the semi-hard triplet margin loss of :mod:`deepmetric.learn.mining` on the
  L2-normalised 512-d embedding (real vs fake as the two classes), the method's own loss
  taken into the backbone;
* ``"bce"``: binary cross-entropy of a linear real/fake logit on the embedding;
* ``"focal"``: the focal loss of that logit (``torchvision.ops.sigmoid_focal_loss``).

The blocks before ``start`` stay frozen, so their output (e.g. ``mixed_7a``'s 1792×3×3
map for ``start="repeat_3"``) is computed once per crop and kept in memory, keyed by the
crop's bytes: cross-validation folds over the same crops reuse it, and training the last
blocks is cheap enough for a CPU. Batch normalisation keeps the pretrained statistics
(the converted weights fold it into the convolutions), dropout is off.

    Pipeline([("ft", FaceNetFineTuner(loss="triplet")), ("clf", LogisticRegression())])
    pipe.fit(crops, y)        # crops: uint8 (N, 160, 160, 3), or flattened (N, 76800)

torch is imported lazily, inside ``fit``/``transform``.
"""

from __future__ import annotations

import hashlib
import numbers
from collections import OrderedDict
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from deepmetric.device import torch_device
from deepmetric.params import Interval, Options, validate_params

__all__ = ["FaceNetFineTuner", "BLOCKS"]

#: InceptionResnetV1's blocks in forward order (``start`` must be one of them).
BLOCKS = ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a",
          "conv2d_4b", "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8")
_LOSSES = ("triplet", "bce", "focal")
_OUTPUTS = ("embedding", "avgpool_1a")

# frozen-prefix outputs per (weights, start, crop bytes); bounded (see max_memo_mb)
_MEMO: OrderedDict[tuple, np.ndarray] = OrderedDict()
_MEMO_BYTES = [0]


class FaceNetFineTuner(TransformerMixin, BaseEstimator):
    """Fine-tune the last blocks of FaceNet on real/fake face crops.

    Parameters
    ----------
    start : str
        First trained block (one of :data:`BLOCKS`); everything before it stays frozen.
    loss : {"triplet", "bce", "focal"}
        Training loss (see the module docstring).
    output : {"embedding", "avgpool_1a"}
        What :meth:`transform` returns: the L2-normalised 512-d embedding or the 1792-d
        pool before the bottleneck.
    epochs : int
        Passes over the training crops.
    batch_size : int
        Crops per step; batches are stratified so both classes are in each.
    lr : float
        AdamW learning rate of the backbone blocks (the logit of ``bce``/``focal`` uses
        10× this).
    weight_decay : float
        AdamW weight decay.
    margin : float
        Triplet margin (``loss="triplet"``).
    focal_gamma : float
        Focusing parameter (``loss="focal"``); ``alpha`` is the real-class share, so the
        classes weigh equally.
    hflip : bool
        Train on randomly mirrored crops too (the frozen prefix is then computed for both
        orientations).
    pretrained, weights_path : str
        Starting weights, as for :class:`deepmetric.FaceEmbedder`.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:i]"``.
    random_state : int
        Seed of the batch order, the flips and the logit's initialisation.
    max_memo_mb : int
        Memory bound of the frozen-prefix memo shared by all instances (0 disables it).

    Attributes
    ----------
    state_dict_ : dict of str to numpy.ndarray
        Fine-tuned weights of the trained blocks (plain arrays: a model file stores them as
        data, and the network is rebuilt from them on first use).
    history_ : list of float
        Mean training loss of each epoch.
    n_features_out_ : int
        512 or 1792.
    """

    _parameter_constraints: dict = {
        "start": [Options(BLOCKS)],
        "loss": [Options(_LOSSES)],
        "output": [Options(_OUTPUTS)],
        "epochs": [Interval(numbers.Integral, 0, None)],
        "batch_size": [Interval(numbers.Integral, 2, None)],
        "lr": [Interval(numbers.Real, 0, None, "neither")],
        "weight_decay": [Interval(numbers.Real, 0, None)],
        "margin": [Interval(numbers.Real, 0, None, "neither")],
        "focal_gamma": [Interval(numbers.Real, 0, None)],
        "hflip": [bool],
        "pretrained": [str],
        "weights_path": [None, str],
        "device": [str],
        "random_state": [numbers.Integral],
        "max_memo_mb": [Interval(numbers.Real, 0, None)],
    }

    def __init__(self, start: str = "repeat_3", loss: str = "triplet",
                 output: str = "embedding", epochs: int = 10, batch_size: int = 128,
                 lr: float = 1e-4, weight_decay: float = 1e-4, margin: float = 0.2,
                 focal_gamma: float = 2.0, hflip: bool = True,
                 pretrained: str = "casia-webface", weights_path: str | None = None,
                 device: str = "auto", random_state: int = 0, max_memo_mb: int = 1024):
        self.start = start
        self.loss = loss
        self.output = output
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.margin = margin
        self.focal_gamma = focal_gamma
        self.hflip = hflip
        self.pretrained = pretrained
        self.weights_path = weights_path
        self.device = device
        self.random_state = random_state
        self.max_memo_mb = max_memo_mb

    # -- sklearn API ----------------------------------------------------------------------
    def fit(self, X: Any, y: Any, groups: Any = None) -> FaceNetFineTuner:
        """Train the blocks from ``start`` on.

        Parameters
        ----------
        X : array-like, uint8, shape (N, 160, 160, 3) or (N, 76800)
            RGB face crops (as :class:`deepmetric.FaceDetector` makes them).
        y : array-like, shape (N,)
            Binary labels (1 = fake).
        groups : ignored
            Accepted so the step composes with the triplet projector's fit parameters.

        Returns
        -------
        self
        """
        import torch
        import torch.nn.functional as F

        from deepmetric.learn.mining import SemiHardTripletLoss

        validate_params(self)
        crops = _as_crops(X)
        y = np.asarray(y)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2 or len(y) != len(crops):
            raise ValueError("FaceNetFineTuner needs crops of two classes with one label each; "
                             f"got {len(crops)} crops, {len(y)} labels, classes {self.classes_}")
        yb = (y == self.classes_[1]).astype(np.int64)
        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)
        dev = torch_device(self.device)

        model = self._model(dev)
        suffix = self._suffix(model)
        pre = self._prefix_maps(model, crops, dev, flip=False)
        pre_f = self._prefix_maps(model, crops, dev, flip=True) if self.hflip else None
        head = torch.nn.Linear(512, 1).to(dev)
        params = [{"params": [p for m in suffix.values() for p in m.parameters()],
                   "lr": self.lr}]
        if self.loss != "triplet":
            params.append({"params": head.parameters(), "lr": 10 * self.lr})
        opt = torch.optim.AdamW(params, weight_decay=self.weight_decay)
        triplet = SemiHardTripletLoss(self.margin)
        alpha = float(1.0 - yb.mean())  # weight of the positive (fake) class in focal loss
        for m in suffix.values():
            m.eval()  # pretrained BN statistics, no dropout
            for p in m.parameters():
                p.requires_grad_(True)
        self.history_ = []
        for _ in range(int(self.epochs)):
            total, n = 0.0, 0
            for idx in _stratified_batches(yb, int(self.batch_size), rng):
                x = pre[idx]
                if pre_f is not None:
                    flip = rng.random(len(idx)) < 0.5
                    x = np.where(flip[:, None, None, None], pre_f[idx], x)
                xt = torch.from_numpy(x).to(dev)
                yt = torch.from_numpy(yb[idx]).to(dev)
                emb = _forward_suffix(model, suffix, xt, "embedding")
                if self.loss == "triplet":
                    loss = triplet(emb, yt)
                else:
                    logit = head(emb).squeeze(1)
                    if self.loss == "bce":
                        loss = F.binary_cross_entropy_with_logits(logit, yt.float())
                    else:
                        from torchvision.ops import sigmoid_focal_loss

                        loss = sigmoid_focal_loss(logit, yt.float(), alpha=alpha,
                                                  gamma=self.focal_gamma, reduction="mean")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                n += len(idx)
            self.history_.append(total / max(n, 1))
        self.state_dict_ = {f"{name}.{k}": v.detach().cpu().numpy().copy()
                            for name, m in suffix.items() for k, v in m.state_dict().items()}
        self.n_features_out_ = 512 if self.output == "embedding" else 1792
        self._net = None
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Features of the fine-tuned network.

        Parameters
        ----------
        X : array-like, uint8, shape (N, 160, 160, 3) or (N, 76800)

        Returns
        -------
        numpy.ndarray
            float32 (N, 512) L2-normalised embeddings or (N, 1792) pooled features.
        """
        import torch

        check_is_fitted(self, "state_dict_")
        crops = _as_crops(X)
        dev = torch_device(self.device)
        model = self._fitted_model(dev)
        suffix = self._suffix(model)
        pre = self._prefix_maps(model, crops, dev, flip=False)
        out = []
        with torch.inference_mode():
            for i in range(0, len(pre), 256):
                xt = torch.from_numpy(pre[i:i + 256]).to(dev)
                out.append(_forward_suffix(model, suffix, xt, self.output).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.n_features_out_), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_net", None)
        return state

    # -- internals ------------------------------------------------------------------------
    def _model(self, dev):
        from deepmetric.features.backbones.weights import load_facenet

        return load_facenet(self.pretrained, self.weights_path).to(dev).eval()

    def _fitted_model(self, dev):
        import torch

        net = getattr(self, "_net", None)
        if net is None:
            net = self._model(dev)
            # arrays; tuners pickled by earlier versions hold tensors (as_tensor keeps them)
            net.load_state_dict({k: torch.as_tensor(v) for k, v in self.state_dict_.items()},
                                strict=False)
            self._net = net.eval()
        return self._net

    def _suffix(self, model) -> dict:
        i = BLOCKS.index(self.start)
        names = list(BLOCKS[i:]) + ["last_linear", "last_bn"]
        return {n: model.get_submodule(n) for n in names}

    def _prefix_maps(self, model, crops: np.ndarray, dev, flip: bool) -> np.ndarray:
        """float32 (N, C, h, w): the frozen blocks' output for each crop (memoised)."""
        import torch

        from deepmetric.features.backbones.facenet import standardize_crops

        i = BLOCKS.index(self.start)
        prefix = [model.get_submodule(n) for n in BLOCKS[:i]]
        wkey = (self.pretrained, self.weights_path, self.start, flip)
        keys = [wkey + (hashlib.sha1(c.tobytes()).hexdigest(),) for c in crops]
        todo = [k for k, key in enumerate(keys) if key not in _MEMO]
        if todo:
            maps = []
            with torch.inference_mode():
                for j in range(0, len(todo), 64):
                    c = crops[todo[j:j + 64]]
                    if flip:
                        c = c[:, :, ::-1]
                    x = standardize_crops(c).to(dev)
                    for m in prefix:
                        x = m(x)
                    maps.append(x.float().cpu().numpy())
            maps = np.concatenate(maps)
            fresh = {keys[k]: maps[j] for j, k in enumerate(todo)}
        else:
            fresh = {}
        out = np.stack([fresh[key] if key in fresh else _MEMO[key] for key in keys])
        limit = int(self.max_memo_mb) * 2**20
        for key, arr in fresh.items():
            if arr.nbytes + _MEMO_BYTES[0] > limit:
                break
            _MEMO[key] = arr
            _MEMO_BYTES[0] += arr.nbytes
        return np.ascontiguousarray(out, dtype=np.float32)


def _forward_suffix(model, suffix: dict, x, output: str):
    """Run the trained blocks (``InceptionResnetV1.forward`` from ``start`` on)."""
    import torch.nn.functional as F

    for name, m in suffix.items():
        if name == "last_linear":
            break
        x = m(x)
    x = model.avgpool_1a(x).flatten(1)
    if output == "avgpool_1a":
        return x
    x = suffix["last_bn"](suffix["last_linear"](x))
    return F.normalize(x, p=2, dim=1)


def _stratified_batches(y: np.ndarray, batch_size: int, rng: np.random.Generator):
    """Shuffled batches with each class in proportion (at least one of each when possible)."""
    pos, neg = rng.permutation(np.flatnonzero(y == 1)), rng.permutation(np.flatnonzero(y == 0))
    n_batches = max(1, int(np.ceil(len(y) / batch_size)))
    for p, q in zip(np.array_split(pos, n_batches), np.array_split(neg, n_batches)):
        idx = np.concatenate([p, q])
        if len(idx) >= 2:
            yield rng.permutation(idx)


def _as_crops(X: Any) -> np.ndarray:
    a = np.asarray(X)
    if a.ndim == 2 and a.shape[1] % 3 == 0:
        side = int(round(np.sqrt(a.shape[1] // 3)))
        if side * side * 3 == a.shape[1]:
            a = a.reshape(len(a), side, side, 3)
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError("FaceNetFineTuner takes RGB face crops (N, H, W, 3) or their "
                         f"flattened rows (N, H*W*3); got shape {a.shape}")
    if a.dtype != np.uint8:
        if np.nanmin(a) < 0 or np.nanmax(a) > 255:
            raise ValueError("crops must be uint8 RGB in [0, 255]")
        a = a.astype(np.uint8)
    return a



