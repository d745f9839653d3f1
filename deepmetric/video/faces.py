"""Faces: MTCNN detection (facenet-pytorch) batched over a clip's frames.

Large frames are downscaled for detection (``max_side``) and the face is cropped from the
full-resolution frame, with facenet-pytorch's margin convention. Per frame the largest face
above ``min_prob`` is kept; a frame with no such face is recorded (``found == False``), not
dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deepmetric.device import bound_onednn_cache, resolve_device
from deepmetric.video.mtcnn import detect_faces

__all__ = ["FaceDetector", "FaceCrops", "crop_face", "empty_faces", "take_whole"]

@dataclass
class FaceCrops:
    """The faces found in a sequence of frames (one face per frame at most).

    Attributes
    ----------
    crops : numpy.ndarray
        uint8 (T, S, S, 3) RGB crops; zeros where no face was found.
    found : numpy.ndarray
        bool (T,), whether a face was kept for each frame.
    boxes : numpy.ndarray
        float32 (T, 4) ``x1, y1, x2, y2`` in full-resolution pixels; NaN where not found.
    probs : numpy.ndarray
        float32 (T,) MTCNN probability of the kept face; NaN where not found.
    landmarks : numpy.ndarray
        float32 (T, 5, 2) eyes, nose, mouth corners in full-resolution pixels; NaN if none.
    n_faces : numpy.ndarray
        int16 (T,), faces above ``min_prob`` in each frame (before keeping the largest).
    """

    crops: np.ndarray
    found: np.ndarray
    boxes: np.ndarray
    probs: np.ndarray
    landmarks: np.ndarray
    n_faces: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))


def crop_face(image: np.ndarray, box: np.ndarray, image_size: int = 160,
              margin: float = 32) -> np.ndarray:
    """Crop a square-resized face with facenet-pytorch's margin convention.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 (H, W, 3) RGB frame.
    box : numpy.ndarray
        (4,) ``x1, y1, x2, y2`` in the frame's pixels.
    image_size : int
        Side of the output crop.
    margin : float
        Margin in pixels *of the output crop* (facenet-pytorch's ``extract_face``).

    Returns
    -------
    numpy.ndarray
        uint8 (image_size, image_size, 3).
    """
    import cv2

    h, w = image.shape[:2]
    mx = margin * (box[2] - box[0]) / (image_size - margin)
    my = margin * (box[3] - box[1]) / (image_size - margin)
    x1 = int(max(box[0] - mx / 2, 0))
    y1 = int(max(box[1] - my / 2, 0))
    x2 = int(min(box[2] + mx / 2, w))
    y2 = int(min(box[3] + my / 2, h))
    if x2 <= x1 or y2 <= y1:
        return np.zeros((image_size, image_size, 3), np.uint8)
    patch = image[y1:y2, x1:x2]
    return cv2.resize(patch, (image_size, image_size), interpolation=cv2.INTER_AREA)


class FaceDetector:
    """Largest-face MTCNN detector with downscaled detection and full-resolution crops.

    Parameters
    ----------
    image_size : int
        Side of the square face crop (FaceNet takes 160).
    margin : float
        Margin around the box, in pixels of the output crop (facenet-pytorch convention).
    min_prob : float
        Faces with a lower MTCNN probability are ignored.
    max_side : int
        Frames whose longer side exceeds this are downscaled for detection only.
    retry_max_side : int
        Frames where no face is found on the downscaled copy are searched again at up to
        this size (small faces in wide, high-resolution shots); 0 (default) disables it.
    min_face_size : int
        MTCNN's smallest face, in pixels of the detection image.
    thresholds : tuple of float
        MTCNN P-, R-, O-net thresholds.
    factor : float
        MTCNN image-pyramid scale factor.
    batch_size : int
        Frames per MTCNN call (frames of one clip share a size, so they batch).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:i]"``.
    channels_last : bool
        Keep the P-, R- and O-net weights in channels-last memory format, so their
        convolutions run channels-last (about 2x faster R-/O-net on CPU; boxes agree to
        ~1e-4 px with the default format, ``tests/video/test_faces.py``).
    batched_crops : bool
        Run MTCNN's cascade through :func:`deepmetric.video.mtcnn.detect_faces`, which resizes
        all candidate boxes for R-/O-net in one exact batched step instead of one
        ``interpolate`` call per box (same boxes, ``tests/video/test_mtcnn.py``); ``False``
        calls facenet-pytorch's ``MTCNN.detect``.
    fallback : {"none", "image"}
        What to do with a frame where no face is found: ``"none"`` (default) records it as
        faceless; ``"image"`` takes the whole image as the face (resized to
        ``image_size``), for inputs known to be face crops (MTCNN misses about 1 in 400
        of the 224-px DFDC crops; padding them first made it miss 17). Such frames have
        ``found`` True, probability 0, the whole image as box, NaN landmarks and
        ``n_faces`` 0.
    whole_image : bool
        Take every image whole as its face, without running MTCNN (``fallback="image"`` for
        every frame): for data sets of square face crops (e.g. the 224-px DFDC crops, whose
        face fills the image: MTCNN's box with its margin then reaches past the border and
        the crop is clamped to the image, unlike a crop from a video frame). Pair it with
        ``margin=0`` on the training clips to give both the same tight-box geometry. The
        frames have no landmarks, so self-blended copies of them are not possible.
    """

    #: class defaults so detectors pickled before these options existed still load
    retry_max_side = 0
    channels_last = False
    batched_crops = False
    fallback = "none"
    whole_image = False

    def __init__(self, image_size: int = 160, margin: float = 32, min_prob: float = 0.9,
                 max_side: int = 640, retry_max_side: int = 0, min_face_size: int = 40,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, batch_size: int = 32, device: str = "auto",
                 channels_last: bool = True, batched_crops: bool = True,
                 fallback: str = "none", whole_image: bool = False):
        if fallback not in ("none", "image"):
            raise ValueError(f"fallback must be 'none' or 'image', got {fallback!r}")
        self.image_size = image_size
        self.margin = margin
        self.min_prob = min_prob
        self.max_side = max_side
        self.retry_max_side = retry_max_side
        self.min_face_size = min_face_size
        self.thresholds = thresholds
        self.factor = factor
        self.batch_size = batch_size
        self.device = device
        self.channels_last = channels_last
        self.batched_crops = batched_crops
        self.fallback = fallback
        self.whole_image = bool(whole_image)
        self._mtcnn = None

    def settings(self) -> dict:
        """Everything that changes the detector's output (used in cache keys).

        Faces taken whole depend on the crop size alone: MTCNN's options (margin, thresholds,
        ...) do not enter their key, so e.g. a run whose training clips use ``margin=0``
        shares the whole-image features of its test crops with one that does not."""
        if self.whole_image:
            return {"detector": "whole image", "image_size": self.image_size,
                    "whole_image": True}
        out = {"detector": "facenet_pytorch.MTCNN", "image_size": self.image_size,
               "margin": float(self.margin), "min_prob": float(self.min_prob),
               "max_side": self.max_side, "min_face_size": self.min_face_size,
               "thresholds": [float(t) for t in self.thresholds], "factor": float(self.factor)}
        if self.retry_max_side:
            out["retry_max_side"] = self.retry_max_side
        if self.fallback != "none":
            out["fallback"] = self.fallback
        return out

    @property
    def mtcnn(self):
        """The underlying facenet-pytorch MTCNN, built on first use."""
        if self._mtcnn is None:
            bound_onednn_cache()
            from facenet_pytorch import MTCNN

            self._mtcnn = MTCNN(image_size=self.image_size, margin=0,
                                min_face_size=self.min_face_size,
                                thresholds=list(self.thresholds), factor=self.factor,
                                select_largest=True, keep_all=True,
                                device=resolve_device(self.device))
            if self.channels_last:
                import torch

                for net in (self._mtcnn.pnet, self._mtcnn.rnet, self._mtcnn.onet):
                    net.to(memory_format=torch.channels_last)
        return self._mtcnn

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_mtcnn"] = None
        return state

    def detect(self, images: list[np.ndarray] | np.ndarray) -> FaceCrops:
        """Find the largest face in each frame and crop it.

        Parameters
        ----------
        images : list of numpy.ndarray or numpy.ndarray
            RGB uint8 frames (H, W, 3); frames of one clip (same size) batch together.

        Returns
        -------
        FaceCrops
            One entry per input frame.
        """
        images = list(images)
        t = len(images)
        s = self.image_size
        out = empty_faces(t, s)
        if self.whole_image:
            take_whole(images, range(t), out)
            return out
        # Batch runs of consecutive frames of the same size.
        start = 0
        while start < t:
            shape = images[start].shape
            stop = start + 1
            while stop < t and stop - start < self.batch_size and images[stop].shape == shape:
                stop += 1
            self._detect_batch(images, start, stop, out, self.max_side)
            missed = [i for i in range(start, stop) if not out.found[i]]
            big = max(images[start].shape[:2])
            if missed and self.retry_max_side > self.max_side and big > self.max_side:
                sub = [images[i] for i in missed]
                part = empty_faces(len(sub), self.image_size)
                self._detect_batch(sub, 0, len(sub), part, self.retry_max_side)
                for j, i in enumerate(missed):
                    for name in ("crops", "found", "boxes", "probs", "landmarks", "n_faces"):
                        getattr(out, name)[i] = getattr(part, name)[j]
            start = stop
        if self.fallback == "image":
            take_whole(images, np.flatnonzero(~out.found), out)
        return out

    def _detect_batch(self, images: list[np.ndarray], start: int, stop: int,
                      out: FaceCrops, max_side: int) -> None:
        import cv2

        h, w = images[start].shape[:2]
        scale = min(1.0, max_side / max(h, w))
        if min(h, w) * scale < 2 * self.min_face_size:
            # tiny images (e.g. pre-cropped faces): upscale so MTCNN's pyramid is not empty
            scale = 2 * self.min_face_size / min(h, w)
            if max(h, w) * scale > 4 * max_side:  # a sliver, not a face picture
                return
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            small = [cv2.resize(im, size, interpolation=interp)
                     for im in images[start:stop]]
            sx, sy = w / size[0], h / size[1]
        else:
            small = images[start:stop]
            sx = sy = 1.0
        batch = _nchw_backed(small)
        if self.batched_crops:
            per_frame = detect_faces(self.mtcnn, batch)
        else:
            per_frame = [_plain(b, p, lm) for b, p, lm
                         in zip(*self.mtcnn.detect(batch, landmarks=True))]
        for j, arrays in enumerate(per_frame):
            b, p, lm = (np.asarray(a, np.float64) for a in arrays)
            keep = p >= self.min_prob
            i = start + j
            out.n_faces[i] = int(keep.sum())
            if not keep.any():
                continue
            b, p, lm = b[keep], p[keep], lm[keep]
            k = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
            box = b[k] * np.array([sx, sy, sx, sy])
            out.boxes[i] = box
            out.probs[i] = p[k]
            out.landmarks[i] = lm[k] * np.array([sx, sy])
            out.crops[i] = crop_face(images[i], box, self.image_size, self.margin)
            out.found[i] = True


def take_whole(images: list[np.ndarray], which, out: FaceCrops) -> None:
    """Take frames ``which`` whole as their face, in place in ``out``: the image resized to
    the crop size, the whole image as box, probability 0, NaN landmarks, ``n_faces`` 0.

    Parameters
    ----------
    images : list of numpy.ndarray
        RGB uint8 (H, W, 3) frames.
    which : iterable of int
        Indices of the frames to take whole.
    out : FaceCrops
        Written in place.
    """
    import cv2

    s = out.crops.shape[1]
    for i in which:
        h, w = images[i].shape[:2]
        out.crops[i] = cv2.resize(np.ascontiguousarray(images[i]), (s, s),
                                  interpolation=cv2.INTER_AREA)
        out.boxes[i] = (0, 0, w, h)
        out.probs[i] = 0.0
        out.found[i] = True


def _plain(b, p, lm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame of ``MTCNN.detect``'s output (object arrays or None) as float arrays."""
    if b is None:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
    return (np.asarray(b, dtype=object).astype(np.float64).reshape(-1, 4),
            np.asarray(p, dtype=object).astype(np.float64).reshape(-1),
            np.asarray(lm, dtype=object).astype(np.float64).reshape(-1, 5, 2))


