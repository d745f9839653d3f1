"""DFDC (Dolhansky et al., 2020) folders, labelled by their ``metadata.json``::

    <root>/[<part>/]metadata.json   {"abc.mp4": {"label": "FAKE", "split": "train",
                                                 "original": "xyz.mp4"}, ...}
    <root>/[<part>/]abc.mp4

Every folder at or below ``root`` that holds a ``metadata.json`` is read (the Kaggle
``train_sample_videos`` folder, or the ``dfdc_train_part_NN`` folders of the full set).
The group of a clip is the stem of its original (its own stem for a REAL clip), so a fake
and the real video it was made from share a group. DFDC gives no actor ids, so one actor
filmed in several original videos still spans several groups.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pandas as pd

from deepmetric.datasets.items import (ManifestError, check_list_size, parse_label,
                                       validate_manifest)

__all__ = ["METADATA", "load"]

METADATA = "metadata.json"


def load(root: str | os.PathLike, check_files: bool = True) -> pd.DataFrame:
    """List DFDC clips from the ``metadata.json`` files at or below ``root``.

    Parameters
    ----------
    root : path-like
        A folder with a ``metadata.json`` or a parent of such folders (searched
        recursively).
    check_files : bool
        When True, entries whose video is absent are skipped with one
        :class:`UserWarning` per ``metadata.json`` naming them (Kaggle samples often ship
        only part of the listed videos); when False every entry is kept unchecked.

    Returns
    -------
    pandas.DataFrame
        A validated manifest, one row per clip, with ``path``, ``label`` (0 REAL, 1 FAKE),
        ``video_id`` (path relative to ``root``), ``group`` (stem of the original),
        ``original`` (file name of the original, empty for REAL), ``split`` (from the
        metadata; ``"train"`` when absent), ``method`` (``"real"`` or ``"DFDC"``: DFDC does
        not say which face-swap method made a fake) and ``kind``.

    Raises
    ------
    ManifestError
        When no ``metadata.json`` is found, one is not valid JSON or not an object of
        objects, an entry has an unknown label or a FAKE entry no ``original``, a clip is
        listed twice, or no entry has its file. Messages name the JSON file and the entry.
    """
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"DFDC root not found: {root}")
    metas = sorted(root.rglob(METADATA))
    if not metas:
        raise ManifestError(f"{root}: no {METADATA} found at or below this folder")

    rows: list[dict[str, object]] = []
    seen: dict[str, Path] = {}
    listed = 0
    for meta in metas:
        entries = _read(meta)
        listed += len(entries)
        absent = []
        for name, info in entries.items():
            where = f"{meta} entry {name!r}"
            if not isinstance(info, dict):
                raise ManifestError(f"{where}: expected an object with 'label', got "
                                    f"{type(info).__name__}")
            if "label" not in info:
                raise ManifestError(f"{where}: no 'label'")
            label = parse_label(info["label"], where=where)
            original = info.get("original") or ""
            if label == 1 and not original:
                raise ManifestError(f"{where}: a FAKE entry needs its 'original'")
            path = meta.parent / name
            if check_files and not path.is_file():
                absent.append(name)
                continue
            if name in seen:
                raise ManifestError(f"{where}: {name} is also listed in {seen[name]}")
            seen[name] = meta
            rows.append(dict(
                path=str(path), label=label,
                video_id=path.relative_to(root).as_posix(),
                group=Path(str(original)).stem if label else Path(name).stem,
                original=str(original), split=str(info.get("split") or "train"),
                method="DFDC" if label else "real"))
        if absent:
            shown = ", ".join(absent[:10]) + (", ..." if len(absent) > 10 else "")
            warnings.warn(f"{meta}: {len(absent)} of {len(entries)} listed videos not found, "
                          f"skipped: {shown}", UserWarning, stacklevel=2)
    if not rows:
        raise ManifestError(f"{root}: none of the {listed} videos listed in {len(metas)} "
                            f"{METADATA} file(s) is present")
    return validate_manifest(pd.DataFrame(rows), check_files=check_files,
                             source=f"DFDC {root}")


def _read(meta: Path) -> dict[str, object]:
    check_list_size(meta, METADATA)
    try:
        entries = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{meta}: not valid JSON ({e})") from None
    if not isinstance(entries, dict):
        raise ManifestError(f"{meta}: expected an object mapping file names to entries, "
                            f"got {type(entries).__name__}")
    return entries
