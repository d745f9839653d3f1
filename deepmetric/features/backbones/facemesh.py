"""Face geometry: MediaPipe FaceMesh's 468 3-D landmarks on the face crops.

A face swap renders a new inner face into the target frame; whether its shape (the
landmarks' layout once pose, position and scale are taken out) or FaceMesh's own belief
that it sees a face differs between real and fake faces is a cue that owes nothing to
texture. This module gives both as feature blocks of the same 160×160 crops, usable as an
:class:`~deepmetric.features.extract.Extractor` backbone or on cached crops.

The model is MediaPipe's ``face_landmark.tflite`` (FaceMesh v1, 192×192 RGB input in
[0, 1]; outputs 468 × (x, y, z) in input pixels and a face-presence logit), shipped inside
the PyPI wheel ``mediapipe==0.10.21`` (Apache-2.0; later wheels dropped the legacy models).
Only the file is used, never ``mediapipe``'s own code (its wheel pins numpy < 2): install it
with ``pip install --no-deps mediapipe==0.10.21``. It runs on LiteRT
(``ai-edge-litert``, Apache-2.0), on the CPU. Nothing is downloaded at run time.

Blocks (named ``facemesh/<name>``):

``facemesh/shape`` (1404)
    The landmarks with position, scale and in-plane rotation taken out: centred on their
    mean (x, y), divided by their RMS distance from it, and rotated so that the line
    between the two eye centres is horizontal; z is scaled by the same factor.
``facemesh/flag`` (1)
    FaceMesh's face-presence logit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from deepmetric.packaged import model_file

__all__ = ["FaceMeshEmbedder", "facemesh_weights_path", "normalised_shape", "PREFIX"]

#: Prefix of the block names this embedder returns.
PREFIX = "facemesh/"
BLOCKS = ("shape", "flag")
INPUT_SIZE = 192
N_LANDMARKS = 468
_MODEL = Path("modules") / "face_landmark" / "face_landmark.tflite"
#: FaceMesh indices of the corners of each eye (subject's right eye, then left eye).
RIGHT_EYE, LEFT_EYE = (33, 133), (362, 263)


def facemesh_weights_path(weights_path: str | os.PathLike | None = None) -> Path:
    """The FaceMesh model file: ``weights_path``, or the copy in the ``mediapipe`` wheel.

    Raises
    ------
    FileNotFoundError
        Neither is there; the message says how to install the wheel.
    """
    return model_file(weights_path, package="mediapipe", relpath=_MODEL,
                      what="FaceMesh model", install="pip install --no-deps mediapipe==0.10.21")


def normalised_shape(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks with position, scale and in-plane rotation taken out.

    Parameters
    ----------
    landmarks : numpy.ndarray
        float (N, 468, 3) FaceMesh landmarks (x, y, z), any pixel units.

    Returns
    -------
    numpy.ndarray
        float32 (N, 468, 3): (x, y) centred on their mean, scaled to unit RMS distance from
        it and rotated so that the eye centres lie on a horizontal line (the subject's right
        eye on the left); z scaled by the same factor and centred.
    """
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (N_LANDMARKS, 3):
        raise ValueError(f"landmarks must be (N, {N_LANDMARKS}, 3), got {lm.shape}")
    lm = lm - lm.mean(axis=1, keepdims=True)
    scale = np.sqrt((lm[:, :, :2] ** 2).sum(axis=2).mean(axis=1))[:, None, None]
    lm = lm / np.maximum(scale, 1e-12)
    eye = lm[:, list(LEFT_EYE), :2].mean(axis=1) - lm[:, list(RIGHT_EYE), :2].mean(axis=1)
    angle = np.arctan2(eye[:, 1], eye[:, 0])
    c, s = np.cos(-angle)[:, None], np.sin(-angle)[:, None]
    x, y = lm[:, :, 0], lm[:, :, 1]
    out = np.stack([c * x - s * y, s * x + c * y, lm[:, :, 2]], axis=2)
    return out.astype(np.float32)


