"""Self-blended images (Shiohara & Yamasaki, CVPR 2022, "Detecting Deepfakes with
Self-Blended Images").

A self-blended image (SBI) pastes a slightly altered copy of a face back onto itself:

1. *source*: a copy of the image with colour jitter (hue, saturation, brightness, contrast),
   an optional down-and-up resampling (resolution mismatch) and a slight zoom/shift about
   the face centre;
2. *mask*: the convex hull of the face outline (from the landmarks), expanded, its outline
   deformed, eroded or dilated, then Gaussian-blurred, and scaled by a blend ratio;
3. ``blended = mask * source + (1 - mask) * target``.

The result carries the blending boundary and the colour/geometry mismatch of face-swap
fakes without a second identity. Pure NumPy + OpenCV; all randomness comes from the
:class:`numpy.random.Generator` given, so a seed fixes the output.

Landmarks
---------
With MTCNN's 5 landmarks (left eye, right eye, nose, left and right mouth corner, in image
coordinates) the face outline is an ellipse derived from them (eye line to chin, cheek to
cheek, see :func:`face_outline`); with more landmarks (e.g. the 68 of dlib/FAN) their own
hull is used.

Deformation of the mask
-----------------------
SBI deforms the mask with a dense elastic field. Here the *outline* is deformed instead: a
smooth random radial displacement (a low-order Fourier series in the angle around the face
centre, measured from the face's own axis). It is attached to the face, so
:func:`apply_blend` with one :class:`BlendParams` gives the same mask, moved with the face,
on every frame of a clip (what :mod:`deepmetric.datasets.demo` needs). All sizes are
fractions of the face size (square root of the hull area), so a zoom scales the mask too.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import cv2
import numpy as np

__all__ = ["BlendParams", "face_outline", "sample_blend_params", "apply_blend", "self_blend"]

_FILL_SHIFT = 4  # fractional bits for sub-pixel polygon filling
_OUTLINE_POINTS = 96


@dataclass(frozen=True)
class BlendParams:
    """One draw of the self-blending parameters (all sizes relative to the face size).

    Attributes
    ----------
    hue_shift : float
        Source hue rotation, degrees.
    saturation : float
        Source saturation factor.
    brightness : float
        Source brightness offset, fraction of the full range (0.1 = +25.5 grey levels).
    contrast : float
        Source contrast factor about the image mean.
    scale : float
        Source zoom about the face centre.
    shift : tuple of float
        Source translation (x, y), fraction of the face size.
    downscale : float
        The source is resized to this fraction and back (1.0: off).
    expand : float
        Hull scale about the face centre (>1 grows the mask).
    outline : tuple of float
        Radial deformation of the outline: ``(a2, b2, a3, b3, ...)``, the radius is
        multiplied by ``1 + sum_k a_k cos(k t) + b_k sin(k t)``.
    morph : float
        Dilation (>0) or erosion (<0) radius, fraction of the face size.
    blur : float
        Gaussian sigma of the mask edge, fraction of the face size.
    ratio : float
        Blend ratio: the mask's maximum, in (0, 1].
    """

    hue_shift: float = 0.0
    saturation: float = 1.0
    brightness: float = 0.0
    contrast: float = 1.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    downscale: float = 1.0
    expand: float = 1.0
    outline: tuple[float, ...] = ()
    morph: float = 0.0
    blur: float = 0.04
    ratio: float = 1.0


def sample_blend_params(rng: np.random.Generator, **overrides: object) -> BlendParams:
    """Draw :class:`BlendParams` from the default ranges.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (every field is drawn, then overridden, so the number of
        draws does not depend on ``overrides``).
    **overrides
        Fixed values for any :class:`BlendParams` field.

    Returns
    -------
    BlendParams
        ``hue_shift`` U(-10, 10) degrees, ``saturation`` U(0.8, 1.2), ``brightness``
        U(-0.08, 0.08), ``contrast`` U(0.85, 1.15), ``scale`` U(0.95, 1.05), ``shift``
        U(-0.03, 0.03) each, ``downscale`` U(0.5, 0.9) with probability 0.3 else 1,
        ``expand`` U(1.0, 1.15), ``outline`` orders 2-5 with coefficients N(0, 0.03/k),
        ``morph`` U(-0.05, 0.05), ``blur`` U(0.02, 0.08), ``ratio`` from
        {0.25, 0.5, 0.75, 1, 1, 1} as in SBI.

    Raises
    ------
    TypeError
        On an override that is not a field.
    """
    names = {f.name for f in fields(BlendParams)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"unknown blend parameter(s) {unknown}; expected some of "
                        f"{sorted(names)}")
    orders = np.arange(2, 6)
    params = BlendParams(
        hue_shift=float(rng.uniform(-10, 10)),
        saturation=float(rng.uniform(0.8, 1.2)),
        brightness=float(rng.uniform(-0.08, 0.08)),
        contrast=float(rng.uniform(0.85, 1.15)),
        scale=float(rng.uniform(0.95, 1.05)),
        shift=tuple(float(v) for v in rng.uniform(-0.03, 0.03, size=2)),
        downscale=float(rng.uniform(0.5, 0.9)) if rng.random() < 0.3 else 1.0,
        expand=float(rng.uniform(1.0, 1.15)),
        outline=tuple(float(v) for v in
                      (rng.normal(size=(len(orders), 2)) * (0.03 / orders)[:, None]).ravel()),
        morph=float(rng.uniform(-0.05, 0.05)),
        blur=float(rng.uniform(0.02, 0.08)),
        ratio=float(rng.choice([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])),
    )
    return replace(params, **overrides) if overrides else params


def face_outline(landmarks: np.ndarray, n_points: int = 32) -> np.ndarray:
    """Points whose convex hull covers the face.

    Parameters
    ----------
    landmarks : numpy.ndarray, shape (K, 2), float
        (x, y) image coordinates. ``K == 5``: MTCNN order (eyes, nose, mouth corners);
        any other ``K >= 3``: used as they are.
    n_points : int
        Points on the ellipse for ``K == 5``.

    Returns
    -------
    numpy.ndarray, shape (M, 2), float64
        For ``K == 5`` an ellipse from the eyebrows to the chin (semi-axes
        ``1.05 * max(eye distance, 0.8 d)`` across and ``1.15 d`` along the face, ``d`` the
        eye-to-mouth distance, centred ``0.75 d`` below the eyes and pulled toward the nose
        for turned faces) plus the landmarks; otherwise the landmarks.
    """
    pts = _check_landmarks(landmarks)
    if len(pts) != 5:
        return pts
    centre, u, v, half_width, half_height = _ellipse(pts)
    t = np.linspace(0.0, 2 * np.pi, n_points, endpoint=False)
    ring = centre + np.outer(half_width * np.cos(t), u) + np.outer(half_height * np.sin(t), v)
    return np.vstack([ring, pts])


def apply_blend(
    image: np.ndarray, landmarks: np.ndarray, params: BlendParams
) -> tuple[np.ndarray, np.ndarray]:
    """Self-blend ``image`` with fixed parameters (deterministic).

    Parameters
    ----------
    image : numpy.ndarray, shape (H, W, 3), uint8
        RGB (or BGR: the colour jitter treats channel 0 as red) target image.
    landmarks : numpy.ndarray, shape (K, 2), float
        Face landmarks in ``image`` coordinates (see :func:`face_outline`).
    params : BlendParams
        Blend parameters.

    Returns
    -------
    blended : numpy.ndarray, shape (H, W, 3), uint8
        ``mask * source + (1 - mask) * image``; equal to ``image`` wherever ``mask == 0``.
    mask : numpy.ndarray, shape (H, W), float32
        Blend weight in ``[0, params.ratio]``.
    """
    image = _check_image(image)
    pts = _check_landmarks(landmarks)
    h, w = image.shape[:2]
    hull = cv2.convexHull(face_outline(pts).astype(np.float32))[:, 0, :].astype(np.float64)
    size = float(np.sqrt(max(cv2.contourArea(hull.astype(np.float32)), 1.0)))
    centre = hull.mean(axis=0) if len(hull) < 3 else _centroid(hull)

    mask = _mask(hull, centre, _roll(pts), size, params, (h, w))
    blended = image.copy()
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size:  # only the mask's bounding box changes
        box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        x0, y0, x1, y1 = box
        source = _source(image, box, centre, size, params)
        target = image[y0:y1, x0:x1].astype(np.float32)
        weight = mask[y0:y1, x0:x1, None]
        blended[y0:y1, x0:x1] = np.clip(np.rint(target + weight * (source - target)),
                                        0, 255).astype(np.uint8)
    return blended, mask


def self_blend(
    image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, **params: object
) -> tuple[np.ndarray, np.ndarray]:
    """Make a self-blended image with random parameters.

    Parameters
    ----------
    image : numpy.ndarray, shape (H, W, 3), uint8
        RGB image with one face (a grey image must be stacked to 3 channels).
    landmarks : numpy.ndarray, shape (K, 2), float
        Its landmarks: MTCNN's 5 points or any ``K >= 3`` outline points.
    rng : numpy.random.Generator
        Source of randomness; the same state gives the same output.
    **params
        Fixed values for some :class:`BlendParams` fields (e.g. ``ratio=1.0``); the rest
        are drawn by :func:`sample_blend_params`.

    Returns
    -------
    blended : numpy.ndarray, shape (H, W, 3), uint8
    mask : numpy.ndarray, shape (H, W), float32
        Blend weight in ``[0, 1]``; the image is unchanged where it is 0.
    """
    return apply_blend(image, landmarks, sample_blend_params(rng, **params))


# -- internals ------------------------------------------------------------------------------

def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3 or not np.isfinite(pts).all():
        raise ValueError(f"expected (K, 2) finite landmarks with K >= 3, got shape "
                         f"{np.shape(landmarks)}")
    return pts


def _ellipse(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Face ellipse from MTCNN's 5 points: centre, across/along unit axes, half-axes."""
    left_eye, right_eye, nose, mouth_l, mouth_r = pts
    eyes, mouth = (left_eye + right_eye) / 2, (mouth_l + mouth_r) / 2
    d = float(np.linalg.norm(mouth - eyes))
    if d < 1e-6:
        raise ValueError("degenerate 5-point landmarks: eyes and mouth coincide")
    v = (mouth - eyes) / d                     # down the face
    u = np.array([-v[1], v[0]])                # across the face
    if np.dot(right_eye - left_eye, u) < 0:
        u = -u
    eye_gap = abs(float(np.dot(right_eye - left_eye, u)))
    lateral = float(np.dot(nose - eyes, u))   # nose off the eye midpoint: a turned face
    centre = eyes + 0.75 * d * v + 0.4 * lateral * u
    return centre, u, v, 1.05 * max(eye_gap, 0.8 * d), 1.15 * d


