"""FaceForensics++ (Rössler et al., ICCV 2019) in its official download layout.

::

    <root>/original_sequences/youtube/<compression>/videos/TTT.mp4            real
    <root>/manipulated_sequences/<Method>/<compression>/videos/TTT_SSS.mp4    fake

A fake ``TTT_SSS`` keeps the scene of original ``TTT`` (target) and takes the face or
expression of ``SSS`` (source). Groups are the connected components of the identity graph
whose edges are the fakes, so ``TTT``, ``SSS``, ``TTT_SSS`` and ``SSS_TTT`` share a group.
``pair_id`` names the original a clip's frames come from: ``real/TTT`` for ``TTT_SSS`` and
for ``TTT`` itself, so a fake and the real clip it was made from share it (source-paired
mining, :mod:`deepmetric.learn.paired`).

Only the ``TTT_SSS`` naming is read: the DeepFakeDetection/``actors`` part of FF++ uses
another naming and is not handled here.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Iterable

import pandas as pd

from deepmetric.datasets import connected_groups
from deepmetric.datasets.items import VIDEO_EXTENSIONS, ManifestError, validate_manifest

__all__ = ["METHODS", "load"]

METHODS: tuple[str, ...] = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")

_REAL_NAME = re.compile(r"^[^_]+$")
_FAKE_NAME = re.compile(r"^(?P<target>[^_]+)_(?P<source>[^_]+)$")


def load(
    root: str | os.PathLike,
    compression: str = "c23",
    methods: Iterable[str] | str = METHODS,
    include_real: bool = True,
    check_files: bool = True,
) -> pd.DataFrame:
    """List a FaceForensics++ download as a manifest.

    Parameters
    ----------
    root : path-like
        Folder holding ``original_sequences/`` and ``manipulated_sequences/``.
    compression : str
        ``"c0"`` (raw), ``"c23"`` (HQ) or ``"c40"`` (LQ): the folder level under each
        sequence.
    methods : iterable of str or str
        Manipulation folders to include. A method absent on disk is skipped with a
        :class:`UserWarning`; if none of them is present a :class:`ManifestError` is raised.
        An empty sequence lists the originals only.
    include_real : bool
        Include ``original_sequences/youtube`` (required to exist when True).
    check_files : bool
        Passed to :func:`deepmetric.datasets.items.validate_manifest`.

    Returns
    -------
    pandas.DataFrame
        A validated manifest, one row per clip, sorted by method then name, with columns
        ``path``, ``label`` (0 real, 1 fake), ``video_id`` (``"real/033"``,
        ``"Deepfakes/033_097"``), ``group`` (identity component, e.g. ``"033-097"``),
        ``method`` (``"real"`` or the method folder), ``target_id``, ``source_id``
        (both the id for originals), ``pair_id`` (``"real/TTT"``: the original whose
        frames the clip shows; even when that original is not in the download) and
        ``kind``.

    Raises
    ------
    ManifestError
        When ``root`` or the originals folder is missing, when no requested method is
        found, or when a clip's name does not follow ``TTT.mp4`` / ``TTT_SSS.mp4``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"FaceForensics++ root not found: {root}")
    methods = [methods] if isinstance(methods, str) else [str(m) for m in methods]

    rows: list[dict[str, str | int]] = []
    if include_real:
        real_dir = root / "original_sequences" / "youtube" / compression / "videos"
        if not real_dir.is_dir():
            raise ManifestError(f"FaceForensics++ originals not found: {real_dir} "
                                f"(wrong root or compression {compression!r}?)")
        for f in _videos(real_dir):
            if not _REAL_NAME.match(f.stem):
                raise ManifestError(f"{f}: an original should be named TTT.mp4 (no '_')")
            rows.append(dict(path=str(f), label=0, video_id=f"real/{f.stem}", method="real",
                             target_id=f.stem, source_id=f.stem))

    found, missing = [], []
    for method in methods:
        fake_dir = root / "manipulated_sequences" / method / compression / "videos"
        if not fake_dir.is_dir():
            missing.append(method)
            continue
        found.append(method)
        for f in _videos(fake_dir):
            m = _FAKE_NAME.match(f.stem)
            if m is None:
                raise ManifestError(f"{f}: a {method} fake should be named TTT_SSS.mp4 "
                                    f"(target_source)")
            rows.append(dict(path=str(f), label=1, video_id=f"{method}/{f.stem}",
                             method=method, target_id=m["target"], source_id=m["source"]))
    if methods and not found:
        raise ManifestError(f"{root}: none of the methods {methods} found under "
                            f"manipulated_sequences/<method>/{compression}/videos")
    if missing:
        warnings.warn(f"FaceForensics++ at {root}: method(s) {missing} not found for "
                      f"{compression}; skipped", UserWarning, stacklevel=2)
    if not rows:
        raise ManifestError(f"{root}: no FaceForensics++ clip found")

    df = pd.DataFrame(rows)
    groups = connected_groups(
        nodes=pd.concat([df["target_id"], df["source_id"]]),
        edges=zip(df["target_id"], df["source_id"]),
    )
    df["group"] = df["target_id"].map(groups)
    df["pair_id"] = "real/" + df["target_id"]
    return validate_manifest(df, check_files=check_files, source=f"FaceForensics++ {root}")


def _videos(folder: Path) -> list[Path]:
    """Video files directly in ``folder``, sorted; hidden files ignored."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in VIDEO_EXTENSIONS)
