"""Celeb-DF (Li et al., CVPR 2020), v2 layout (v1 has the same folders)::

    <root>/Celeb-real/idX_NNNN.mp4              real, celebrity X
    <root>/Celeb-synthesis/idX_idY_NNNN.mp4     fake: video idX_NNNN with the face of idY
    <root>/YouTube-real/NNNNN.mp4               real, other people (no identity given)
    <root>/List_of_testing_videos.txt           "<label> <relpath>" per line, official test set

In ``List_of_testing_videos.txt`` the label is **1 for real and 0 for fake** (the reverse
of this package's convention); it is checked against the folder, which decides the label.

Groups are the connected components of the celebrity graph whose edges are the fakes
(``idX``—``idY``). In Celeb-DF v2 these components are large (swaps link most celebrities),
so grouped splits have few groups; each YouTube-real clip is its own group. Folder names are
matched case-insensitively (some copies spell ``Youtube-real``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from deepmetric.datasets import connected_groups
from deepmetric.datasets.items import (VIDEO_EXTENSIONS, ManifestError, check_list_size,
                                       validate_manifest)

__all__ = ["FOLDERS", "TEST_LIST", "load"]

#: folder → (label, method)
FOLDERS: dict[str, tuple[int, str]] = {
    "Celeb-real": (0, "real"),
    "YouTube-real": (0, "real"),
    "Celeb-synthesis": (1, "Celeb-synthesis"),
}
TEST_LIST = "List_of_testing_videos.txt"

_CELEB_REAL = re.compile(r"^(?P<target>id\d+)_(?P<clip>\d+)$")
_CELEB_FAKE = re.compile(r"^(?P<target>id\d+)_(?P<source>id\d+)_(?P<clip>\d+)$")


def load(root: str | os.PathLike, check_files: bool = True) -> pd.DataFrame:
    """List a Celeb-DF download as a manifest.

    Parameters
    ----------
    root : path-like
        Folder holding ``Celeb-real/``, ``Celeb-synthesis/`` and ``YouTube-real/``
        (at least one of them) and optionally ``List_of_testing_videos.txt``.
    check_files : bool
        When True a file named in the test list but absent on disk is an error; when
        False it is kept as a row (label from the list), so a manifest can be built where
        only part of the videos is present.

    Returns
    -------
    pandas.DataFrame
        A validated manifest, one row per clip, with ``path``, ``label`` (0 real, 1 fake),
        ``video_id`` (path relative to ``root``, e.g. ``"Celeb-synthesis/id0_id1_0000.mp4"``),
        ``group``, ``method`` (``"real"`` or ``"Celeb-synthesis"``), ``split`` (``"test"``
        for files in the test list, else ``"train"``; all ``"train"`` without a list),
        ``target_id``, ``source_id`` (``idX``; empty for YouTube-real) and ``kind``.

    Raises
    ------
    ManifestError
        On a missing root or folders, a clip name that does not follow the Celeb-DF
        naming, or a bad test-list line (wrong format, unknown label, label disagreeing
        with the folder, file outside the three folders, missing file with
        ``check_files``). Messages name the file and line.
    """
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"Celeb-DF root not found: {root}")
    dirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    present = {name: dirs[name.lower()] for name in FOLDERS if name.lower() in dirs}
    if not present:
        raise ManifestError(f"{root}: none of the Celeb-DF folders {list(FOLDERS)} found")

    rows: dict[str, dict[str, object]] = {}  # relpath → row
    for name, folder in present.items():
        for f in sorted(folder.iterdir()):
            if f.is_file() and not f.name.startswith(".") \
                    and f.suffix.lower() in VIDEO_EXTENSIONS:
                rel = f"{name}/{f.name}"
                rows[rel] = _row(name, f.name, f, where=str(f))

    listed = _read_test_list(root / TEST_LIST) if (root / TEST_LIST).is_file() else {}
    for rel, (real_flag, lineno) in listed.items():
        where = f"{root / TEST_LIST} line {lineno}"
        folder, _, fname = rel.partition("/")
        canon = next((n for n in FOLDERS if n.lower() == folder.lower()), None)
        if canon is None or not fname or "/" in fname:
            raise ManifestError(f"{where}: {rel!r} is not in one of {list(FOLDERS)}")
        key = f"{canon}/{fname}"
        if key not in rows:
            if check_files:
                raise ManifestError(f"{where}: listed file not found: {root / rel}")
            base = present.get(canon, root / canon)
            rows[key] = _row(canon, fname, base / fname, where=where)
        if rows[key]["label"] != 1 - real_flag:  # the list says 1 = real, 0 = fake
            raise ManifestError(f"{where}: listed as {'real' if real_flag else 'fake'} "
                                f"(list label {real_flag}; 1 = real) but {canon}/ holds "
                                f"{'fake' if rows[key]['label'] else 'real'} clips")
        rows[key]["split"] = "test"

    if not rows:
        raise ManifestError(f"{root}: no Celeb-DF clip found")
    df = pd.DataFrame(list(rows.values()))
    df["split"] = df["split"].fillna("train") if "split" in df else "train"
    fakes = df["source_id"] != ""
    groups = connected_groups(
        nodes=df.loc[df["target_id"] != "", "target_id"],
        edges=zip(df.loc[fakes, "target_id"], df.loc[fakes, "source_id"]),
    )
    df["group"] = [groups[t] if t else vid for t, vid in zip(df["target_id"], df["video_id"])]
    df = df.sort_values("video_id", kind="stable")
    return validate_manifest(df, check_files=check_files, source=f"Celeb-DF {root}")


def _row(folder: str, fname: str, path: Path, *, where: str) -> dict[str, object]:
    label, method = FOLDERS[folder]
    stem = Path(fname).stem
    target = source = ""
    if folder == "Celeb-real":
        m = _CELEB_REAL.match(stem)
        if m is None:
            raise ManifestError(f"{where}: a Celeb-real clip should be named idX_NNNN.mp4")
        target = m["target"]
    elif folder == "Celeb-synthesis":
        m = _CELEB_FAKE.match(stem)
        if m is None:
            raise ManifestError(f"{where}: a Celeb-synthesis clip should be named "
                                f"idX_idY_NNNN.mp4")
        target, source = m["target"], m["source"]
    return dict(path=str(path), label=label, video_id=f"{folder}/{fname}", method=method,
                target_id=target, source_id=source)


def _read_test_list(path: Path) -> dict[str, tuple[int, int]]:
    """Parse the official test list: relpath → (1 if real else 0, 1-based line number)."""
    out: dict[str, tuple[int, int]] = {}
    check_list_size(path, "test list")
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ManifestError(f"{path} line {lineno}: expected '<label> <relpath>', "
                                f"got {line!r}")
        flag, rel = parts
        if flag not in ("0", "1"):
            raise ManifestError(f"{path} line {lineno}: label {flag!r} is not 0 (fake) or "
                                f"1 (real)")
        rel = rel.replace("\\", "/")
        rel = rel[2:] if rel.startswith("./") else rel
        if rel in out:
            raise ManifestError(f"{path} line {lineno}: {rel} already listed on line "
                                f"{out[rel][1]}")
        out[rel] = (int(flag), lineno)
    return out
