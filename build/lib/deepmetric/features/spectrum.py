"""Spectral features: the radially averaged log power spectrum of a face crop.

Up-sampling and blending leave periodic traces in the high frequencies of manipulated
faces (Durall et al., CVPR 2020, "Watch your up-convolution"). This block summarises each
crop's 2-D power spectrum by its azimuthal average, a compact, identity-poor signal.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SPECTRUM", "radial_spectrum"]

#: Name of the spectral feature block in the cache and in ``features=[...]``.
SPECTRUM = "spectrum"


def radial_spectrum(crops: np.ndarray, n_bins: int = 32) -> np.ndarray:
    """Azimuthally averaged log power spectrum of grayscale face crops.

    Parameters
    ----------
    crops : numpy.ndarray
        uint8 (N, H, W, 3) RGB crops.
    n_bins : int
        Radial frequency bins from DC to the Nyquist corner.

    Returns
    -------
    numpy.ndarray
        float32 (N, n_bins): mean ``log(1 + |F|^2)`` per radial bin, each row centred to
        zero mean (the overall brightness/contrast level is removed).
    """
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"crops must be (N, H, W, 3), got {crops.shape}")
    n, h, w, _ = crops.shape
    if n == 0:
        return np.zeros((0, n_bins), np.float32)
    gray = crops.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    gray -= gray.mean(axis=(1, 2), keepdims=True)
    window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    power = np.abs(np.fft.fftshift(np.fft.fft2(gray * window), axes=(1, 2))) ** 2
    logp = np.log1p(power)
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - h // 2, xx - w // 2)
    r = r / r.max()
    bins = np.minimum((r * n_bins).astype(np.int64), n_bins - 1).ravel()
    counts = np.bincount(bins, minlength=n_bins).astype(np.float32)
    flat = logp.reshape(n, -1)
    out = np.stack([np.bincount(bins, weights=row, minlength=n_bins) for row in flat])
    out = out / np.maximum(counts, 1)
    out -= out.mean(axis=1, keepdims=True)
    return out.astype(np.float32)
