"""Copies of a clip made for training: self-blended pseudo-fakes and degraded copies.

A manifest row with a ``blend_seed`` (:func:`deepmetric.datasets.items.add_self_blended`) or
a ``degrade_seed`` (:func:`deepmetric.datasets.items.add_degraded`) stands for a copy of its
clip: the clip's detected faces, blended and/or degraded by the operators of
:mod:`deepmetric.augment`, drawn from the seed and the clip's content fingerprint. Each copy
is cached beside the clip under its own variant name.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from deepmetric.augment.blend import apply_blend, sample_blend_params
from deepmetric.augment.degrade import degrade_crops, sample_degrade_params
from deepmetric.features.cache import content_fingerprint
from deepmetric.video.faces import FaceCrops, FaceDetector, crop_face

__all__ = ["BLEND_VERSION", "DEGRADE_VERSION", "copy_seeds", "variant_name", "copy_faces",
           "degraded_faces", "self_blended_faces"]

#: Version of the self-blending operator, part of the cache name of self-blended copies.
BLEND_VERSION = 1
#: Version of the degradation chain (deepmetric.augment.degrade), in degraded copies' names.
DEGRADE_VERSION = 1

def copy_seeds(manifest: pd.DataFrame) -> list[tuple[int | None, int | None]]:
    """Each row's ``(blend_seed, degrade_seed)`` (``(None, None)`` for the clip itself)."""
    def column(name: str) -> list[int | None]:
        if name not in manifest.columns:
            return [None] * len(manifest)
        return [None if pd.isna(v) else int(v) for v in manifest[name]]
    return list(zip(column("blend_seed"), column("degrade_seed")))


def variant_name(seeds: tuple[int | None, int | None]) -> str | None:
    """The cache-file suffix of a copy (None for the clip itself)."""
    blend, degrade = seeds
    parts = ([f"sbi{blend}-v{BLEND_VERSION}"] if blend is not None else []) \
        + ([f"deg{degrade}-v{DEGRADE_VERSION}"] if degrade is not None else [])
    return "-".join(parts) or None


def copy_faces(path: str | Path, images: Sequence[np.ndarray], faces: FaceCrops,
               seeds: tuple[int | None, int | None], detector: FaceDetector) -> FaceCrops:
    """The faces of a clip itself, or of its self-blended and/or degraded copy.

    Parameters
    ----------
    path : path-like
        The clip (its content fingerprint seeds the draws).
    images : sequence of numpy.ndarray
        RGB uint8 (H, W, 3) frames of the clip (used by the blend only).
    faces : FaceCrops
        The detector's output on ``images``.
    seeds : tuple of (int or None, int or None)
        ``(blend_seed, degrade_seed)``; ``(None, None)`` for the clip itself.
    detector : FaceDetector
        Gives the crop size and margin of blended crops.

    Returns
    -------
    FaceCrops
        ``faces`` unchanged, or the copy's faces (the blend first, then the degradation).
    """
    blend_seed, degrade_seed = seeds
    if blend_seed is not None:
        faces = self_blended_faces(images, faces, blend_seed, path, detector)
    if degrade_seed is not None:
        faces = degraded_faces(faces, degrade_seed, path)
    return faces


def degraded_faces(faces: FaceCrops, seed: int, path: str | Path) -> FaceCrops:
    """Face crops of a degraded copy of a clip (:mod:`deepmetric.augment.degrade`).

    One :class:`~deepmetric.augment.degrade.DegradeParams` is drawn per clip, from ``seed``
    and the clip's content fingerprint, and applied to every crop (boxes, landmarks and
    probabilities are kept).

    Parameters
    ----------
    faces : FaceCrops
        The clip's detected faces (crops uint8 (T, S, S, 3)).
    seed : int
        The copy's number.
    path : path-like
        The clip (its content fingerprint seeds the draw).

    Returns
    -------
    FaceCrops
        The same faces with degraded crops.
    """
    rng = np.random.default_rng([int(seed), 1, int(content_fingerprint(path), 16) % 2**63])
    return replace(faces, crops=degrade_crops(faces.crops, sample_degrade_params(rng)))


def self_blended_faces(images: Sequence[np.ndarray], faces: FaceCrops, seed: int,
                       path: str | Path, detector: FaceDetector) -> FaceCrops:
    """Face crops of a self-blended copy of a clip (Shiohara & Yamasaki's SBI).

    One :class:`deepmetric.augment.blend.BlendParams` is drawn per clip, from ``seed`` and the
    clip's content fingerprint, and applied to every frame with that frame's MTCNN
    landmarks, so the blended region moves with the face. The blend is made on the
    full-resolution frame; the crop is then taken at the detected box, as for the clip.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        RGB uint8 (H, W, 3) frames of the clip.
    faces : FaceCrops
        The detector's output on ``images``.
    seed : int
        Which copy (0, 1, ...).
    path : path-like
        The clip (its content fingerprint seeds the draw).
    detector : FaceDetector
        Gives the crop size and margin.

    Returns
    -------
    FaceCrops
        Same boxes, landmarks and probabilities; crops of the blended frames. A face taken
        whole (``fallback="image"``, ``whole_image``) has no landmarks to blend along: its
        frame is left out of the copy (``found`` False) rather than kept unblended under
        the copy's fake label, so a copy of a clip with no landmarks at all has no face.
    """
    rng = np.random.default_rng([int(seed), int(content_fingerprint(path), 16) % 2**63])
    params = sample_blend_params(rng)
    crops = np.zeros_like(faces.crops)
    # frames taken whole by the detector have no landmarks to blend along: not in the copy
    blendable = faces.found & np.isfinite(faces.landmarks).all(axis=(1, 2))
    for i in np.flatnonzero(blendable):
        blended, _ = apply_blend(images[i], faces.landmarks[i].astype(np.float64), params)
        crops[i] = crop_face(blended, faces.boxes[i], detector.image_size, detector.margin)
    return replace(faces, crops=crops, found=blendable)