class FaceMeshEmbedder:
    """FaceMesh geometry blocks of face crops (see the module docstring).

    Parameters
    ----------
    blocks : sequence of {"shape", "flag"}
        Blocks to return, as ``facemesh/<name>``.
    weights_path : path-like, optional
        An explicit ``face_landmark.tflite`` (default: the ``mediapipe`` wheel's).
    num_threads : int
        LiteRT CPU threads.
    """

    def __init__(self, blocks: Sequence[str] = BLOCKS, weights_path: str | None = None,
                 num_threads: int = 1):
        unknown = [b for b in blocks if b not in BLOCKS]
        if unknown or not blocks:
            raise ValueError(f"FaceMesh blocks must be some of {list(BLOCKS)}, got {list(blocks)}")
        self.blocks = list(blocks)
        self.weights_path = weights_path
        self.num_threads = num_threads
        self._interpreter = None

    def settings(self) -> dict:
        """Everything that changes the output (used in cache keys)."""
        return {"embedder": "mediapipe-0.10.21/face_landmark.tflite", "blocks":
                sorted(self.blocks), "normalisation": 1,
                "weights_path": os.path.abspath(self.weights_path) if self.weights_path
                else None}

    def feature_names(self) -> list[str]:
        """Names of the blocks :meth:`embed` returns."""
        return [PREFIX + b for b in self.blocks]

    @property
    def interpreter(self) -> Any:
        """The LiteRT interpreter of the FaceMesh model, tensors allocated."""
        if self._interpreter is None:
            from deepmetric.litert import load_interpreter

            path = facemesh_weights_path(self.weights_path)
            it = load_interpreter(path, num_threads=self.num_threads, what="FaceMesh model",
                                  user="FaceMeshEmbedder")
            shape = tuple(it.get_input_details()[0]["shape"])
            if shape != (1, INPUT_SIZE, INPUT_SIZE, 3):
                raise ValueError(f"{path}: not the FaceMesh model (input {shape}, expected "
                                 f"(1, {INPUT_SIZE}, {INPUT_SIZE}, 3))")
            self._interpreter = it
        return self._interpreter

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_interpreter"] = None
        return state

    def landmarks(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """FaceMesh on face crops.

        Parameters
        ----------
        crops : numpy.ndarray
            uint8 (N, H, W, 3) RGB face crops (resized to 192×192, bilinear).

        Returns
        -------
        landmarks : numpy.ndarray
            float32 (N, 468, 3), (x, y) in the crop's pixels, z in the same scale.
        flag : numpy.ndarray
            float32 (N,) face-presence logit.
        """
        import torch

        from deepmetric.features.backbones.base import checked_crops

        crops = checked_crops(crops)
        n = len(crops)
        lms = np.zeros((n, N_LANDMARKS, 3), np.float32)
        flags = np.zeros(n, np.float32)
        if n == 0:
            return lms, flags
        it = self.interpreter
        inp = it.get_input_details()[0]["index"]
        outs = sorted(it.get_output_details(), key=lambda d: -int(np.prod(d["shape"])))
        h, w = crops.shape[1:3]
        to_crop = np.array([w, h, w], np.float32) / INPUT_SIZE  # input pixels → crop pixels
        for i in range(n):
            x = torch.from_numpy(np.ascontiguousarray(crops[i])).permute(2, 0, 1)[None]
            x = x.float() / 255.0
            if (h, w) != (INPUT_SIZE, INPUT_SIZE):
                x = torch.nn.functional.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE),
                                                    mode="bilinear", align_corners=False)
            it.set_tensor(inp, x.permute(0, 2, 3, 1).contiguous().numpy())
            it.invoke()
            lm = it.get_tensor(outs[0]["index"]).reshape(N_LANDMARKS, 3)
            lms[i] = lm * to_crop
            flags[i] = float(it.get_tensor(outs[1]["index"]).ravel()[0])
        return lms, flags

    def embed(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Embed face crops.

        Parameters
        ----------
        crops : numpy.ndarray
            uint8 (N, H, W, 3) RGB face crops.

        Returns
        -------
        dict of str to numpy.ndarray
            ``facemesh/shape`` float32 (N, 1404) and/or ``facemesh/flag`` float32 (N, 1).
        """
        lms, flags = self.landmarks(crops)
        out = {}
        if "shape" in self.blocks:
            out[PREFIX + "shape"] = normalised_shape(lms).reshape(len(lms), N_LANDMARKS * 3)
        if "flag" in self.blocks:
            out[PREFIX + "flag"] = flags[:, None]
        return {b: out[b] for b in self.feature_names()}
