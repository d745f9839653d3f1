"""Where torch runs: the ``"auto"`` device rule and the CPU runtime setting every model uses."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["ONEDNN_CACHE_CAPACITY", "bound_onednn_cache", "resolve_device", "torch_device"]

#: oneDNN primitive-cache capacity set by :func:`bound_onednn_cache` (oneDNN's default: 1024).
ONEDNN_CACHE_CAPACITY = 64


def resolve_device(device: Any = "auto") -> str:
    """The device name to use.

    Parameters
    ----------
    device : str, torch.device or None
        ``"auto"`` or None: ``"cuda"`` when a CUDA device is present, else ``"cpu"``;
        anything else is returned as its string (``"cpu"``, ``"cuda:1"``, ...).

    Returns
    -------
    str
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def torch_device(device: Any = "auto") -> Any:
    """:func:`resolve_device` as a ``torch.device``."""
    import torch

    return torch.device(resolve_device(device))


def bound_onednn_cache(capacity: int = ONEDNN_CACHE_CAPACITY) -> None:
    """Bound oneDNN's primitive cache, unless the user set ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``.

    MTCNN's R-Net and O-Net get a new batch size (the number of candidate boxes) on nearly
    every call, and oneDNN compiles and keeps a primitive for each new shape, up to 1,024
    of them: over a dataset the process RSS keeps growing (``benchmarks/memory.py``).
    oneDNN reads the variable once, when it first builds a primitive, so this only takes
    effect if no convolution has run on the CPU in this process yet; the models'
    first use calls it. It changes no result.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(int(capacity)))
