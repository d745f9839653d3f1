"""Faces: BlazeFace (MediaPipe's short-range face detector) on LiteRT, largest face per frame.

The same contract as :class:`deepmetric.video.faces.FaceDetector` (MTCNN): per frame the
largest face above ``min_prob`` is kept and cropped from the full-resolution frame with
facenet-pytorch's margin convention; a frame with no face is recorded (``found == False``).

The model is ``face_detection_short_range.tflite`` (BlazeFace, 128×128 RGB input in
[-1, 1], 896 SSD anchors; outputs per anchor 16 regressors — box centre offset, width,
height and 6 keypoints, in input pixels — and a face logit), shipped inside the PyPI wheel
``mediapipe==0.10.21`` (Apache-2.0). Only the file is used, never ``mediapipe``'s own code:
install it with ``pip install --no-deps mediapipe==0.10.21``. It runs on LiteRT
(``ai-edge-litert``), on the CPU. Nothing is downloaded at run time.

Decoding follows MediaPipe's documented options for this model: the frame is letterboxed
(aspect kept, zero border) to 128×128; anchors of the SSD scheme with 4 layers, strides
8, 16, 16, 16, one aspect ratio plus the interpolated scale, fixed unit anchor size and
centre offset 0.5 (16×16×2 + 8×8×6 = 896); scores are the sigmoid of the logit clipped to
±100; detections above ``min_prob`` (MediaPipe: 0.5) are merged by weighted non-maximum
suppression at IoU 0.3.

Keypoints: BlazeFace gives 6 (the two eyes, nose tip, mouth centre, two ear tragions).
``FaceCrops.landmarks`` holds MTCNN's 5 points in MTCNN's order (eye on the image's left,
eye on the right, nose, mouth corner on the left, on the right), so the self-blending
(:mod:`deepmetric.augment.blend`) works unchanged: the eyes and the nose are BlazeFace's
own, the mouth corners are the mouth centre ± :data:`MOUTH_HALF_WIDTH` times the vector
between the eyes (BlazeFace has no mouth corners; the blend's face ellipse uses only their
mean, which is BlazeFace's mouth centre).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from deepmetric.packaged import model_file
from deepmetric.video.faces import FaceCrops, crop_face, empty_faces, take_whole

__all__ = ["BlazeFaceDetector", "blazeface_weights_path", "ssd_anchors", "decode_detections",
           "weighted_nms", "to_mtcnn_box", "five_points", "INPUT_SIZE"]

INPUT_SIZE = 128
N_ANCHORS = 896
_MODEL = Path("modules") / "face_detection" / "face_detection_short_range.tflite"
_INSTALL = "pip install --no-deps mediapipe==0.10.21"
#: Half the mouth width as a fraction of the eye-to-eye vector (mouth corners estimated
#: from BlazeFace's mouth centre; the median ratio of MTCNN's mouth width to its eye
#: distance on FF++ frames is 0.79, docs/performance.md).
MOUTH_HALF_WIDTH = 0.4
#: BlazeFace's box in units of MTCNN's box of the same face: left edge and top edge offsets
#: (fractions of MTCNN's width and height), width ratio and height ratio. Medians over 75
#: FF++ frames (every 10th clip, 5 frames each; docs/performance.md): BlazeFace's box is
#: wider and shorter, and starts lower (at the brows rather than above them).
BOX_VS_MTCNN = (-0.046, 0.175, 1.127, 0.835)


def blazeface_weights_path(weights_path: str | os.PathLike | None = None) -> Path:
    """The BlazeFace short-range model: ``weights_path``, or the copy in the mediapipe wheel.

    Raises
    ------
    FileNotFoundError
        Neither is there; the message names the file or says how to install the wheel.
    """
    return model_file(weights_path, package="mediapipe", relpath=_MODEL,
                      what="BlazeFace model", install=_INSTALL)


def ssd_anchors() -> np.ndarray:
    """Centres of BlazeFace short-range's 896 SSD anchors, in [0, 1] input coordinates.

    Returns
    -------
    numpy.ndarray
        float32 (896, 2) ``x, y``: a 16×16 grid with 2 anchors per cell (stride 8), then an
        8×8 grid with 6 per cell (the three stride-16 layers share it); all anchors have
        unit width and height (fixed anchor size).
    """
    out = []
    for stride, per_cell in ((8, 2), (16, 6)):
        n = INPUT_SIZE // stride
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(cells, per_cell, axis=0))
    anchors = np.concatenate(out).astype(np.float32)
    assert len(anchors) == N_ANCHORS
    return anchors


def decode_detections(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray,
                      min_prob: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes, keypoints and scores of the anchors scoring at least ``min_prob``.

    Parameters
    ----------
    regressors : numpy.ndarray
        float32 (896, 16): per anchor the box centre offset (x, y), width, height and 6
        keypoint offsets (x, y), in input pixels.
    logits : numpy.ndarray
        float32 (896,) face logits.
    anchors : numpy.ndarray
        float32 (896, 2), :func:`ssd_anchors`.
    min_prob : float
        Score threshold (after the sigmoid).

    Returns
    -------
    boxes : numpy.ndarray
        float64 (K, 4) ``x1, y1, x2, y2`` in [0, 1] input coordinates.
    keypoints : numpy.ndarray
        float64 (K, 6, 2) in the same coordinates.
    scores : numpy.ndarray
        float64 (K,).
    """
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
    keep = np.flatnonzero(scores >= min_prob)
    r = regressors[keep].astype(np.float64) / INPUT_SIZE
    a = anchors[keep].astype(np.float64)
    cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
    w, h = r[:, 2], r[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    keypoints = r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :]
    return boxes, keypoints, scores[keep]


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression.

    In order of score, each remaining detection takes every remaining one that overlaps it
    by more than ``iou_threshold`` (itself included); their score-weighted mean box and
    keypoints replace them, with the highest score.

    Parameters
    ----------
    boxes : numpy.ndarray
        float (K, 4) ``x1, y1, x2, y2``.
    keypoints : numpy.ndarray
        float (K, P, 2).
    scores : numpy.ndarray
        float (K,).
    iou_threshold : float
        Overlap above which detections are merged.

    Returns
    -------
    tuple of numpy.ndarray
        The merged boxes (M, 4), keypoints (M, P, 2) and scores (M,), best first.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1],
                                                                   0, None)
    left = np.ones(len(scores), bool)
    out_b, out_k, out_s = [], [], []
    for i in range(len(scores)):
        if not left[i]:
            continue
        b = boxes[i]
        iw = np.clip(np.minimum(b[2], boxes[:, 2]) - np.maximum(b[0], boxes[:, 0]), 0, None)
        ih = np.clip(np.minimum(b[3], boxes[:, 3]) - np.maximum(b[1], boxes[:, 1]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(area[i] + area - inter, 1e-12)
        group = left & (iou > iou_threshold)
        group[i] = True
        wts = scores[group] / scores[group].sum()
        out_b.append(wts @ boxes[group])
        out_k.append(np.tensordot(wts, keypoints[group], axes=1))
        out_s.append(scores[i])
        left &= ~group
    if not out_s:
        return np.zeros((0, 4)), np.zeros((0,) + keypoints.shape[1:]), np.zeros(0)
    return np.asarray(out_b), np.asarray(out_k), np.asarray(out_s)


class BlazeFaceDetector:
    """Largest-face BlazeFace detector with full-resolution crops (see the module docstring).

    Parameters
    ----------
    image_size : int
        Side of the square face crop (FaceNet takes 160).
    margin : float
        Margin around the box, in pixels of the output crop (facenet-pytorch convention).
    min_prob : float
        Faces with a lower BlazeFace score are ignored. MediaPipe's default is 0.5; at 0.5 a
        few FF++ frames keep a false detection larger than the face, at 0.7 none of the
        75 frames of the comparison in docs/performance.md does.
    nms_iou : float
        Overlap above which detections are merged (MediaPipe's: 0.3).
    mtcnn_box : bool
        Map BlazeFace's box to MTCNN's framing of the same face (:data:`BOX_VS_MTCNN`)
        before cropping, so that FaceNet sees crops framed as those it was trained on and
        ``margin`` means the same as for MTCNN; ``False`` keeps BlazeFace's own box.
    fallback : {"none", "image"}
        ``"image"`` takes a frame where no face is found whole as its face (as
        :class:`~deepmetric.video.faces.FaceDetector`).
    whole_image : bool
        Take every image whole, without running the detector.
    retry_tiles : bool
        Search a frame where no face is found again in overlapping tiles of half its
        shorter side (the short-range model misses faces under about a tenth of the
        frame's longer side when the whole frame is squeezed into 128×128).
    weights_path : path-like, optional
        An explicit ``face_detection_short_range.tflite`` (default: the mediapipe wheel's).
    num_threads : int
        LiteRT CPU threads.
    """

    def __init__(self, image_size: int = 160, margin: float = 32, min_prob: float = 0.7,
                 nms_iou: float = 0.3, retry_tiles: bool = True, mtcnn_box: bool = True,
                 fallback: str = "none",
                 whole_image: bool = False, weights_path: str | None = None, num_threads: int = 1):
        if fallback not in ("none", "image"):
            raise ValueError(f"fallback must be 'none' or 'image', got {fallback!r}")
        self.image_size = image_size
        self.margin = margin
        self.min_prob = min_prob
        self.nms_iou = nms_iou
        self.retry_tiles = bool(retry_tiles)
        self.mtcnn_box = bool(mtcnn_box)
        self.fallback = fallback
        self.whole_image = bool(whole_image)
        self.weights_path = weights_path
        self.num_threads = num_threads
        self._interpreter = None
        self._anchors = None

    def settings(self) -> dict:
        """Everything that changes the detector's output (used in cache keys)."""
        if self.whole_image:
            return {"detector": "whole image", "image_size": self.image_size,
                    "whole_image": True}
        out = {"detector": "mediapipe-0.10.21/face_detection_short_range.tflite",
               "image_size": self.image_size, "margin": float(self.margin),
               "min_prob": float(self.min_prob), "nms_iou": float(self.nms_iou),
               "retry_tiles": self.retry_tiles,
               "box": list(BOX_VS_MTCNN) if self.mtcnn_box else "blazeface",
               "mouth_half_width": MOUTH_HALF_WIDTH,
               "weights_path": os.path.abspath(self.weights_path) if self.weights_path
               else None}
        if self.fallback != "none":
            out["fallback"] = self.fallback
        return out

    @property
    def interpreter(self) -> Any:
        """The LiteRT interpreter of the BlazeFace model, tensors allocated."""
        if self._interpreter is None:
            from deepmetric.litert import load_interpreter

            path = blazeface_weights_path(self.weights_path)
            it = load_interpreter(path, num_threads=self.num_threads, what="BlazeFace model",
                                  user="BlazeFaceDetector")
            shape = tuple(it.get_input_details()[0]["shape"])
            outs = sorted(tuple(d["shape"]) for d in it.get_output_details())
            if shape != (1, INPUT_SIZE, INPUT_SIZE, 3) or outs != [(1, N_ANCHORS, 1),
                                                                  (1, N_ANCHORS, 16)]:
                raise ValueError(f"{path}: not the BlazeFace short-range model (input "
                                 f"{shape}, outputs {outs}; expected (1, {INPUT_SIZE}, "
                                 f"{INPUT_SIZE}, 3) and (1, {N_ANCHORS}, 16/1))")
            self._interpreter = it
            self._anchors = ssd_anchors()
        return self._interpreter

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_interpreter"] = None
        state["_anchors"] = None
        return state

    def raw_detections(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every face BlazeFace finds in one frame, after weighted NMS.

        The frame is letterboxed whole into the model's input; when nothing is found and
        ``retry_tiles`` is set, it is searched again in overlapping square tiles of half its
        shorter side (stride a quarter of it), whose detections are merged by weighted NMS.

        Parameters
        ----------
        image : numpy.ndarray
            RGB uint8 (H, W, 3).

        Returns
        -------
        boxes : numpy.ndarray
            float64 (M, 4) ``x1, y1, x2, y2`` in the frame's pixels.
        keypoints : numpy.ndarray
            float64 (M, 6, 2) in the frame's pixels: eyes, nose tip, mouth centre, ears.
        scores : numpy.ndarray
            float64 (M,), best first.
        """
        image = np.ascontiguousarray(image)
        found = self._invoke(image)
        h, w = image.shape[:2]
        side = min(h, w) // 2
        if len(found[2]) or not self.retry_tiles or side < INPUT_SIZE // 2:
            return found
        step = max(1, side // 2)
        parts = []
        for y in sorted({*range(0, h - side + 1, step), h - side}):
            for x in sorted({*range(0, w - side + 1, step), w - side}):
                b, k, s = self._invoke(image[y:y + side, x:x + side])
                parts.append((b + [x, y, x, y], k + [x, y], s))
        boxes, kps, scores = (np.concatenate(a) for a in zip(*parts))
        return weighted_nms(boxes, kps, scores, self.nms_iou)

    def _invoke(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One pass of the model on ``image`` letterboxed; boxes and keypoints in its pixels."""
        import cv2

        it = self.interpreter
        h, w = image.shape[:2]
        scale = INPUT_SIZE / max(h, w)
        rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(image, (rw, rh), interpolation=interp)
        px, py = (INPUT_SIZE - rw) // 2, (INPUT_SIZE - rh) // 2
        x = np.full((1, INPUT_SIZE, INPUT_SIZE, 3), -1.0, np.float32)  # black border
        x[0, py:py + rh, px:px + rw] = small.astype(np.float32) * (2.0 / 255.0) - 1.0
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        outs = {tuple(d["shape"])[-1]: d["index"] for d in it.get_output_details()}
        reg = it.get_tensor(outs[16])[0]
        logit = it.get_tensor(outs[1])[0, :, 0]
        boxes, kps, scores = decode_detections(reg, logit, self._anchors, self.min_prob)
        boxes, kps, scores = weighted_nms(boxes, kps, scores, self.nms_iou)
        # [0, 1] input coordinates -> image pixels (undo the letterbox)
        to_px = np.array([INPUT_SIZE * w / rw, INPUT_SIZE * h / rh])
        off = np.array([px * w / rw, py * h / rh])
        boxes = (boxes.reshape(-1, 2, 2) * to_px - off).reshape(-1, 4)
        return boxes, kps * to_px - off, scores

    def detect(self, images: list[np.ndarray] | np.ndarray) -> FaceCrops:
        """Find the largest face in each frame and crop it.

        Parameters
        ----------
        images : list of numpy.ndarray or numpy.ndarray
            RGB uint8 frames (H, W, 3).

        Returns
        -------
        FaceCrops
            One entry per input frame; ``landmarks`` are MTCNN-ordered 5 points (module
            docstring), ``probs`` BlazeFace's scores.
        """
        images = list(images)
        out = empty_faces(len(images), self.image_size)
        if self.whole_image:
            take_whole(images, range(len(images)), out)
            return out
        for i, image in enumerate(images):
            boxes, kps, scores = self.raw_detections(image)
            out.n_faces[i] = len(scores)
            if not len(scores):
                continue
            k = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
            h, w = image.shape[:2]
            box = np.clip(to_mtcnn_box(boxes[k]) if self.mtcnn_box else boxes[k], 0,
                          [w, h, w, h])
            out.boxes[i] = box
            out.probs[i] = scores[k]
            out.landmarks[i] = five_points(kps[k])
            out.crops[i] = crop_face(image, box, self.image_size, self.margin)
            out.found[i] = True
        if self.fallback == "image":
            take_whole(images, np.flatnonzero(~out.found), out)
        return out


def to_mtcnn_box(box: np.ndarray) -> np.ndarray:
    """BlazeFace's box mapped to MTCNN's framing of the same face (:data:`BOX_VS_MTCNN`).

    Parameters
    ----------
    box : numpy.ndarray
        float (4,) ``x1, y1, x2, y2`` of BlazeFace.

    Returns
    -------
    numpy.ndarray
        float64 (4,) ``x1, y1, x2, y2``.
    """
    dx, dy, rw, rh = BOX_VS_MTCNN
    w, h = (box[2] - box[0]) / rw, (box[3] - box[1]) / rh
    x1, y1 = box[0] - dx * w, box[1] - dy * h
    return np.array([x1, y1, x1 + w, y1 + h], np.float64)


def five_points(keypoints: np.ndarray) -> np.ndarray:
    """MTCNN's 5 landmarks from BlazeFace's 6 keypoints.

    Parameters
    ----------
    keypoints : numpy.ndarray
        float (6, 2): the subject's right eye, left eye, nose tip, mouth centre, right and
        left ear tragion (BlazeFace's order).

    Returns
    -------
    numpy.ndarray
        float64 (5, 2) in MTCNN's order: the eye on the image's left, the one on its right,
        nose, mouth corners (left, right), estimated as the mouth centre ±
        :data:`MOUTH_HALF_WIDTH` × (right eye − left eye).
    """
    kp = np.asarray(keypoints, np.float64)
    eye_a, eye_b = (kp[0], kp[1]) if kp[0, 0] <= kp[1, 0] else (kp[1], kp[0])
    half = MOUTH_HALF_WIDTH * (eye_b - eye_a)
    return np.stack([eye_a, eye_b, kp[2], kp[3] - half, kp[3] + half])