def _nchw_backed(images: list[np.ndarray]):
    """Stack RGB uint8 frames as an (N, H, W, 3) tensor whose memory is laid out NCHW.

    MTCNN permutes its NHWC input to NCHW and resamples the image pyramid and every
    candidate box from it. Handing it a view whose permuted form is contiguous makes those
    resamplings run on contiguous NCHW memory, which is faster on the CPU (same values,
    same boxes; see ``tests/video/test_faces.py``), and it skips MTCNN's own copy of a NumPy batch.
    """
    import torch

    h, w = images[0].shape[:2]
    buf = torch.empty((len(images), 3, h, w), dtype=torch.uint8)
    planes = buf.numpy()  # NumPy copies read-only frames too (torch.from_numpy warns on them)
    for i, im in enumerate(images):
        planes[i] = im.transpose(2, 0, 1)
    return buf.permute(0, 2, 3, 1)


def empty_faces(t: int, s: int) -> FaceCrops:
    """A :class:`FaceCrops` of ``t`` frames with no face found (crops of side ``s``)."""
    return FaceCrops(crops=np.zeros((t, s, s, 3), np.uint8), found=np.zeros(t, bool),
                     boxes=np.full((t, 4), np.nan, np.float32),
                     probs=np.full(t, np.nan, np.float32),
                     landmarks=np.full((t, 5, 2), np.nan, np.float32),
                     n_faces=np.zeros(t, np.int16))
