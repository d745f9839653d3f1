"""What extraction gives back: the report of a run, and the cached features as arrays."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from deepmetric.features.cache import SOURCE, FeatureCache, content_fingerprint
from deepmetric.features.copies import copy_seeds, variant_name
from deepmetric.text import printable

__all__ = ["ExtractionError", "ExtractionReport", "FrameFeatures", "read_features",
           "feature_keys", "joined_groups"]


class ExtractionError(RuntimeError):
    """Extraction of one item failed (with ``on_error="raise"``); names the file."""


@dataclass
class ExtractionReport:
    """What one :meth:`Extractor.run` did.

    ``failures`` lists ``{"video_id", "path", "error"}`` for items that could not be read;
    ``no_face`` lists the video ids where no frame had a face (they have no features);
    ``short`` lists ``{"video_id", "path", "read", "asked"}`` for clips that yielded fewer
    frames than the reader asked for (truncated or variable-frame-rate files).
    """

    n_items: int = 0
    n_extracted: int = 0
    n_cached: int = 0
    n_frames: int = 0
    n_faces: int = 0
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    short: list[dict] = field(default_factory=list)

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    @property
    def faces_per_second(self) -> float:
        return self.n_faces / self.seconds if self.seconds > 0 and self.n_extracted else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["n_failed"] = self.n_failed
        d["faces_per_second"] = round(self.faces_per_second, 3)
        return d

    def summary(self) -> str:
        s = (f"{self.n_items} items: {self.n_extracted} extracted, {self.n_cached} cached, "
             f"{self.n_failed} failed; {self.n_faces}/{self.n_frames} frames with a face "
             f"in {self.seconds:.1f} s")
        if self.n_extracted:
            s += f" ({self.faces_per_second:.1f} faces/s)"
        # names escaped: a file name cannot forge a line of the report
        for f in self.failures:
            s += f"\n  FAILED {printable(f['path'])}: {printable(f['error'])}"
        if self.no_face:
            s += f"\n  no face in any frame: {len(self.no_face)} item(s): " \
                 + ", ".join(map(printable, self.no_face[:10])) \
                 + (" ..." if len(self.no_face) > 10 else "")
        for f in self.short:
            s += f"\n  SHORT {printable(f['path'])}: {f['read']} of {f['asked']} frames read"
        return s


@dataclass
class FrameFeatures:
    """Frame-level features of a manifest, ready for the metric-learning core.

    Attributes
    ----------
    X : numpy.ndarray
        float32 (F, D): the requested feature blocks concatenated, one row per frame with
        a face.
    frames : pandas.DataFrame
        F rows: ``video_id, group, label, frame_index, face_prob`` (the face detector's
        confidence, float32) plus the manifest's ``method``/``split``/``kind``/``role``/
        ``pair_id`` when present.
    blocks : dict of str to slice
        Column range of each block in ``X``.
    missing : pandas.DataFrame
        Items without features: ``video_id, reason`` (not extracted, failed, no face).
    """

    X: np.ndarray
    frames: pd.DataFrame
    blocks: dict
    missing: pd.DataFrame

    @property
    def y(self) -> np.ndarray:
        """int64 (F,) labels, 0 real / 1 fake."""
        return self.frames["label"].to_numpy(np.int64)

    @property
    def video_ids(self) -> np.ndarray:
        return self.frames["video_id"].to_numpy()

    @property
    def groups(self) -> np.ndarray:
        return self.frames["group"].to_numpy()


def read_features(cache: FeatureCache, manifest: pd.DataFrame, blocks: Sequence[str] | str,
                  feature_names: Sequence[str]) -> FrameFeatures:
    """Frame-level features of the cached items of a manifest (what
    :meth:`deepmetric.features.extract.Extractor.features` returns).

    Parameters
    ----------
    cache : FeatureCache
        The extractor's cache.
    manifest : pandas.DataFrame
        A validated manifest; items not in the cache are listed in ``missing``.
    blocks : sequence of str
        Feature blocks to concatenate (``"embedding"``, tapped layer names,
        ``"spectrum"``), or ``["crops"]`` alone: the uint8 face crops flattened to
        (F, 160*160*3), for :class:`deepmetric.finetune.FaceNetFineTuner` (needs an
        extractor with ``save_crops=True``).
    feature_names : sequence of str
        The blocks the extractor's settings produce (named when a block is missing).

    Returns
    -------
    FrameFeatures
        Items with a ``clip`` (see :mod:`deepmetric.datasets.items`) are the frames of one
        video: their rows carry the clip id as ``video_id``, their own id as ``item_id``,
        and ``frame_index`` counts on over the clip's items in manifest order. Groups that
        hold one same file are joined (:func:`joined_groups`).
    """
    if isinstance(blocks, str):
        blocks = [blocks]
    if "crops" in blocks and list(blocks) != ["crops"]:
        raise ValueError("the 'crops' block (uint8 face crops, for FaceNetFineTuner) "
                         f"cannot be mixed with feature blocks; got {list(blocks)}")
    xs, metas, missing = [], [], []
    extra = [c for c in ("method", "split", "kind", "role", "pair_id")
             if c in manifest.columns]
    slices: dict = {}
    next_index: dict[str, int] = {}  # clip id -> its next frame index
    for row, seed in zip(manifest.itertuples(index=False), copy_seeds(manifest)):
        arrays = cache.load(row.path, variant_name(seed))
        if arrays is None:
            missing.append({"video_id": row.video_id, "reason": "not extracted or failed"})
            continue
        found = arrays["found"].astype(bool)
        if not found.any():
            missing.append({"video_id": row.video_id, "reason": "no face in any frame"})
            continue
        parts = []
        for b in blocks:
            if b not in arrays:
                why = ("this extractor's settings do not produce it (its blocks: "
                       f"{list(feature_names)})" if b not in list(feature_names) else
                       "the file lacks it; Extractor.run(manifest) extracts it again")
                raise KeyError(f"feature block {b!r} is not in the cache for {row.path}: "
                               f"{why}; cached blocks: {feature_keys(arrays)}")
            part = arrays[b][found]
            parts.append(part.reshape(len(part), -1) if b == "crops" else part)
        if not slices:
            start = 0
            for b, p in zip(blocks, parts):
                slices[b] = slice(start, start + p.shape[1])
                start += p.shape[1]
        xs.append(np.concatenate(parts, axis=1))
        meta = {"video_id": row.video_id, "group": row.group, "label": row.label,
                "frame_index": arrays["frame_index"][found],
                "face_prob": arrays["prob"][found]}
        clip = getattr(row, "clip", "")
        if clip:  # a frame of a video stored as separate files
            start, n = next_index.get(clip, 0), len(meta["face_prob"])
            meta.update(video_id=clip, item_id=row.video_id,
                        frame_index=np.arange(start, start + n, dtype=np.int64))
            next_index[clip] = start + n
        meta.update({c: getattr(row, c) for c in extra})
        metas.append(pd.DataFrame(meta))
    if not xs:
        not_done = sum(m["reason"] == "not extracted or failed" for m in missing)
        raise ValueError(
            f"no item of the manifest has cached features with a face: of {len(manifest)} "
            f"item(s), {not_done} not extracted or failed (see the extraction report's "
            f"failures; Extractor.run(manifest) extracts them) and "
            f"{len(missing) - not_done} with no face in any frame")
    frames = pd.concat(metas, ignore_index=True)
    frames["label"] = frames["label"].astype(np.int64)
    joined = joined_groups(cache, manifest)
    if joined:
        frames["group"] = [joined.get(g, g) for g in frames["group"]]
    X = np.concatenate(xs)
    X = X if list(blocks) == ["crops"] else X.astype(np.float32, copy=False)
    return FrameFeatures(X, frames, slices,
                         pd.DataFrame(missing, columns=["video_id", "reason"]))


def joined_groups(cache: FeatureCache, manifest: pd.DataFrame) -> dict[str, str]:
    """The identity groups that hold one same file, joined: ``{group: joined group}``.

    One content under several groups (a symlink, a hard link or a copy of a file listed
    again under another group) would put the same frames on both sides of a grouped split.
    Rows whose files have one content fingerprint (:func:`~deepmetric.features.cache.
    content_fingerprint`, computed by the cache anyway) have their groups joined, named by
    the first of them in manifest order, with a warning naming the groups and a file.

    Returns
    -------
    dict of str to str
        Only the groups that change, each to the group it is joined into.
    """
    order: dict[str, int] = {}
    parent: dict[str, str] = {}

    def find(g: str) -> str:
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    first: dict[str, tuple[str, str]] = {}  # fingerprint -> (group, path)
    shared: list[str] = []
    for path, group in zip(manifest["path"], manifest["group"].astype(str)):
        order.setdefault(group, len(order))
        try:
            fp = content_fingerprint(path, cache.root / "fingerprints")
        except OSError:  # unreadable: it has no features either
            continue
        g0, p0 = first.setdefault(fp, (group, str(path)))
        a, b = sorted((find(g0), find(group)), key=order.__getitem__)
        if a != b:
            parent[b] = a
            shared.append(f"{printable(p0)} ({g0}) = {printable(path)} ({group})")
    joined = {g: find(g) for g in order if find(g) != g}
    if joined:
        warnings.warn(f"the same file under several identity groups: {len(joined)} group(s) "
                      f"joined into the group first listed, so that no split puts one file on "
                      "both sides: " + "; ".join(shared[:5])
                      + (" ..." if len(shared) > 5 else ""), stacklevel=3)
    return joined


def feature_keys(arrays: dict) -> list[str]:
    """The feature blocks of a cached item's arrays (not its frame metadata or crops)."""
    meta = {"frame_index", "found", "prob", "box", "landmarks", "n_faces", "n_total", "fps",
            "n_asked", "crops", SOURCE}
    return [k for k in arrays if k not in meta]
