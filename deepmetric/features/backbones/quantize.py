"""Post-training int8 quantization of a CNN's blocks for CPU inference, without data.

:func:`quantize_blocks` replaces named top-level blocks of a float network by int8 versions
(PyTorch's FX graph-mode static quantization: per-channel symmetric int8 weights, per-tensor
uint8 activations). Each block takes and returns float tensors, so the network's own
``forward`` and forward hooks on its blocks work unchanged.

The activation ranges are calibrated on :func:`calibration_images`: seeded random
low-frequency colour images, not data. They span the input range with smooth structure, so
no data set is needed and the quantized network is the same function wherever it is built
(same weights, PyTorch and quantized engine). On FaceNet (CASIA-WebFace), over 300 DFDC
dev face crops, its embeddings have cosine similarity 0.998 (median) and 0.985 (minimum)
with the float network's; calibrated on 64 other DFDC crops instead, 0.997 and 0.979
(``python -m benchmarks.run --only quantize``; docs/performance.md).

Activations use 7 bits (``reduce_range``): x86 int8 kernels without VNNI accumulate pairs
of products in int16, and full-range activations overflow on a few inputs (measured on
FaceNet: one embedding at cosine 0.30 with the float one).
"""

from __future__ import annotations

import copy
import warnings
from typing import Sequence

import numpy as np
import torch

__all__ = ["calibration_images", "quantize_blocks", "QuantizedBlock", "RECIPE"]

#: Everything that decides the quantized network besides its float weights (cache keys).
RECIPE = {"dtype": "int8", "calibration": "smooth-random", "images": 64, "grid": 5,
          "seed": 0, "activations": "minmax-7bit", "weights": "per-channel-symmetric"}


def calibration_images(n: int = RECIPE["images"], size: int = 160, grid: int = RECIPE["grid"],
                       seed: int = RECIPE["seed"]) -> np.ndarray:
    """Seeded smooth random colour images for calibrating activation ranges.

    Parameters
    ----------
    n : int
        Number of images.
    size : int
        Side in pixels.
    grid : int
        Side of the random colour grid each image is bicubically upsampled from (smaller:
        smoother images).
    seed : int
        Seed of the NumPy generator (same seed, same images).

    Returns
    -------
    numpy.ndarray
        uint8 (n, size, size, 3).
    """
    import cv2

    rng = np.random.default_rng(seed)
    return np.stack([cv2.resize(rng.integers(0, 256, (grid, grid, 3), dtype=np.uint8),
                                (size, size), interpolation=cv2.INTER_CUBIC)
                     for _ in range(n)])


class QuantizedBlock(torch.nn.Module):
    """An int8 block (float in, float out) that keeps one known warning quiet.

    Where a block concatenates branches (InceptionResnetV1's ``mixed_6a`` and ``mixed_7a``),
    the quantized ``cat`` requantizes branches whose ranges differ and warns on each new
    graph that "large numerical inaccuracies may occur". The branches' outputs are
    requantized to the calibrated range of the concatenation, which is what the float
    network's accuracy was measured with, so the warning says nothing about this use.
    """

    def __init__(self, block: torch.nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="All inputs of this cat operator",
                                    category=UserWarning)
            return self.block(x)


def _qconfig_mapping():
    from torch.ao.quantization import (MinMaxObserver, PerChannelMinMaxObserver, QConfig,
                                       get_default_qconfig_mapping)

    qconfig = QConfig(
        activation=MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=True),
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                  qscheme=torch.per_channel_symmetric))
    return get_default_qconfig_mapping(torch.backends.quantized.engine).set_global(qconfig)


def quantize_blocks(model: torch.nn.Module, blocks: Sequence[str], x: torch.Tensor,
                    batch_size: int = 16) -> torch.nn.Module:
    """A copy of ``model`` whose named top-level blocks run in int8 on the CPU.

    Parameters
    ----------
    model : torch.nn.Module
        A float network in eval mode on the CPU, whose ``forward`` runs ``blocks`` one
        after the other on the input (the output of one is the input of the next).
    blocks : sequence of str
        Names of consecutive top-level children, the first one taking the network's input.
    x : torch.Tensor
        float32 (N, C, H, W) calibration input of the first block (e.g. standardised
        :func:`calibration_images`).
    batch_size : int
        Calibration images per forward pass.

    Returns
    -------
    torch.nn.Module
        The copy, each quantized block wrapped in a :class:`QuantizedBlock`; ``model`` is
        left as it is.

    Raises
    ------
    ValueError
        A name that is not a top-level child of ``model``.
    """
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    children = dict(model.named_children())
    unknown = [b for b in blocks if b not in children]
    if unknown:
        raise ValueError(f"cannot quantize {unknown}: not top-level blocks of "
                         f"{type(model).__name__} ({list(children)})")
    out = copy.deepcopy(model).eval()
    mapping = _qconfig_mapping()
    with warnings.catch_warnings():
        # torch >= 2.9 marks FX quantization deprecated in favour of torchao (not a
        # dependency of deepmetric); it still works, and works alike from torch 2.2 on.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\..*")
        with torch.no_grad():
            for name in blocks:
                block = getattr(out, name)
                prepared = prepare_fx(block, mapping, (x[:1],))
                # The prepared block observes its activations and computes the float
                # block's output (batch norms folded), which feeds the next block.
                x = torch.cat([prepared(x[i:i + batch_size])
                               for i in range(0, len(x), batch_size)])
                setattr(out, name, QuantizedBlock(convert_fx(prepared)))
    return out
