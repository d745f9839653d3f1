"""Frames: sample N frames evenly over a clip (or read an image as a one-frame clip).

Decoding reads only what it needs: frames between two sampled indices are *grabbed*
(demuxed and decoded by FFmpeg but never converted to RGB or copied to Python), and when
sampled frames are far apart the reader seeks instead of grabbing through them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepmetric.datasets.items import media_kind

__all__ = ["MAX_PIXELS", "MAX_CLIP_PIXELS", "MediaError", "Frames", "pixel_limit",
           "clip_pixel_limit", "check_limits", "sample_indices", "read_frames", "read_image"]

#: Seek instead of grabbing when the next sampled frame is this many frames ahead.
SEEK_GAP = 150

#: Largest image (width x height) :func:`read_image` decodes by default: 50 megapixels, an
#: 8K frame and a 48 MP phone photo fit. A 13,000 x 13,000 image (169 MP, ~0.5 GB as RGB,
#: under Pillow's own decompression-bomb limit) is refused from its header, before decoding.
#: Override per call (``max_pixels=``) or for the process with ``DEEPMETRIC_MAX_PIXELS``.
MAX_PIXELS = 50_000_000

#: Most pixels the sampled frames of one clip hold together once decoded: 250 megapixels
#: (~750 MB as RGB; 25 frames of 4K fit, 207 MP). A clip whose sampled frames would hold
#: more is decoded at a capped size: each frame is scaled down (area interpolation) as it is
#: decoded, to ``limit / frames`` pixels, so memory is bounded by this, not by the file. A
#: frame over :data:`MAX_PIXELS` is refused, as an image is. Override for the process with
#: ``DEEPMETRIC_MAX_CLIP_PIXELS``.
MAX_CLIP_PIXELS = 250_000_000


class MediaError(RuntimeError):
    """A media file cannot be read; the message names the file and the cause."""


@dataclass
class Frames:
    """Frames decoded from one item.

    Attributes
    ----------
    images : list of numpy.ndarray
        RGB uint8 arrays of shape (H, W, 3), one per sampled frame.
    indices : numpy.ndarray
        int64 (T,), the frame index of each image in the clip (0 for an image).
    n_total : int
        Number of frames in the clip as decoded (1 for an image).
    fps : float
        Frame rate reported by the container (0.0 for an image).
    n_asked : int
        Frames the reader meant to return: ``min(n, frames the container reports)``. More
        than ``len(images)`` when the clip ends early (truncated, or a variable-frame-rate
        file whose header over-counts); ``len(images)`` when nothing was known up front.
    """

    images: list[np.ndarray]
    indices: np.ndarray
    n_total: int
    fps: float
    n_asked: int = -1

    def __post_init__(self) -> None:
        if self.n_asked < 0:
            self.n_asked = len(self.images)

    @property
    def n_read(self) -> int:
        """Frames actually decoded (``len(images)``)."""
        return len(self.images)


def sample_indices(n_total: int, n: int) -> np.ndarray:
    """Indices of ``n`` frames spread evenly over ``n_total`` frames.

    Each index is the centre of one of ``n`` equal segments, so the first and the last
    frames of a clip are not over-represented. A clip shorter than ``n`` yields all its
    frames once (no duplicates).

    Parameters
    ----------
    n_total : int
        Frames in the clip (>= 0).
    n : int
        Frames wanted (>= 1).

    Returns
    -------
    numpy.ndarray
        int64 (min(n, n_total),), strictly increasing, within ``[0, n_total)``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n_total <= 0:
        return np.zeros(0, dtype=np.int64)
    if n_total <= n:
        return np.arange(n_total, dtype=np.int64)
    idx = np.floor((np.arange(n) + 0.5) * n_total / n).astype(np.int64)
    return np.clip(idx, 0, n_total - 1)


def pixel_limit() -> int:
    """The pixel bound in force: ``DEEPMETRIC_MAX_PIXELS`` when set, else :data:`MAX_PIXELS`.

    Raises
    ------
    ValueError
        The variable is set but is not a number >= 1 (named, with its value).
    """
    return _env_pixels("DEEPMETRIC_MAX_PIXELS", MAX_PIXELS)


