"""Degraded copies of face crops: the blur, resampling and JPEG of another processing chain.

Texture statistics of a face crop learn how *this* data set was filmed, resized and
compressed as well as how it was forged; a head fitted on FaceForensics++ c23 can lean on
its H.264 chain and its face sizes, which another data set does not share. Training on
copies of every crop passed through a random, milder or harsher chain (downscale and
upscale, Gaussian blur, JPEG) is the augmentation Wang et al. found decisive for detectors
that generalise (CNNDetection, CVPR 2020: blur + JPEG). One draw per clip, applied to all
its frames, as a re-encoded video would be.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["DegradeParams", "sample_degrade_params", "degrade_crops"]


@dataclass(frozen=True)
class DegradeParams:
    """One draw of the degradation chain.

    Attributes
    ----------
    scale : float
        The crop is resized to this fraction of its size (area interpolation) and back
        (bicubic); 1.0: off.
    blur : float
        Gaussian sigma in pixels of the crop; 0.0: off.
    jpeg_quality : int
        JPEG quality of the final re-encoding (1-100); 0: no re-encoding.
    """

    scale: float = 1.0
    blur: float = 0.0
    jpeg_quality: int = 0


def sample_degrade_params(rng: np.random.Generator) -> DegradeParams:
    """Draw :class:`DegradeParams`: ``scale`` U(0.35, 1.0) with probability 0.7 else 1,
    ``blur`` U(0.2, 1.5) with probability 0.3 else 0, ``jpeg_quality`` U{30..95} with
    probability 0.8 else 0 (every field is drawn, so the number of draws is fixed)."""
    scale, p_scale = rng.uniform(0.35, 1.0), rng.random()
    blur, p_blur = rng.uniform(0.2, 1.5), rng.random()
    quality, p_jpeg = int(rng.integers(30, 96)), rng.random()
    return DegradeParams(scale=float(scale) if p_scale < 0.7 else 1.0,
                         blur=float(blur) if p_blur < 0.3 else 0.0,
                         jpeg_quality=quality if p_jpeg < 0.8 else 0)


def degrade_crops(crops: np.ndarray, params: DegradeParams) -> np.ndarray:
    """Apply one degradation chain to every crop (resample, then blur, then JPEG).

    Parameters
    ----------
    crops : numpy.ndarray
        uint8 (N, H, W, 3) RGB face crops.
    params : DegradeParams
        The chain.

    Returns
    -------
    numpy.ndarray
        uint8 (N, H, W, 3), a new array.
    """
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"degrade_crops: expected uint8 (N, H, W, 3) crops, got "
                         f"{crops.dtype} {crops.shape}")
    if not 0 < params.scale <= 1 or params.blur < 0 or not 0 <= params.jpeg_quality <= 100:
        raise ValueError(f"degrade_crops: bad parameters {params}")
    out = np.empty_like(crops)
    h, w = crops.shape[1:3]
    small = (max(1, round(w * params.scale)), max(1, round(h * params.scale)))
    for i, crop in enumerate(crops):
        img = crop
        if params.scale < 1:
            img = cv2.resize(cv2.resize(img, small, interpolation=cv2.INTER_AREA), (w, h),
                             interpolation=cv2.INTER_CUBIC)
        if params.blur > 0:
            img = cv2.GaussianBlur(img, (0, 0), params.blur)
        if params.jpeg_quality:
            ok, buf = cv2.imencode(".jpg", img[..., ::-1],
                                   [cv2.IMWRITE_JPEG_QUALITY, int(params.jpeg_quality)])
            if not ok:
                raise RuntimeError("degrade_crops: JPEG encoding failed")
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        out[i] = img
    return out