def _roll(pts: np.ndarray) -> float:
    """Angle (radians) of the face's down axis from image +y (0 for non-MTCNN points)."""
    if len(pts) != 5:
        return 0.0
    _, _, v, _, _ = _ellipse(pts)
    return float(np.arctan2(-v[0], v[1]))


def _centroid(poly: np.ndarray) -> np.ndarray:
    m = cv2.moments(poly.astype(np.float32))
    if abs(m["m00"]) < 1e-9:
        return poly.mean(axis=0)
    return np.array([m["m10"] / m["m00"], m["m01"] / m["m00"]])


def _mask(hull: np.ndarray, centre: np.ndarray, roll: float, size: float,
          p: BlendParams, shape: tuple[int, int]) -> np.ndarray:
    # resample the hull outline evenly, then scale each point radially
    closed = np.vstack([hull, hull[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.linspace(0.0, cum[-1], _OUTLINE_POINTS, endpoint=False)
    outline = np.column_stack([np.interp(s, cum, closed[:, 0]), np.interp(s, cum, closed[:, 1])])
    rel = outline - centre
    theta = np.arctan2(rel[:, 1], rel[:, 0]) - roll
    radial = np.ones(len(outline))
    coef = np.asarray(p.outline, dtype=np.float64).reshape(-1, 2)
    for k, (a, b) in enumerate(coef, start=2):
        radial += a * np.cos(k * theta) + b * np.sin(k * theta)
    outline = centre + rel * (float(p.expand) * np.maximum(radial, 0.1))[:, None]

    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.rint(outline * (1 << _FILL_SHIFT)).astype(np.int32)], 255,
                 lineType=cv2.LINE_8, shift=_FILL_SHIFT)
    radius = int(round(abs(p.morph) * size))
    if radius >= 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = (cv2.dilate if p.morph > 0 else cv2.erode)(mask, kernel)
    out = mask.astype(np.float32) / 255.0
    sigma = float(p.blur) * size
    if sigma > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma, sigmaY=sigma,
                               borderType=cv2.BORDER_CONSTANT)
    return np.clip(out * float(p.ratio), 0.0, 1.0).astype(np.float32)


