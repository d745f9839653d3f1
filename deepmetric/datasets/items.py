"""Items: the manifest table every later stage reads.

A manifest is a :class:`pandas.DataFrame` with one row per item (a video clip or an
image; an image is a one-frame item). Required columns:

``path``      str, absolute path of the media file
``label``     int64, 0 = real, 1 = fake
``video_id``  str, unique id of the item
``group``     str, identity group: a fake and the real clips of its identities share a
              group, so that splits never let an identity straddle train and test

Optional columns kept as they are: ``split`` (``"train"``/``"test"``/...), ``method``
(manipulation method, ``"real"`` for real items) and ``kind`` (``"video"``/``"image"``,
filled from the file extension when absent).

``clip`` (optional, str) joins items that are frames of one video stored as separate files,
e.g. face crops named ``<video>-<frame>-<face>.png``: items with the same non-empty ``clip``
become the frames of one video whose ``video_id`` is the clip id (see
:meth:`deepmetric.Extractor.features`), so that they are scored, split and pooled as one
clip. They must share their label and group; an empty cell leaves an item on its own.

Self-blended training (:func:`add_self_blended`) adds two more: ``blend_seed`` (which
self-blended copy of ``path`` a row is; empty for the clip itself) and ``role``
(``"both"``; ``"train"``: only ever trained on, e.g. the pseudo-fakes; ``"test"``: only
ever tested on, e.g. the real fakes when training on pseudo-fakes alone).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = [
    "ManifestError",
    "REQUIRED_COLUMNS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "parse_label",
    "media_kind",
    "validate_manifest",
    "manifest_from_paths",
    "add_self_blended",
    "add_degraded",
    "ROLES",
    "media_under",
    "MAX_LIST_BYTES",
    "check_list_size",
]

#: Values of the optional ``role`` column.
ROLES = ("both", "train", "test")

REQUIRED_COLUMNS = ("path", "label", "video_id", "group")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})

_LABELS: Mapping[str, int] = {
    "0": 0, "real": 0, "original": 0, "pristine": 0, "authentic": 0,
    "1": 1, "fake": 1, "manipulated": 1, "deepfake": 1, "synthesis": 1,
}


#: Largest list of items (a manifest CSV, a dataset's metadata file) read: 256 MiB, about
#: two million rows, each a short line. Read whole into memory, a list is several times its
#: size; a larger file is refused by name before it is read.
MAX_LIST_BYTES = 256 * 2**20


class ManifestError(ValueError):
    """A manifest row or column is invalid; the message names the row and the problem."""


def check_list_size(path: str | os.PathLike, what: str = "manifest") -> None:
    """Refuse a list of items larger than :data:`MAX_LIST_BYTES` before it is read.

    Raises
    ------
    ManifestError
        The file is larger; the message names it, its size and the bound.
    """
    size = os.stat(path).st_size
    if size > MAX_LIST_BYTES:
        raise ManifestError(f"{path}: {what} of {size / 2**20:.0f} MiB, over the limit of "
                            f"{MAX_LIST_BYTES / 2**20:.0f} MiB for a list of items (split it)")


def parse_label(value: object, *, where: str = "") -> int:
    """Map a label (``0/1``, ``real/fake`` and common synonyms, any case) to 0 or 1.

    Parameters
    ----------
    value : object
        The raw label.
    where : str
        Context for the error message (e.g. ``"row 3 of labels.csv"``).

    Returns
    -------
    int
        0 for real, 1 for fake.
    """
    if isinstance(value, (bool, np.bool_)):
        raise ManifestError(f"{where}: label {value!r} is a boolean; use 0/1 or real/fake")
    if isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating))
                                                and float(value).is_integer()):
        key = str(int(value))
    else:
        key = str(value).strip().lower()
    if key not in _LABELS:
        raise ManifestError(
            f"{where}: unknown label {value!r} (expected 0/1 or real/fake)".lstrip(": "))
    return _LABELS[key]


def media_kind(path: str | os.PathLike) -> str:
    """Return ``"image"`` or ``"video"`` from a file's extension (unknown → ``"video"``)."""
    return "image" if Path(path).suffix.lower() in IMAGE_EXTENSIONS else "video"


