"""Any timm backbone on the face crops, from local weights (offline by default).

Foundation backbones are the strongest cross-dataset deepfake detectors of recent years
(CLIP ViT-L/14, DINOv2; EfficientNet-B4 for the classic baselines), and `timm
<https://github.com/huggingface/pytorch-image-models>`_ builds them all by name. This module
runs one of them on the same 160×160 face crops FaceNet sees, as an
:class:`~deepmetric.features.extract.Extractor` backbone: its blocks are cached beside
FaceNet's, and its settings (model name, a digest of its weights, taps, input size) join
the cache key.

Weights come from, in order:

1. ``weights``: a local state dict (``.pth``/``.pt``/``.bin``, read with
   ``weights_only=True``, or ``.safetensors``) in timm's layout for ``name``;
2. otherwise the model's pretrained weights in the user's own Hugging Face hub cache
   (``timm/<name>``, looked up on disk only);
3. a download from the hub only when asked (``allow_download=True`` or
   ``DEEPMETRIC_ALLOW_DOWNLOAD=1``; never with ``DEEPMETRIC_OFFLINE=1``), the rule of
   :func:`deepmetric.features.backbones.weights.downloads_allowed`.

The file must match the architecture exactly (every tensor, by name and shape; a classifier
head is ignored): anything else is refused with
:class:`~deepmetric.features.backbones.weights.WeightsError` naming the file. The weights are
identified by :func:`~deepmetric.features.backbones.weights.state_dict_digest` (their values,
not the path), so two files holding other weights never share cached features, and a model
file that recorded one digest refuses to run with other weights.

Blocks (named ``<prefix>/...``, ``prefix`` defaulting to the model name):

- ``<prefix>/pool``: the pre-logits pooled features (``forward_head(..., pre_logits=True)``,
  e.g. 512-d for ``resnet10t``, 1024-d for a ViT-L);
- ``<prefix>/<k>``: the output of the ``k``-th intermediate block
  (``forward_intermediates``), mean- and std-pooled over space like
  :func:`deepmetric.features.backbones.facenet.pool_activations` (a ViT's tokens as a map).

Preprocessing: uint8 RGB crops → [0, 1] → bilinear (antialiased) resize to the model's input
size → normalised with the model's own mean and std (``timm.data.resolve_model_data_config``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from deepmetric.device import resolve_device

__all__ = ["TimmEmbedder", "load_timm_model", "hub_cached_weights"]

#: What a hub repository of timm weights names its file, in timm's order of preference.
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def hub_cached_weights(name: str, allow_download: bool | None = None) -> Path:
    """The pretrained weights of a timm model from the local Hugging Face hub cache.

    Parameters
    ----------
    name : str
        timm model name with its pretrained tag, e.g. ``"vit_large_patch14_dinov2.lvd142m"``.
    allow_download : bool, optional
        Fetch the file when it is not cached (see
        :func:`~deepmetric.features.backbones.weights.downloads_allowed`; off by default).

    Returns
    -------
    pathlib.Path
        The cached (or, when allowed, downloaded) weights file.

    Raises
    ------
    FileNotFoundError
        The model has no hub weights, or they are not in the cache and downloads are off.
    """
    import timm
    from huggingface_hub import try_to_load_from_cache

    from deepmetric.features.backbones.weights import downloads_allowed

    cfg = timm.models.get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise FileNotFoundError(f"timm model {name!r} names no Hugging Face hub weights: pass "
                                f"weights=<a local state dict file>")
    files = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else list(_HUB_FILES)
    for f in files:
        hit = try_to_load_from_cache(repo, f)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    if not downloads_allowed(allow_download):
        raise FileNotFoundError(
            f"the weights of timm model {name!r} ({repo}: {' or '.join(files)}) are not in the "
            f"local Hugging Face hub cache and downloads are off: pass weights=<file>, or "
            f"allow_download=True / DEEPMETRIC_ALLOW_DOWNLOAD=1 to fetch them")
    from huggingface_hub import hf_hub_download

    err: Exception | None = None
    for f in files:
        try:
            return Path(hf_hub_download(repo, f))
        except Exception as exc:  # noqa: BLE001 — try the next name, report the last
            err = exc
    raise FileNotFoundError(f"could not download {repo} ({' or '.join(files)}): {err}")


def load_timm_model(name: str, weights: str | os.PathLike,
                    model_kwargs: dict | None = None) -> tuple[Any, str]:
    """A timm model with the weights of a local file, head removed, in eval mode.

    Parameters
    ----------
    name : str
        timm model name (``timm.list_models()``; a ``.tag`` suffix is allowed).
    weights : path-like
        A state dict in timm's layout for ``name``: every tensor of the model, by name and
        shape (the classifier's may be absent or of another size; they are dropped).
        Wrappers timm itself reads (``{"state_dict": ...}``, ``module.`` prefixes) are fine.
    model_kwargs : dict, optional
        Passed to ``timm.create_model`` (e.g. ``{"dynamic_img_size": True}`` to run a ViT
        at another input size than its position embeddings were trained for).

    Returns
    -------
    model : torch.nn.Module
        On the CPU, ``num_classes=0`` (``forward_head(pre_logits=True)`` gives the pooled
        features).
    digest : str
        :func:`~deepmetric.features.backbones.weights.state_dict_digest` of the loaded weights
        (without the classifier).

    Raises
    ------
    FileNotFoundError
        ``weights`` is not a file.
    deepmetric.features.backbones.weights.WeightsError
        The file cannot be read as a state dict, or does not fit the architecture (missing,
        unexpected or differently shaped tensors, listed by name); the message names it.
    """
    import timm
    import torch

    from deepmetric.features.backbones.weights import WeightsError, state_dict_digest

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: timm weights file not found")
    try:
        sd = timm.models.load_state_dict(str(path), weights_only=True)
    except Exception as exc:  # noqa: BLE001 — name the file and the reason
        raise WeightsError(f"{path}: not a loadable state dict ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    model = timm.create_model(name, pretrained=False, **(model_kwargs or {}))
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    model.reset_classifier(0)

    def is_head(key: str) -> bool:
        return any(key == h or key.startswith(h + ".") for h in heads)

    sd = {k: v for k, v in sd.items() if not is_head(k)}
    want = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    shapes = sorted(k for k in set(want) & set(sd) if tuple(sd[k].shape) != tuple(want[k]))
    if missing or unexpected or shapes:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        why = "; ".join(f"{what}: {few(keys)}" for what, keys in (
            ("missing", missing), ("unexpected", unexpected),
            ("other shape", [f"{k} {tuple(sd[k].shape)} vs {tuple(want[k])}" for k in shapes]))
            if keys)
        raise WeightsError(f"{path}: not a state dict of timm model {name!r} ({why})")
    model.load_state_dict(sd, strict=True)
    return model.eval(), state_dict_digest(model.state_dict())


class TimmEmbedder:
    """Pooled features of a timm backbone on face crops.

    Parameters
    ----------
    name : str
        timm model name, e.g. ``"resnet10t"``, ``"vit_large_patch14_clip_224.openai"``,
        ``"vit_large_patch14_dinov2.lvd142m"``, ``"tf_efficientnet_b4.ns_jft_in1k"``.
    weights : path-like, optional
        A local state dict (see :func:`load_timm_model`). None: the model's pretrained
        weights from the local Hugging Face hub cache (:func:`hub_cached_weights`).
    layers : sequence of str
        ``"pool"`` (pre-logits pooled features) and/or indices of intermediate blocks
        (``"2"``; ``forward_intermediates``), each mean- and std-pooled over space.
    image_size : int, optional
        Side the crops are resized to; None: the model's own input size.
    prefix : str, optional
        Block-name prefix (default: ``name``).
    model_kwargs : dict, optional
        Passed to ``timm.create_model``; e.g. ``{"dynamic_img_size": True}`` with
        ``image_size=224`` runs DINOv2 (trained at 518) at 224.
    flip_average : bool
        Average every output over the crop and its mirror image.
    batch_size : int
        Crops per forward pass.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:i]"``.
    allow_download : bool, optional
        Let a missing hub-cache file be downloaded (default: ``DEEPMETRIC_ALLOW_DOWNLOAD``,
        off). Not a setting: it never changes the features.

    Attributes
    ----------
    weights_digest : str or None
        The digest of the weights in use, set on first load. A copy loaded from a model
        file keeps the digest it was saved with and refuses other weights.
    """

    def __init__(self, name: str, weights: str | os.PathLike | None = None,
                 layers: Sequence[str] = ("pool",), image_size: int | None = None,
                 prefix: str | None = None, model_kwargs: dict | None = None,
                 flip_average: bool = False, batch_size: int = 32,
                 device: str = "auto", allow_download: bool | None = None):
        if not name:
            raise ValueError("TimmEmbedder needs a timm model name (backbone.name=...)")
        self.name = str(name)
        self.weights = None if weights is None else os.path.abspath(weights)
        self.layers = [str(n) for n in layers]
        bad = [n for n in self.layers if n != "pool" and not n.isdigit()]
        if bad or not self.layers:
            raise ValueError(f"TimmEmbedder layers must be 'pool' or block indices ('0', "
                             f"'1', ...); got {list(layers)}")
        self.image_size = None if image_size is None else int(image_size)
        self.prefix = prefix
        self.model_kwargs = dict(model_kwargs or {})
        self.flip_average = bool(flip_average)
        self.batch_size = int(batch_size)
        self.device = device
        self.allow_download = allow_download
        self.weights_digest: str | None = None
        self.weights_file: str | None = None  # the file read (weights, or the hub cache's)
        self._model = None

    # -- settings -------------------------------------------------------------------------
    def settings(self) -> dict:
        """Everything that changes the output (cache keys); loads the weights to digest
        them."""
        self.model  # noqa: B018 — sets weights_digest
        return {"embedder": "timm", "name": self.name, "weights_digest": self.weights_digest,
                "layers": sorted(self.layers), "image_size": self._input_size(),
                "flip_average": self.flip_average,
                **({"model_kwargs": self.model_kwargs} if self.model_kwargs else {})}

    def provenance(self) -> dict:
        """What ran, for metrics files and model cards: the settings plus the weights file
        and the timm version."""
        import timm

        return {**self.settings(), "weights": self.weights_file, "timm": timm.__version__,
                "feature_names": self.feature_names()}

    def feature_names(self) -> list[str]:
        """Names of the blocks :meth:`embed` returns."""
        p = self.prefix or self.name
        return [f"{p}/{n}" for n in self.layers]

    # -- the network ----------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The timm model with its weights, head removed, in eval mode (loaded once)."""
        if self._model is None:
            from deepmetric.features.backbones.weights import WeightsError

            path = Path(self.weights) if self.weights else hub_cached_weights(
                self.name, self.allow_download)
            model, digest = load_timm_model(self.name, path, self.model_kwargs)
            if self.weights_digest is not None and digest != self.weights_digest:
                raise WeightsError(f"{path}: holds weights {digest[:12]}…, but this embedder "
                                   f"was saved with {self.weights_digest[:12]}… (other "
                                   f"weights give other features)")
            taps = [int(n) for n in self.layers if n != "pool"]
            if taps:
                n_blocks = len(model.feature_info) if hasattr(model, "feature_info") else None
                try:
                    model.prune_intermediate_layers  # noqa: B018 — supports intermediates
                except AttributeError:
                    raise ValueError(f"timm model {self.name!r} has no forward_intermediates:"
                                     f" use layers=['pool']") from None
                if n_blocks is not None and max(taps) >= n_blocks:
                    raise ValueError(f"timm model {self.name!r}: block index {max(taps)} out "
                                     f"of range (it has {n_blocks} feature blocks)")
            self.weights_digest, self.weights_file = digest, str(path)
            self._model = model.to(resolve_device(self.device))
        return self._model

    def _input_size(self) -> int:
        if self.image_size is not None:
            return self.image_size
        import timm

        return int(timm.data.resolve_model_data_config(self.model)["input_size"][-1])

    def preprocess(self, crops: np.ndarray) -> Any:
        """Face crops as the network's input.

        Parameters
        ----------
        crops : numpy.ndarray
            uint8 (N, H, W, 3) RGB.

        Returns
        -------
        torch.Tensor
            float32 (N, 3, S, S) on the CPU, S = the input size, normalised with the
            model's mean and std.
        """
        import timm
        import torch

        from deepmetric.features.backbones.base import checked_crops

        cfg = timm.data.resolve_model_data_config(self.model)
        mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, 3, 1, 1)
        x = torch.from_numpy(np.ascontiguousarray(checked_crops(crops)))
        x = x.permute(0, 3, 1, 2).float() / 255.0
        s = self._input_size()
        if x.shape[-2:] != (s, s):
            x = torch.nn.functional.interpolate(x, size=(s, s), mode="bilinear",
                                                align_corners=False, antialias=True)
        return (x - mean) / std

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_model"] = None
        return state

    def embed(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Embed face crops.

        Parameters
        ----------
        crops : numpy.ndarray
            uint8 (N, H, W, 3) RGB face crops.

        Returns
        -------
        dict of str to numpy.ndarray
            One float32 (N, F) array per block of :meth:`feature_names`.
        """
        import torch

        from deepmetric.features.backbones.base import checked_crops, mean_of_views, with_mirrors
        from deepmetric.features.backbones.facenet import pool_activations

        crops = checked_crops(crops)
        names = self.feature_names()
        if len(crops) == 0:
            return {n: np.zeros((0, 0), np.float32) for n in names}
        model = self.model
        dev = next(model.parameters()).device
        taps = sorted({int(n) for n in self.layers if n != "pool"})
        out: dict[str, list] = {n: [] for n in names}
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch_size):
                x = self.preprocess(crops[i:i + self.batch_size]).to(dev)
                if self.flip_average:
                    x = with_mirrors(x)
                got: dict[str, Any] = {}
                if taps:
                    feats, inters = model.forward_intermediates(x, indices=taps)
                    got.update((k, pool_activations(v)) for k, v in zip(taps, inters))
                else:
                    feats = model.forward_features(x)
                got["pool"] = model.forward_head(feats, pre_logits=True).float()
                for layer, n in zip(self.layers, names):
                    v = got[layer if layer == "pool" else int(layer)]
                    out[n].append((mean_of_views(v) if self.flip_average else v).cpu().numpy())
        return {n: np.concatenate(v).astype(np.float32, copy=False) for n, v in out.items()}
