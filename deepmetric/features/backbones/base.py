"""The interface every backbone implements, and the crop helpers they share.

A backbone turns a stack of face crops into named feature blocks. The extractor
(:class:`deepmetric.features.extract.Extractor`) runs FaceNet and any further backbones on the
same crops; their blocks are cached side by side and their settings join the cache key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["Backbone", "checked_crops", "with_mirrors", "mean_of_views"]


@runtime_checkable
class Backbone(Protocol):
    """A network (or model) run on face crops, giving named float32 feature blocks.

    Implemented by :class:`~deepmetric.features.backbones.facenet.FaceEmbedder` (FaceNet),
    :class:`~deepmetric.features.backbones.mobilenet.ImageNetEmbedder` (MobileNetV2) and
    :class:`~deepmetric.features.backbones.facemesh.FaceMeshEmbedder` (FaceMesh geometry).

    A backbone loads its network lazily (on first :meth:`embed`), so building one is
    cheap, and it pickles without the network (``__getstate__`` drops it).

    Methods
    -------
    settings() -> dict
        JSON-serialisable description of everything that changes the output (the network,
        its weights file, the tapped layers, test-time augmentation...). It is part of the
        feature cache key: two backbones with equal settings give equal features.
    feature_names() -> list of str
        The names of the blocks :meth:`embed` returns, in order; unique across the
        backbones of one extractor (each backbone prefixes its own, e.g. ``"mnv2/6"``).
    embed(crops) -> dict of str to numpy.ndarray
        ``crops``: uint8 (N, H, W, 3) RGB face crops (160 × 160 from the detector; a
        backbone resizes them itself if it needs another size). Returns one float32
        (N, D_b) array per name of :meth:`feature_names`, row i for crop i; a row does not
        depend on the other crops of the stack. N = 0 gives (0, 0) arrays.
        ``ValueError`` names the shape of crops that are not (N, H, W, 3).
    """

    def settings(self) -> dict:
        ...

    def feature_names(self) -> list[str]:
        ...

    def embed(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        ...


def checked_crops(crops: Any) -> np.ndarray:
    """Face crops as an (N, H, W, 3) array; ``ValueError`` naming the shape otherwise."""
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"crops must be (N, H, W, 3) uint8, got shape {crops.shape}")
    return crops


def with_mirrors(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) crops → (2N, C, H, W): the crops, then their horizontal mirrors."""
    import torch

    return torch.cat([x, x.flip(-1)])


def mean_of_views(v: torch.Tensor) -> torch.Tensor:
    """(2N, ...) outputs of a :func:`with_mirrors` batch → (N, ...): the two views averaged."""
    n = len(v) // 2
    return (v[:n] + v[n:]) / 2
