"""Any ``real/`` + ``fake/`` folder tree of images or clips::

    <root>/real/**/<file>     label 0
    <root>/fake/**/<file>     label 1

Grouping
--------
By default each file is its own group (``group`` = file stem), which is right for
independent clips but lets frames or face crops of one video land on both sides of a
split. Pass ``group_regex`` to group files by a part of their name: it is searched
(:func:`re.search`) in the file name *without extension*; the group is the named group
``group`` if the pattern has one, else its capture groups joined by ``"-"``, else the whole
match. For DFDC-style crops named ``<videoid>-<frame>-<face>.png``::

    load(root, group_regex=r"^(?P<group>[^-]+)-\\d+-\\d+$")

groups the crops of one source video (in YAML: ``group_regex: '^(?P<group>[^-]+)-\\d+-\\d+$'``).
A file that does not match is an error. Files with the same group key in ``real/`` and
``fake/`` share a group. Note that crops of a fake video and of the real video it was made
from carry different video ids, so only a manifest with the originals (e.g.
:mod:`deepmetric.datasets.dfdc`) can join them.

Clips of image files
--------------------
``clip_regex`` works the same way (named group ``clip``) and joins the files into clips:
files with the same key are the frames of one video (the manifest's ``clip`` column, see
:mod:`deepmetric.datasets.items`), scored as one clip, e.g. by a video-level model
(``temporal.stats``). For the crops above, one clip per video and face::

    load(root, clip_regex=r"^([^-]+)-\\d+-(\\d+)$")   # clip "abqwwspghj-00"

Without ``group_regex`` the group of a file is then its clip.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Iterable

import pandas as pd

from deepmetric.datasets.items import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, ManifestError,
                                       media_under, validate_manifest)
from deepmetric.text import printable

__all__ = ["load"]


def load(
    root: str | os.PathLike,
    real_dirs: Iterable[str] | str = ("real",),
    fake_dirs: Iterable[str] | str = ("fake",),
    extensions: Iterable[str] | str | None = None,
    group_regex: str | None = None,
    clip_regex: str | None = None,
) -> pd.DataFrame:
    """List the media files under ``root``'s real and fake sub-folders (recursively).

    Parameters
    ----------
    root : path-like
        Parent of the real and fake folders.
    real_dirs, fake_dirs : iterable of str or str
        Sub-folders (relative to ``root``) holding real / fake items. Each must exist.
    extensions : iterable of str or str, optional
        File extensions to keep (``".png"`` or ``"png"``, any case). Default: every known
        image and video extension (:data:`deepmetric.datasets.items.IMAGE_EXTENSIONS`,
        :data:`~deepmetric.datasets.items.VIDEO_EXTENSIONS`). Hidden files are always skipped.
        Symlinked folders are followed (each real folder once); broken links and folders
        that cannot be listed are passed over with a warning naming them
        (:func:`~deepmetric.datasets.items.media_under`).
    group_regex : str, optional
        Pattern giving the group from the file stem (see the module docstring); default
        None: group = file stem (or the clip, with ``clip_regex``).
    clip_regex : str, optional
        Pattern giving the clip a file is a frame of (see the module docstring); default
        None: every file is an item on its own.

    Returns
    -------
    pandas.DataFrame
        A validated manifest (real folders first, each sorted by path) with ``path``,
        ``label``, ``video_id`` (path relative to ``root``), ``group``, ``method``
        (``"real"`` for real folders, the folder name as given for fake ones, e.g.
        ``"fake"`` or ``"Deepfakes"``), ``kind`` (``"image"``/``"video"`` from the
        extension) and, with ``clip_regex``, ``clip``.

    Raises
    ------
    ManifestError
        On a missing root or sub-folder, a folder listed as both real and fake, an invalid
        ``group_regex`` or ``clip_regex``, a file a regex does not match, a clip whose files
        lie in both real and fake folders, or when no file is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"dataset folder not found: {root}")
    real_dirs, fake_dirs = _strings(real_dirs), _strings(fake_dirs)
    both = set(real_dirs) & set(fake_dirs)
    if both:
        raise ManifestError(f"{root}: {sorted(both)} listed as both real and fake folders")
    if extensions is None:
        exts = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    else:
        exts = frozenset("." + e.lower().lstrip(".") for e in _strings(extensions))
    patterns = {key: _compile(regex, key) for key, regex in
                (("group", group_regex), ("clip", clip_regex)) if regex is not None}

    rows, skipped = [], []
    for label, dirs in ((0, real_dirs), (1, fake_dirs)):
        for d in dirs:
            folder = root / d
            if not folder.is_dir():
                raise ManifestError(f"{root}: {'real' if label == 0 else 'fake'} folder "
                                    f"{d!r} not found")
            found, passed = media_under(folder, exts)
            skipped += passed
            for f in found:
                keys = {key: _key(f, pattern, key) for key, pattern in patterns.items()}
                keys.setdefault("group", keys.get("clip", f.stem))
                rows.append(dict(path=str(f), label=label,
                                 video_id=f.relative_to(root).as_posix(),
                                 method="real" if label == 0 else d, **keys))
    if skipped:
        warnings.warn(f"folder {printable(root)}: {len(skipped)} entr"
                      f"{'y' if len(skipped) == 1 else 'ies'} passed over: "
                      + "; ".join(map(printable, skipped[:10]))
                      + (" ..." if len(skipped) > 10 else ""), stacklevel=2)
    if not rows:
        raise ManifestError(f"{root}: no file with extension in {sorted(exts)} under "
                            f"{real_dirs + fake_dirs}")
    return validate_manifest(pd.DataFrame(rows), source=f"folder {root}")


def _strings(value: Iterable[str] | str) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _compile(regex: str, key: str) -> re.Pattern[str]:
    try:
        return re.compile(regex)
    except re.error as e:
        raise ManifestError(f"invalid {key}_regex {regex!r}: {e}") from None


def _key(path: Path, pattern: re.Pattern[str], key: str) -> str:
    """The ``key`` ("group" or "clip") of a file from its stem."""
    m = pattern.search(path.stem)
    if m is None:
        raise ManifestError(f"{path}: file stem {path.stem!r} does not match {key}_regex "
                            f"{pattern.pattern!r}")
    if key in pattern.groupindex:
        value = m[key]
    elif pattern.groups:
        value = "-".join(g for g in m.groups() if g)
    else:
        value = m[0]
    if not value:
        raise ManifestError(f"{path}: {key}_regex {pattern.pattern!r} matched an empty {key}")
    return value
