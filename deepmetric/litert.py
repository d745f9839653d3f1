"""LiteRT (TensorFlow Lite) interpreters for the MediaPipe models deepmetric runs.

MediaPipe's FaceMesh (:mod:`deepmetric.features.backbones.facemesh`) and BlazeFace
(:mod:`deepmetric.video.blazeface`) models come as ``.tflite`` files inside the mediapipe
wheel and run on ``ai-edge-litert``. A shared service below every layer.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["load_interpreter"]


def load_interpreter(path: str | os.PathLike, *, num_threads: int, what: str,
                     user: str) -> Any:
    """A LiteRT interpreter of ``path`` with its tensors allocated.

    Parameters
    ----------
    path : path-like
        The ``.tflite`` model file.
    num_threads : int
        CPU threads of the interpreter.
    what : str
        The model's name in error messages ("FaceMesh model").
    user : str
        The class that needs it, in the install hint ("FaceMeshEmbedder").

    Returns
    -------
    ai_edge_litert.interpreter.Interpreter
        Ready to run; checking its input and output shapes is the caller's.

    Raises
    ------
    ModuleNotFoundError
        ai-edge-litert is not installed (the message says how to install it).
    ValueError
        The file is not a loadable LiteRT model (named, with LiteRT's reason).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"{user} needs LiteRT: pip install ai-edge-litert==2.3.0 (or "
            "pip install 'deepmetric[landmarks]')") from exc
    try:
        it = Interpreter(model_path=str(path), num_threads=num_threads)
        it.allocate_tensors()
    except Exception as exc:  # noqa: BLE001 — name the file and the problem
        raise ValueError(f"{path}: not a loadable {what} "
                         f"({type(exc).__name__}: {exc})") from exc
    return it