def _source(image: np.ndarray, box: tuple[int, int, int, int], centre: np.ndarray,
            size: float, p: BlendParams) -> np.ndarray:
    """The altered copy of ``image`` over ``box`` = (x0, y0, x1, y1): (y1-y0, x1-x0, 3)
    float32 in [0, 255]. Zoom/shift about the face centre, then colour jitter, then the
    down-and-up resampling."""
    x0, y0, x1, y1 = box
    cx, cy = centre
    dx, dy = (np.asarray(p.shift, dtype=np.float64) * size).tolist()
    m = np.array([[p.scale, 0.0, (1 - p.scale) * cx + dx - x0],
                  [0.0, p.scale, (1 - p.scale) * cy + dy - y0]], dtype=np.float64)
    warped = cv2.warpAffine(image, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT101)
    rgb = warped.astype(np.float32) * np.float32(1 / 255)
    if p.hue_shift or p.saturation != 1.0:
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # H in [0, 360), S and V in [0, 1]
        hsv[..., 0] = np.mod(hsv[..., 0] + p.hue_shift, 360.0)
        hsv[..., 1] = np.clip(hsv[..., 1] * p.saturation, 0.0, 1.0)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    mean = np.float32(image.mean() / 255.0)
    rgb = np.clip((rgb - mean) * np.float32(p.contrast) + mean + np.float32(p.brightness),
                  0.0, 1.0)
    if p.downscale < 1.0:
        h, w = rgb.shape[:2]
        small = (max(1, round(w * p.downscale)), max(1, round(h * p.downscale)))
        rgb = cv2.resize(cv2.resize(rgb, small, interpolation=cv2.INTER_AREA), (w, h),
                         interpolation=cv2.INTER_LINEAR)
    return rgb * np.float32(255.0)