def validate_manifest(
    df: pd.DataFrame,
    *,
    root: str | os.PathLike | None = None,
    check_files: bool = True,
    source: str = "manifest",
) -> pd.DataFrame:
    """Check and normalise a manifest.

    Parameters
    ----------
    df : pandas.DataFrame
        Must hold ``path`` and ``label``; ``video_id`` defaults to the path relative to
        ``root`` (or the file stem), ``group`` defaults to ``video_id``.
    root : path-like, optional
        Relative paths are resolved against it.
    check_files : bool
        Raise when a file does not exist.
    source : str
        Name used in error messages (e.g. the CSV file).

    Returns
    -------
    pandas.DataFrame
        A copy with absolute ``path`` (str), ``label`` (int64), ``video_id`` and
        ``group`` (str), ``kind`` (str), ``clip`` (str, ``""`` for an item on its own; only
        when given) and a fresh RangeIndex.

    Raises
    ------
    ManifestError
        On a missing column, unknown label, missing file, empty or duplicate id, one file
        reached through two paths (a symlink, ``a/../a/x.mp4``) with different labels, or a
        ``clip`` whose items differ in label or group. The message names the row (1-based,
        as in the file) and the offending value.
    """
    if not isinstance(df, pd.DataFrame):
        raise ManifestError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise ManifestError(f"{source}: missing required column(s) {missing}; "
                            f"found {list(df.columns)}")
    out = df.copy().reset_index(drop=True)
    if len(out) == 0:
        raise ManifestError(f"{source}: the manifest is empty")
    base = Path(root) if root is not None else None

    paths, labels = [], []
    for i, (p, lab) in enumerate(zip(out["path"], out["label"])):
        where = f"{source} row {i + 1}"
        if not isinstance(p, (str, os.PathLike)) or str(p).strip() == "":
            raise ManifestError(f"{where}: empty path")
        path = Path(p)
        if not path.is_absolute() and base is not None:
            path = base / path
        path = Path(os.path.abspath(path))
        if check_files and not path.is_file():
            raise ManifestError(f"{where}: file not found: {path}")
        paths.append(str(path))
        labels.append(parse_label(lab, where=f"{where} ({p})"))
    out["path"] = paths
    out["label"] = np.asarray(labels, dtype=np.int64)
    _check_one_label_per_file(out, [str(p) for p in df["path"]], source)

    if "video_id" not in out.columns:
        if base is not None:
            out["video_id"] = [_relative_id(p, base) for p in paths]
        else:
            out["video_id"] = [Path(p).stem for p in paths]
    out["video_id"] = out["video_id"].astype(str)
    empty = out.index[out["video_id"].str.strip() == ""]
    if len(empty):
        raise ManifestError(f"{source} row {empty[0] + 1}: empty video_id")
    dup = out["video_id"].duplicated(keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        vid = out.at[i, "video_id"]
        first = int(np.flatnonzero((out["video_id"] == vid).to_numpy())[0])
        raise ManifestError(f"{source} row {i + 1}: duplicate video_id {vid!r} "
                            f"(first used in row {first + 1})")

    if "group" not in out.columns:
        out["group"] = out["video_id"]
    out["group"] = [str(g) if isinstance(g, str) or not pd.isna(g) else v
                    for g, v in zip(out["group"], out["video_id"])]
    if "kind" not in out.columns:
        out["kind"] = [media_kind(p) for p in paths]
    if "clip" in out.columns:
        out["clip"] = ["" if not isinstance(c, str) and pd.isna(c) else str(c).strip()
                       for c in out["clip"]]
        _check_clips(out, source)
    return out


def _check_one_label_per_file(df: pd.DataFrame, given: list[str], source: str) -> None:
    """One file reached through two paths (a symlink, a hard link, ``a/../a/x.mp4``) has one
    label: the same content cannot be both real and fake. Self-blended copies are exempt."""
    seeds = df["blend_seed"] if "blend_seed" in df.columns else None
    seen: dict = {}
    for i, (p, lab) in enumerate(zip(df["path"], df["label"])):
        if seeds is not None and not pd.isna(seeds.iloc[i]):
            continue
        try:
            st = os.stat(p)
            key: object = (st.st_dev, st.st_ino)
        except OSError:  # check_files=False and no such file: compare the resolved path
            key = os.path.realpath(p)
        j = seen.setdefault(key, i)
        if j != i and df["label"].iloc[j] != lab:
            raise ManifestError(
                f"{source} rows {j + 1} and {i + 1}: one file through two paths with "
                f"different labels: {given[j]!r} (label {df['label'].iloc[j]}) and "
                f"{given[i]!r} (label {lab}) are the same file {os.path.realpath(p)}")


def _check_clips(df: pd.DataFrame, source: str) -> None:
    """A clip's items share label and group, and a clip id is not another item's id."""
    joined = df[df["clip"] != ""]
    counts = joined.groupby("clip", sort=False)[["label", "group"]].nunique()
    for col in ("label", "group"):
        bad = counts.index[counts[col] > 1]
        if len(bad):
            rows = joined[joined["clip"] == bad[0]]
            other = rows.index[(rows[col] != rows[col].iloc[0]).to_numpy()][0]
            raise ManifestError(f"{source} row {rows.index[0] + 1}: clip {bad[0]!r} joins "
                                f"items of different {col}s ({rows[col].iloc[0]!r} here, "
                                f"{rows.at[other, col]!r} in row {other + 1}); the frames of "
                                "one video share both")
    clash = joined["clip"].isin(set(df.loc[df["clip"] == "", "video_id"]))
    if clash.any():
        i = int(np.flatnonzero(clash.to_numpy())[0])
        raise ManifestError(f"{source} row {joined.index[i] + 1}: clip "
                            f"{joined['clip'].iloc[i]!r} is also the video_id of an item "
                            "outside it")


def media_under(folder: str | os.PathLike, extensions: Iterable[str] | None = None
                ) -> tuple[list[Path], list[str]]:
    """The media files under a folder, recursively, and what was passed over and why.

    Hidden files and folders (a name starting with ``.``) are left out. Symlinked folders
    are followed, each real folder once (a link back into a folder already listed is
    passed over); a broken link, a folder that cannot be listed and a media-named entry
    that is not a regular file are passed over and named.

    Parameters
    ----------
    folder : path-like
        The folder to search.
    extensions : iterable of str, optional
        Lower-case extensions with the dot; default every image and video extension.

    Returns
    -------
    files : list of pathlib.Path
        The media files (paths through the folder, links not resolved), sorted.
    skipped : list of str
        ``"<path>: <why>"`` for each entry passed over, in the order met.
    """
    exts = frozenset(extensions) if extensions is not None \
        else IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    files: list[Path] = []
    skipped: list[str] = []
    seen: set[str] = set()

    def unlisted(exc: OSError) -> None:
        skipped.append(f"{exc.filename}: folder not listed ({exc.strerror or exc})")

    for top, dirs, names in os.walk(folder, onerror=unlisted, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            skipped.append(f"{top}: link to a folder already listed ({real}), not followed "
                           "again")
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(top) / name
            if name.startswith(".") or path.suffix.lower() not in exts:
                continue
            if path.is_file():
                files.append(path)
            else:
                skipped.append(f"{path}: broken link" if path.is_symlink()
                               else f"{path}: not a regular file")
    return sorted(files), skipped


def _relative_id(path: str, base: Path) -> str:
    try:
        return Path(path).relative_to(os.path.abspath(base)).as_posix()
    except ValueError:
        return Path(path).stem


def manifest_from_paths(
    paths: Iterable[str | os.PathLike],
    labels: Iterable[object] | None = None,
    *,
    root: str | os.PathLike | None = None,
    check_files: bool = True,
) -> pd.DataFrame:
    """Build a validated manifest from file paths.

    Parameters
    ----------
    paths : iterable of path-like
        Media files (clips or images).
    labels : iterable, optional
        One label per path (0/1 or real/fake). Unknown ground truth: pass ``None`` and
        every item gets label 0; use the scores, not the metrics, for such items.
    root : path-like, optional
        Base for relative paths and for ids.

    Returns
    -------
    pandas.DataFrame
        A manifest as returned by :func:`validate_manifest`.
    """
    paths = [str(p) for p in paths]
    labs = list(labels) if labels is not None else [0] * len(paths)
    if len(labs) != len(paths):
        raise ManifestError(f"{len(paths)} paths but {len(labs)} labels")
    return validate_manifest(pd.DataFrame({"path": paths, "label": labs}), root=root,
                             check_files=check_files)


def add_self_blended(manifest: pd.DataFrame, copies: int = 1, *, only: bool = False,
                     method: str = "self-blended") -> pd.DataFrame:
    """Add self-blended pseudo-fakes of the real items, for training only.

    Each real row gets ``copies`` new rows with the same ``path`` and ``group``, label 1,
    ``method``, ``video_id`` ``"<video_id>#sbi<j>"`` (and ``clip`` ``"<clip>#sbi<j>"``),
    ``blend_seed`` ``j`` and role ``"train"``:
    :class:`deepmetric.Extractor` blends the clip's faces (see
    :func:`deepmetric.features.extract.self_blended_faces`) and the evaluation never tests on them.
    Because a copy shares its source's group, it is on the same side of every split.

    Parameters
    ----------
    manifest : pandas.DataFrame
        A validated manifest.
    copies : int
        Self-blended copies per real item (0 returns the manifest with the new columns).
    only : bool
        Train on real items and pseudo-fakes alone: the manifest's own fakes get role
        ``"test"`` (Shiohara & Yamasaki's protocol, for cross-manipulation results). Needs
        ``copies >= 1`` (else :class:`ValueError`).
    method : str
        ``method`` of the new rows.

    Returns
    -------
    pandas.DataFrame
        The manifest (roles ``"both"``, or ``"test"`` for fakes with ``only``) followed
        by the new rows; a fresh RangeIndex.
    """
    if only and copies == 0:
        raise ValueError("self-blending with only=True (train on real items and pseudo-fakes "
                         "alone) needs copies >= 1: with 0 copies the training data would "
                         "hold no fake (set self_blend.copies)")
    base = _copy_base(manifest, copies, "blend_seed", "self-blended")
    if only:
        base.loc[base["label"] == 1, "role"] = "test"
    real = base[base["label"] == 0]
    if copies and real.empty:
        raise ManifestError("no real item to self-blend (label 0)")
    parts = [base]
    for j in range(int(copies)):
        part = _copy_rows(real, f"#sbi{j}", "blend_seed", j)
        part["label"] = np.int64(1)
        part["method"] = method
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def add_degraded(manifest: pd.DataFrame, copies: int = 1) -> pd.DataFrame:
    """Add degraded copies of every item (real and fake, label kept), for training only.

    Each row that may be trained on (role not ``"test"``) gets ``copies`` new rows with
    the same ``path``, ``group``, ``label`` and ``method``, ``video_id``
    ``"<video_id>#deg<j>"`` (and ``clip`` ``"<clip>#deg<j>"``), ``degrade_seed`` ``j`` and
    role ``"train"``: :class:`deepmetric.Extractor` passes the
    clip's face crops through one random blur / resampling / JPEG chain (see
    :func:`deepmetric.features.extract.degraded_faces`), and the evaluation never tests on
    them. A copy shares its source's group, so it is on the same side of every split.
    Rows that are self-blended copies already get degraded copies of the blend.

    Parameters
    ----------
    manifest : pandas.DataFrame
        A validated manifest (self-blended rows included, if any).
    copies : int
        Degraded copies per item (0 returns the manifest with the new column).

    Returns
    -------
    pandas.DataFrame
        The manifest (role ``"both"`` where it had none) followed by the new rows; a fresh
        RangeIndex.
    """
    base = _copy_base(manifest, copies, "degrade_seed", "degraded")
    source = base[base["role"] != "test"]  # never train on a copy of a test-only row
    parts = [base] + [_copy_rows(source, f"#deg{j}", "degrade_seed", j)
                      for j in range(int(copies))]
    return pd.concat(parts, ignore_index=True)


def _copy_base(manifest: pd.DataFrame, copies: int, seed_column: str,
               kind: str) -> pd.DataFrame:
    """The manifest with an empty ``seed_column`` and a ``role`` ("both" where missing),
    after checking ``copies`` and that it holds no such copies yet."""
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    if seed_column in manifest.columns and manifest[seed_column].notna().any():
        raise ManifestError(f"the manifest already has {kind} rows")
    base = manifest.copy()
    base[seed_column] = pd.array([pd.NA] * len(base), dtype="Int64")
    if "role" not in base.columns:
        base["role"] = "both"
    return base


def _copy_rows(rows: pd.DataFrame, tag: str, seed_column: str, seed: int) -> pd.DataFrame:
    """Training-only copies of ``rows``: ids and clips suffixed with ``tag`` (the copied
    frames of a clip form a clip of their own), ``seed_column`` set to ``seed``."""
    part = rows.copy()
    part["video_id"] = part["video_id"].astype(str) + tag
    if "clip" in part.columns:
        part["clip"] = [c + tag if c else "" for c in part["clip"]]
    part[seed_column] = pd.array([seed] * len(part), dtype="Int64")
    part["role"] = "train"
    return part
