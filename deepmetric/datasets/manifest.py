"""A manifest CSV written by hand or by another tool::

    path,label[,group,split,video_id,method,...]
    clips/a.mp4,real
    clips/a_swapped.mp4,fake,a

``path`` and ``label`` are required. Labels are ``0``/``1`` or ``real``/``fake`` (any case;
the synonyms of :func:`deepmetric.datasets.items.parse_label` also work). Relative paths are read
from the CSV's folder. ``video_id`` defaults to the path as written in the CSV, ``group`` to
the ``video_id`` (an empty ``group`` cell too). Other columns are kept as text.

Errors name the CSV and the **data row**, counted from 1 with the header not counted (data
row 1 is line 2 of a file without blank lines).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from deepmetric.datasets.items import (ManifestError, check_list_size, parse_label,
                                       validate_manifest)

__all__ = ["REQUIRED", "OPTIONAL", "load"]

REQUIRED: tuple[str, ...] = ("path", "label")
OPTIONAL: tuple[str, ...] = ("group", "split", "video_id", "method")


def load(path: str | os.PathLike, check_files: bool = True,
         head: int | None = None) -> pd.DataFrame:
    """Read and validate a manifest CSV.

    Parameters
    ----------
    path : path-like
        The CSV (UTF-8, optional BOM, header row first).
    check_files : bool
        Raise when a listed file does not exist.
    head : int, optional
        Keep only the first ``head`` data rows (in the file's order), e.g. a fixed sample
        of a hash-ordered list.

    Returns
    -------
    pandas.DataFrame
        A validated manifest (see :mod:`deepmetric.datasets.items`): absolute ``path`` (str),
        ``label`` (int64, 0 real / 1 fake), ``video_id``, ``group`` and ``kind`` (str),
        plus the CSV's other columns as text, in the CSV's row order.

    Raises
    ------
    ManifestError
        On a CSV over :data:`~deepmetric.datasets.items.MAX_LIST_BYTES`, an unreadable
        CSV, a missing ``path``/``label`` column, an empty path, an unknown or empty label,
        a missing file, an empty or duplicate ``video_id``, or a path listed twice; the
        message names the CSV and the data row(s).
    """
    csv = Path(path)
    if not csv.is_file():
        raise ManifestError(f"manifest CSV not found: {csv}")
    check_list_size(csv, "manifest CSV")
    try:  # read as plain text (never decompressed by its name): its size bounds memory
        df = pd.read_csv(csv, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                         nrows=None if head is None else int(head), compression=None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ManifestError(f"{csv}: not a readable CSV ({e})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(f"{csv}: missing required column(s) {missing}; found "
                            f"{list(df.columns)} (the first line must be a header)")
    if df.columns.duplicated().any():
        raise ManifestError(f"{csv}: duplicate column(s) "
                            f"{sorted(set(df.columns[df.columns.duplicated()]))}")
    if len(df) == 0:
        raise ManifestError(f"{csv}: no data rows")

    base = csv.parent
    seen_path: dict[str, int] = {}
    labels = []
    for i, (p, lab) in enumerate(zip(df["path"], df["label"]), start=1):
        where = f"{csv} data row {i} (1-based, header not counted)"
        if not p.strip():
            raise ManifestError(f"{where}: empty path")
        if not str(lab).strip():
            raise ManifestError(f"{where}: empty label (expected 0/1 or real/fake)")
        labels.append(parse_label(lab, where=f"{where}, path {p!r}"))
        full = os.path.abspath(base / p)
        if check_files and not os.path.isfile(full):
            raise ManifestError(f"{where}: file not found: {full} (path {p!r} is read "
                                f"relative to the CSV's folder)")
        if full in seen_path:
            raise ManifestError(f"{where}: {p!r} is already listed in data row "
                                f"{seen_path[full]}")
        seen_path[full] = i
    df["label"] = labels

    if "video_id" not in df.columns:
        df["video_id"] = df["path"]
    else:
        ids = df["video_id"].str.strip()
        empty = np.flatnonzero((ids == "").to_numpy())
        if len(empty):
            raise ManifestError(f"{csv} data row {empty[0] + 1} (1-based, header not "
                                f"counted): empty video_id")
        dup = np.flatnonzero(ids.duplicated().to_numpy())
        if len(dup):
            i = int(dup[0])
            first = int(np.flatnonzero((ids == ids.iat[i]).to_numpy())[0])
            raise ManifestError(f"{csv} data row {i + 1} (1-based, header not counted): "
                                f"duplicate video_id {ids.iat[i]!r} (first in data row "
                                f"{first + 1})")
    if "group" in df.columns:
        df["group"] = df["group"].where(df["group"].str.strip() != "", np.nan)
    return validate_manifest(df, root=base, check_files=check_files, source=str(csv))