def clip_pixel_limit() -> int:
    """The bound on a clip's decoded pixels: ``DEEPMETRIC_MAX_CLIP_PIXELS`` when set, else
    :data:`MAX_CLIP_PIXELS` (a ValueError names a bad value)."""
    return _env_pixels("DEEPMETRIC_MAX_CLIP_PIXELS", MAX_CLIP_PIXELS)


def check_limits() -> None:
    """Raise the ValueError of a bad ``DEEPMETRIC_MAX_PIXELS`` or
    ``DEEPMETRIC_MAX_CLIP_PIXELS``: a settings error, checked once before a run's first file
    rather than failing every file."""
    pixel_limit()
    clip_pixel_limit()


def _env_pixels(name: str, default: int) -> int:
    env = os.environ.get(name, "").strip()
    if not env:
        return default
    try:
        value = int(float(env))
    except (ValueError, OverflowError):
        raise ValueError(f"{name} must be a number of pixels, got {env!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image as RGB uint8 (H, W, 3), upright and scaled to 8 bits.

    * EXIF orientation is applied (a phone photo taken upright is returned upright).
    * Grayscale, palette and RGBA are converted (alpha composited on black).
    * 16-bit images (PNG/TIFF modes ``I;16*``, ``I``) are scaled by 1/257, so 65535 maps
      to 255; float images (mode ``F``) are scaled from [0, 1], or from their own min/max
      when their values fall outside [0, 1]. Neither is clipped to white.
    * The pixel count is checked from the header before anything is decoded.

    Parameters
    ----------
    path : path-like
        The image file.
    max_pixels : int, optional
        Refuse images with more pixels than this (default :func:`pixel_limit`).

    Returns
    -------
    numpy.ndarray
        uint8 (H, W, 3), C-contiguous.

    Raises
    ------
    MediaError
        When the file cannot be decoded as an image, or it is larger than ``max_pixels``
        (a decompression bomb included); the message names the file and the problem.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    limit = max_pixels if max_pixels is not None else pixel_limit()
    try:
        with Image.open(path) as im:
            w, h = im.size  # from the header: nothing decoded yet
            if w * h > limit:
                raise MediaError(
                    f"{path}: image too large: {w}x{h} = {w * h / 1e6:.1f} megapixels, over "
                    f"the limit of {limit / 1e6:.1f} MP (max_pixels / DEEPMETRIC_MAX_PIXELS)")
            im.load()
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:  # noqa: BLE001 — a malformed EXIF block: keep the pixels as stored
                pass
            arr = _to_rgb_uint8(im)
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaError(f"{path}: image too large (decompression bomb: {exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise MediaError(f"{path}: cannot decode image ({exc})") from exc
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MediaError(f"{path}: empty image")
    return np.ascontiguousarray(arr)


def _to_rgb_uint8(im) -> np.ndarray:
    """RGB uint8 of a decoded PIL image, scaling high-bit-depth and float modes."""
    from PIL import Image

    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im).astype(np.float64)
        a = a / 257.0 if im.mode != "I" or a.max(initial=0) > 255 else a
        g = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im).astype(np.float64)
        finite = a[np.isfinite(a)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        if lo < 0.0 or hi > 1.0:
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        g = np.clip(np.rint(np.nan_to_num(a) * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "P", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_frames(path: str | os.PathLike, n: int = 25) -> Frames:
    """Decode ``n`` evenly spaced RGB frames of a clip, or the single frame of an image.

    Memory is bounded by the decoded size, not by the file: an image or a video frame over
    :func:`pixel_limit` is refused (a video's from its header, before decoding), and a
    clip's sampled frames are decoded at a capped size when together they would hold more
    than :func:`clip_pixel_limit` pixels (see :data:`MAX_CLIP_PIXELS`).

    Parameters
    ----------
    path : path-like
        A video (any container FFmpeg/OpenCV reads) or an image file.
    n : int
        Frames to sample (the poster's default is 25).

    Returns
    -------
    Frames
        The decoded frames; fewer than ``n`` when the clip is shorter.

    Raises
    ------
    MediaError
        When the file is missing, unreadable, empty, not a video, too large, or no frame
        can be decoded; the message names the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:  # e.g. no read permission: say so, not "corrupt"
        raise MediaError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    if media_kind(path) == "image":
        return Frames([read_image(path)], np.zeros(1, dtype=np.int64), 1, 0.0)
    return _read_video(path, n)


class _Decoder:
    """The size bounds of one clip: every frame checked, and scaled down to its share of
    the clip's pixel budget as it is decoded."""

    def __init__(self, path: Path, n: int):
        self.path, self.limit = path, pixel_limit()
        self.budget = max(1, clip_pixel_limit() // max(1, n))

    def check(self, w: int, h: int) -> None:
        if w * h > self.limit:
            raise MediaError(
                f"{self.path}: video frames too large: {w}x{h} = {w * h / 1e6:.1f} "
                f"megapixels, over the limit of {self.limit / 1e6:.1f} MP "
                "(DEEPMETRIC_MAX_PIXELS)")

    def rgb(self, bgr: np.ndarray) -> np.ndarray:
        import cv2

        h, w = bgr.shape[:2]
        self.check(w, h)  # a header that under-states the size
        if w * h > self.budget:
            s = (self.budget / (w * h)) ** 0.5
            bgr = cv2.resize(bgr, (max(1, int(w * s)), max(1, int(h * s))),
                             interpolation=cv2.INTER_AREA)
        return _to_rgb(bgr)


def _read_video(path: Path, n: int) -> Frames:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise MediaError(f"{path}: cannot open as video (corrupt or unsupported format)")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        dec = _Decoder(path, min(n, reported) if reported > 0 else n)
        dec.check(int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
                  int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0))  # before decoding
        if reported <= 0:
            # Some containers do not report a count: grab through once to count.
            images, indices, total = _grab_all(cap, path, n, dec)
            asked = len(images)
        else:
            asked = min(n, reported)
            images, indices, total = _grab_sampled(cap, sample_indices(reported, n),
                                                   reported, dec)
            if not images and reported > 0:
                # The header lied (truncated file): fall back to counting what decodes.
                cap.release()
                cap = cv2.VideoCapture(str(path))
                images, indices, total = _grab_all(cap, path, n, dec)
    finally:
        cap.release()
    if not images:
        raise MediaError(f"{path}: no frame could be decoded (truncated or corrupt video)")
    return Frames(images, np.asarray(indices, dtype=np.int64), total, fps, n_asked=asked)


def _grab_sampled(cap, wanted: np.ndarray, reported: int, dec: _Decoder, seek: bool = True):
    """Grab through the clip, retrieving only ``wanted``; seek over long gaps."""
    import cv2

    images: list[np.ndarray] = []
    indices: list[int] = []
    pos = 0  # index of the next frame grab() would return
    for target in wanted.tolist():
        if seek and target - pos > SEEK_GAP:
            cap.set(cv2.CAP_PROP_POS_FRAMES, target)
            actual = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
            pos = actual if 0 <= actual <= target else target
        ok = True
        while pos < target and ok:
            ok = cap.grab()
            pos += 1
        if not ok or not cap.grab():
            break  # the clip ends early (truncated): keep what decoded
        pos += 1
        ok, bgr = cap.retrieve()
        if not ok or bgr is None:
            break
        images.append(dec.rgb(bgr))
        del bgr
        indices.append(target)
    total = reported if len(indices) == len(wanted) else (indices[-1] + 1 if indices else 0)
    return images, indices, total


def _grab_all(cap, path: Path, n: int, dec: _Decoder):
    """Decode a clip whose length is unknown: count its frames by grabbing them (nothing
    kept), then read the sampled ones in a second pass. Memory holds the sampled frames
    only, however long the clip."""
    import cv2

    total = 0
    while cap.grab():
        total += 1
    if total == 0:
        return [], [], 0
    again = cv2.VideoCapture(str(path))
    try:
        dec.budget = max(1, clip_pixel_limit() // min(n, total))
        images, indices, _ = _grab_sampled(again, sample_indices(total, n), total, dec,
                                           seek=False)
    finally:
        again.release()
    return images, indices, total


def _to_rgb(bgr: np.ndarray) -> np.ndarray:
    import cv2

    if bgr.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB))
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
