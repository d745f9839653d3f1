"""Extraction: manifest → frames → faces → embeddings → per-clip cache, and back as arrays.

>>> import deepmetric as dm
>>> items = dm.datasets.folder.load("my_clips")          # real/ and fake/ sub-folders
>>> ex = dm.Extractor(cache_dir="cache")
>>> report = ex.run(items)                               # only what is missing
>>> feats = ex.features(items)                           # feats.X: (F, 512) float32
"""

from __future__ import annotations

import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from deepmetric.features.cache import FeatureCache, flush_fingerprints
from deepmetric.storage import cache_root
from deepmetric.features.embedder import EMBEDDING, FaceEmbedder
from deepmetric.video.faces import FaceCrops, FaceDetector, crop_face
from deepmetric.video.frames import MediaError, read_frames
from deepmetric.features.spectrum import SPECTRUM, radial_spectrum

__all__ = ["Extractor", "ExtractionError", "ExtractionReport", "FrameFeatures"]

#: Version of the self-blending operator, part of the cache name of self-blended copies.
BLEND_VERSION = 1
#: Version of the degradation chain (deepmetric.features.degrade), in degraded copies' names.
DEGRADE_VERSION = 1


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
        for f in self.failures:
            s += f"\n  FAILED {f['path']}: {f['error']}"
        if self.no_face:
            s += f"\n  no face in any frame: {len(self.no_face)} item(s): " \
                 + ", ".join(self.no_face[:10]) + (" ..." if len(self.no_face) > 10 else "")
        for f in self.short:
            s += f"\n  SHORT {f['path']}: {f['read']} of {f['asked']} frames read"
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
        F rows: ``video_id, group, label, frame_index, prob`` plus the manifest's
        ``method``/``split``/``kind``/``role``/``pair_id`` when present.
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


class Extractor:
    """Run the face pipeline over a manifest, caching one file per item.

    Parameters
    ----------
    detector : FaceDetector, optional
        Default ``FaceDetector()``.
    embedder : FaceEmbedder, optional
        Default ``FaceEmbedder()`` (CASIA-WebFace FaceNet, works offline).
    n_frames : int
        Frames sampled evenly per clip (the poster's 25).
    cache_dir : path-like, optional
        Cache root (default ``$DEEPMETRIC_CACHE/features`` or ``~/.cache/deepmetric``).
    spectrum_bins : int
        When > 0, also cache the crops' radial power spectrum with this many bins.
    save_crops : bool
        Also cache the uint8 face crops (for explanations and fine-tuning).
    on_error : {"skip", "raise"}
        ``"skip"`` records a failed item in the report and goes on; ``"raise"`` stops with
        :class:`ExtractionError` (items already done stay cached).
    progress : bool
        Show a tqdm progress bar.
    trim_memory : bool
        After each clip, hand the heap memory the C allocator holds but no longer uses back
        to the OS (glibc ``malloc_trim``; nothing elsewhere). Frames of ever new sizes
        otherwise leave fragmented free memory behind, and RSS creeps up over a long run.
        It does not change any result.
    backbones : sequence of embedders, optional
        Further networks run on the same crops (e.g.
        :class:`deepmetric.features.imagenet.ImageNetEmbedder`): anything with
        ``embed(crops) -> {block: (N, D) float32}`` and ``settings()``. Their blocks are
        cached beside FaceNet's; their settings join the cache key (only when there are any,
        so caches made without backbones keep their key).
    image_batch : int
        Single images (one-frame items) go through the networks this many at a time, one
        forward pass for all of them, instead of one each: a data set of face crops
        extracts about twice as fast (``benchmarks/image_batch.py``). A clip is one pass
        of its own frames, as before. Every image pass has exactly ``image_batch`` crops
        (padded), so an image's features do not depend on the others in its pass, nor on
        how a manifest is ordered or sharded. Not a setting: the features agree with one
        pass per image to float rounding.
    """

    trim_memory = True  # class defaults: extractors pickled before the options existed
    backbones: Sequence = ()
    image_batch = 16

    def __init__(self, detector: FaceDetector | None = None,
                 embedder: FaceEmbedder | None = None, n_frames: int = 25,
                 cache_dir: str | Path | None = None, spectrum_bins: int = 0,
                 save_crops: bool = False, on_error: str = "skip", progress: bool = True,
                 trim_memory: bool = True, backbones: Sequence = (), image_batch: int = 16):
        if isinstance(image_batch, bool) or not isinstance(image_batch, (int, np.integer)) \
                or image_batch < 1:
            raise ValueError(f"image_batch (images per forward pass) must be an integer >= 1, "
                             f"got {image_batch!r}")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) \
                or n_frames < 1:
            raise ValueError(f"n_frames (frames sampled per clip) must be an integer >= 1, "
                             f"got {n_frames!r}")
        self.detector = detector if detector is not None else FaceDetector()
        self.embedder = embedder if embedder is not None else FaceEmbedder()
        self.n_frames = n_frames
        self.cache_dir = cache_dir
        self.spectrum_bins = spectrum_bins
        self.save_crops = save_crops
        self.on_error = on_error
        self.progress = progress
        self.trim_memory = trim_memory
        self.backbones = list(backbones)
        self.image_batch = int(image_batch)

    # -- settings and cache ---------------------------------------------------------------
    def settings(self) -> dict:
        """Everything that changes the cached arrays."""
        # save_crops is not a setting: a file with crops serves a request without them, and
        # a file without them is extracted again when crops are needed (see _usable).
        return {"version": 1, "n_frames": self.n_frames, **self.detector.settings(),
                **self.embedder.settings(), "spectrum_bins": self.spectrum_bins,
                **({"backbones": [b.settings() for b in self.backbones]}
                   if self.backbones else {})}

    def feature_names(self) -> list[str]:
        """The feature blocks this extractor writes for every item (from its settings)."""
        names = list(self.embedder.feature_names())
        for backbone in self.backbones:
            names += backbone.feature_names()
        return names + ([SPECTRUM] if self.spectrum_bins else [])

    def _usable(self, arrays: dict | None) -> bool:
        """Whether cached arrays serve this extractor: present, with every feature block its
        settings produce (a file missing one is extracted again), and crops if it saves them."""
        return arrays is not None and set(self.feature_names()) <= arrays.keys() \
            and (not self.save_crops or "crops" in arrays)

    @property
    def cache(self) -> FeatureCache:
        root = Path(self.cache_dir) if self.cache_dir is not None \
            else cache_root() / "features"
        return FeatureCache(root, self.settings())

    # -- one item ---------------------------------------------------------------------------
    def extract_item(self, path: str | Path, frames=None, blend_seed: int | None = None,
                     degrade_seed: int | None = None) -> dict[str, np.ndarray]:
        """Extract one clip or image (no caching).

        Parameters
        ----------
        path : path-like
            The media file.
        frames : deepmetric.video.frames.Frames, optional
            Already decoded frames of ``path``.
        blend_seed : int, optional
            Extract a *self-blended* copy instead (see :func:`self_blended_faces`).
        degrade_seed : int, optional
            Extract a *degraded* copy (see :func:`degraded_faces`; after the blend, if both).

        Returns
        -------
        dict of str to numpy.ndarray
            ``frame_index`` int64 (T,), ``found`` bool (T,), ``prob`` float32 (T,),
            ``box`` float32 (T, 4), ``landmarks`` float32 (T, 5, 2), ``n_faces`` int16 (T,),
            ``n_total`` int64 (), ``fps`` float64 (), ``n_asked`` int64 () (frames the
            reader meant to return; more than T when the clip ended early), and one
            float32 (T, D) array per feature block (``embedding``, tapped layers,
            ``spectrum``), NaN rows where no face was found; ``crops`` uint8
            (T, 160, 160, 3) when ``save_crops``.
        """
        fr = frames if frames is not None else read_frames(path, self.n_frames)
        return self._extract(path, fr, self.detector.detect(fr.images),
                             (blend_seed, degrade_seed))

    def extract_items(self, paths: Iterable[str | Path]
                      ) -> Iterator[tuple[str, dict[str, np.ndarray] | Exception, float]]:
        """Extract many clips and images (no caching), single images batched.

        What :meth:`extract_item` returns for each path, in the order given, but single
        images go through the networks ``image_batch`` at a time (one forward pass of
        exactly ``image_batch`` crops, padded, as :meth:`run` does): a folder of photos or
        face crops is scored about twice as fast. An image's features agree with
        :meth:`extract_item`'s to float rounding. The next file is decoded while the
        current one runs through the networks.

        Parameters
        ----------
        paths : iterable of path-like
            Media files.

        Yields
        ------
        path : str
            The file, as given.
        arrays : dict of str to numpy.ndarray, or Exception
            The arrays of :meth:`extract_item`; or, for a file that failed, the exception
            (:class:`~deepmetric.video.frames.MediaError` for an unreadable, empty,
            unsupported or too large file, naming it). One bad file never stops the rest.
        seconds : float
            The item's share of the wall time (a batch's time is split over its images).
        """
        paths = [str(p) for p in paths]
        waiting: list[tuple[str, object, FaceCrops, float]] = []  # path, frames, faces, s

        def flush() -> Iterator[tuple[str, dict | Exception, float]]:
            for i in range(0, len(waiting), self.image_batch):
                part = waiting[i:i + self.image_batch]
                t = time.perf_counter()
                out = self._embed_units([(fr, faces) for _, fr, faces, _ in part],
                                        self.image_batch)
                share = (time.perf_counter() - t) / len(part)
                for (path, _, _, s), arrays in zip(part, out):
                    yield path, arrays, s + share
            waiting.clear()

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(_read, paths[0], self.n_frames) if paths else None
            for k, path in enumerate(paths):
                t = time.perf_counter()
                frames_or_exc = pending.result()
                pending = (pool.submit(_read, paths[k + 1], self.n_frames)
                           if k + 1 < len(paths) else None)
                try:
                    if isinstance(frames_or_exc, BaseException):
                        raise frames_or_exc
                    faces = self.detector.detect(frames_or_exc.images)
                except Exception as exc:  # noqa: BLE001 — handed to the caller, not lost
                    yield from flush()  # the images before it first: the order is kept
                    yield path, exc, time.perf_counter() - t
                    continue
                if len(frames_or_exc.indices) <= 1:  # only the crops wait, not the image
                    waiting.append((path, replace(frames_or_exc, images=[]), faces,
                                    time.perf_counter() - t))
                    if len(waiting) >= self.image_batch:
                        yield from flush()
                    continue
                yield from flush()
                t = time.perf_counter()  # its decoding overlapped the images' pass
                out = self._embed_units([(frames_or_exc, faces)], 0)[0]
                del frames_or_exc
                yield path, out, time.perf_counter() - t
            yield from flush()

    def _embed_units(self, units: Sequence[tuple], pad: int) -> list[dict | Exception]:
        """:meth:`_arrays_many` of ``(frames, faces)`` pairs; when the joint pass fails, each
        pair again alone, so a failure is the exception of its own item (which the caller
        raises, records or hands on)."""
        try:
            return self._arrays_many(units, pad)
        except Exception as exc:  # noqa: BLE001 — returned, never swallowed
            if len(units) == 1:
                return [exc]
        out: list[dict | Exception] = []
        for unit in units:
            out += self._embed_units([unit], pad)
        return out

    def _extract(self, path, fr, faces: FaceCrops,
                 seeds: tuple[int | None, int | None]) -> dict:
        """The arrays of a clip (or of its self-blended and/or degraded copy) from its
        detected faces; ``seeds`` is ``(blend_seed, degrade_seed)``."""
        return self._arrays_many([(fr, self._copy_faces(path, fr, faces, seeds))])[0]

    def _copy_faces(self, path, fr, faces: FaceCrops,
                    seeds: tuple[int | None, int | None]) -> FaceCrops:
        """The faces of the clip itself, or of its self-blended and/or degraded copy."""
        blend_seed, degrade_seed = seeds
        if blend_seed is not None:
            faces = self_blended_faces(fr.images, faces, blend_seed, path, self.detector)
        if degrade_seed is not None:
            faces = degraded_faces(faces, degrade_seed, path)
        return faces

    def _arrays_many(self, units: Sequence[tuple], pad: int = 0) -> list[dict[str, np.ndarray]]:
        """The cached arrays of several items from ``(frames, faces)`` pairs, their found
        crops run through the networks together (one forward pass for many small items);
        ``pad`` > 0 pads a shorter stack of crops with blank ones to that many rows."""
        idx = [np.flatnonzero(faces.found) for _, faces in units]
        crops = np.concatenate([faces.crops[i] for (_, faces), i in zip(units, idx)])
        n = len(crops)
        if 0 < n < pad:
            crops = np.concatenate([crops, np.zeros((pad - n, *crops.shape[1:]), crops.dtype)])
        blocks = {k: v[:n] for k, v in self.embedder.embed(crops).items()}
        for backbone in self.backbones:
            blocks.update((k, v[:n]) for k, v in backbone.embed(crops).items())
        if self.spectrum_bins:
            blocks[SPECTRUM] = radial_spectrum(crops[:n], self.spectrum_bins)
        ends = np.cumsum([len(i) for i in idx])
        outs = []
        for (fr, faces), i, end in zip(units, idx, ends):
            t = len(fr.indices)
            out: dict[str, np.ndarray] = {
                "frame_index": fr.indices.astype(np.int64), "found": faces.found,
                "prob": faces.probs, "box": faces.boxes, "landmarks": faces.landmarks,
                "n_faces": faces.n_faces, "n_total": np.int64(fr.n_total),
                "fps": np.float64(fr.fps), "n_asked": np.int64(getattr(fr, "n_asked", t)),
            }
            for name, arr in blocks.items():
                full = np.full((t, arr.shape[1] if arr.size else 0), np.nan, np.float32)
                if len(i):
                    full[i] = arr[end - len(i):end]
                out[name] = full
            if self.save_crops:
                out["crops"] = faces.crops
            outs.append(out)
        return outs

    # -- a manifest ---------------------------------------------------------------------------
    def run(self, manifest: pd.DataFrame,
            on_progress: Callable[[int, int], None] | None = None) -> ExtractionReport:
        """Extract every item of the manifest that is not cached yet.

        Rows with a ``blend_seed`` (see :func:`deepmetric.datasets.items.add_self_blended`) are
        self-blended copies of their clip, rows with a ``degrade_seed``
        (:func:`deepmetric.datasets.items.add_degraded`) degraded copies: the clip is
        decoded and searched for faces once for all its rows.

        Jobs sharing the cache never extract a clip twice and never wait on each other: a
        clip another job holds locked is skipped, the run goes on with the next clips, and
        comes back to it at the end (then it is usually cached by the other job; if that
        job died, its lock died with it and this run extracts the clip).

        Parameters
        ----------
        manifest : pandas.DataFrame
            A validated manifest (see :func:`deepmetric.datasets.items.validate_manifest`).
        on_progress : callable, optional
            Called as ``on_progress(done, total)`` once before the first item and after each
            finished item (extracted, found cached or failed); ``total`` counts the items
            that were not cached when the run started.

        Returns
        -------
        ExtractionReport
            Counts, timings and the failures (with ``on_error="skip"``).
        """
        from tqdm.auto import tqdm

        cache = self.cache
        report = ExtractionReport(n_items=len(manifest))
        todo: dict[str, list[tuple[str, tuple]]] = {}  # path -> [(video_id, seeds)]
        for vid, path, seed in zip(manifest["video_id"], manifest["path"], _seeds(manifest)):
            if cache.has(path, _variant(seed)) and self._usable(cache.load(path, _variant(seed))):
                report.n_cached += 1
            else:
                todo.setdefault(str(path), []).append((str(vid), seed))
        paths = list(todo)
        if paths:
            # Load the weights now: a refused weights file is a settings error, not a
            # failure of every item.
            self.embedder.model  # noqa: B018
            for backbone in self.backbones:
                getattr(backbone, "model", None)
        t0 = time.perf_counter()
        total = sum(map(len, todo.values()))
        bar = tqdm(total=total, desc="extract", unit="item", disable=not self.progress)
        done = 0
        if on_progress is not None:
            on_progress(0, total)

        def finished(n: int) -> None:
            nonlocal done
            done += n
            bar.update(n)
            if on_progress is not None:
                on_progress(done, total)

        wait = 0.0
        while paths:
            if wait:  # every remaining clip is locked by another job: let it work
                time.sleep(wait)
            busy = self._pass(paths, todo, report, finished)
            wait = 0.0 if len(busy) < len(paths) else min(max(2 * wait, 0.2), 5.0)
            paths = busy
        bar.close()
        flush_fingerprints()  # the next process finds this run's files without hashing them
        report.seconds = time.perf_counter() - t0
        for v, p, s in zip(manifest["video_id"], manifest["path"], _seeds(manifest)):
            if (a := cache.load(p, _variant(s))) is None:
                continue
            if not a["found"].any():
                report.no_face.append(str(v))
            n_read, n_asked = len(a["frame_index"]), int(a.get("n_asked", -1))
            if s == (None, None) and n_read < n_asked:
                report.short.append({"video_id": str(v), "path": str(p), "read": n_read,
                                     "asked": n_asked})
        if report.failures:
            warnings.warn(f"extraction: {report.n_failed} item(s) failed; see the report",
                          stacklevel=2)
        if report.short:
            warnings.warn(f"extraction: {len(report.short)} clip(s) yielded fewer frames than "
                          "asked (truncated or variable frame rate): " + ", ".join(
                              f"{f['path']} ({f['read']} of {f['asked']})"
                              for f in report.short[:5]), stacklevel=2)
        return report

    def _pass(self, paths: list[str], todo: dict, report: ExtractionReport,
              finished: Callable[[int], None]) -> list[str]:
        """One pass over ``paths``; returns those another job held locked (not done).

        Single images wait (locked, their crops only) until ``image_batch`` of them are
        ready, then go through the networks in one forward pass of exactly ``image_batch``
        crops (a short batch is padded): for a fixed batch shape each crop's features do
        not depend on the other crops, so the cache is the same however the manifest is
        ordered or sharded. A clip goes through in a pass of its own frames, after the
        images waiting before it."""
        cache = self.cache
        busy: list[str] = []
        waiting: list[tuple] = []  # (video_id, path, seeds, frames, faces), locks held
        with ThreadPoolExecutor(max_workers=1) as pool, ExitStack() as locks:

            def flush() -> None:
                for i in range(0, len(waiting), self.image_batch):
                    self._save_many(waiting[i:i + self.image_batch], cache, report, finished,
                                    pad=self.image_batch)
                waiting.clear()
                locks.close()  # every lock of the flushed items
                if self.trim_memory:
                    malloc_trim()

            # Decode the next clip while the current one runs through MTCNN/FaceNet.
            pending = pool.submit(_read, paths[0], self.n_frames) if paths else None
            for k, path in enumerate(paths):
                frames_or_exc = pending.result()
                pending = (pool.submit(_read, paths[k + 1], self.n_frames)
                           if k + 1 < len(paths) else None)
                single = not isinstance(frames_or_exc, BaseException) \
                    and len(frames_or_exc.indices) <= 1
                if not single:
                    flush()  # the images before it go first
                lock = cache.try_lock(path)
                if not lock.__enter__():  # another job is on it: come back later
                    lock.__exit__(None, None, None)
                    busy.append(path)
                    del frames_or_exc
                    continue
                locks.push(lock)
                faces = None
                for vid, seed in todo[path]:
                    try:
                        if self._usable(cache.load(path, _variant(seed))):  # another job
                            report.n_cached += 1
                            finished(1)
                            continue
                        cache.clear_stale(path, _variant(seed))  # a killed job's temp
                        if isinstance(frames_or_exc, BaseException):
                            raise frames_or_exc
                        if faces is None:  # once for the clip and all its copies
                            faces = self.detector.detect(frames_or_exc.images)
                        unit = (vid, path, seed,
                                # only the crops wait: not the decoded frames (up to 50 MP)
                                replace(frames_or_exc, images=[]) if single else frames_or_exc,
                                self._copy_faces(path, frames_or_exc, faces, seed))
                    except (MediaError, ValueError, RuntimeError, OSError) as exc:
                        self._failed(vid, path, exc, report)
                        finished(1)
                        continue
                    if single:
                        waiting.append(unit)
                    else:
                        self._save_many([unit], cache, report, finished, pad=0)
                del frames_or_exc, faces
                if not single or len(waiting) >= self.image_batch:
                    flush()
            flush()
        return busy

    def _save_many(self, units: list[tuple], cache: FeatureCache, report: ExtractionReport,
                   finished: Callable[[int], None], pad: int) -> None:
        """Embed ``(video_id, path, seeds, frames, faces)`` items together and cache each;
        when the joint pass fails, each item again alone, so a failure names its file.
        ``pad``: the crops of a pass are padded to this many (single images: ``image_batch``,
        see :meth:`_pass`; a clip: 0)."""
        arrays = self._embed_units([(fr, faces) for _, _, _, fr, faces in units], pad)
        for (vid, path, seed, fr, faces), arr in zip(units, arrays):
            try:
                if isinstance(arr, Exception):
                    raise arr
                cache.save(path, arr, _variant(seed))
                report.n_extracted += 1
                report.n_frames += int(len(arr["found"]))
                report.n_faces += int(arr["found"].sum())
            except (MediaError, ValueError, RuntimeError, OSError) as exc:
                self._failed(vid, path, exc, report)
            finally:
                finished(1)

    def _failed(self, vid: str, path: str, exc: BaseException,
                report: ExtractionReport) -> None:
        """Record a failed item (``on_error="skip"``) or stop with :class:`ExtractionError`."""
        msg = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        if self.on_error == "raise":
            raise ExtractionError(msg) from exc
        report.failures.append({"video_id": vid, "path": path,
                                "error": msg.replace(f"{path}: ", "", 1)})

    def features(self, manifest: pd.DataFrame,
                 blocks: Sequence[str] | str = (EMBEDDING,)) -> FrameFeatures:
        """Frame-level features of the cached items of a manifest.

        Parameters
        ----------
        manifest : pandas.DataFrame
            A validated manifest; items not in the cache are listed in ``missing``.
        blocks : sequence of str
            Feature blocks to concatenate (``"embedding"``, tapped layer names,
            ``"spectrum"``), or ``["crops"]`` alone: the uint8 face crops flattened to
            (F, 160*160*3), for :class:`deepmetric.features.finetune.FaceNetFineTuner` (needs an
            extractor with ``save_crops=True``).

        Returns
        -------
        FrameFeatures
            Items with a ``clip`` (see :mod:`deepmetric.datasets.items`) are the frames of one
            video: their rows carry the clip id as ``video_id``, their own id as ``item_id``,
            and ``frame_index`` counts on over the clip's items in manifest order.
        """
        if isinstance(blocks, str):
            blocks = [blocks]
        if "crops" in blocks and list(blocks) != ["crops"]:
            raise ValueError("the 'crops' block (uint8 face crops, for FaceNetFineTuner) "
                             f"cannot be mixed with feature blocks; got {list(blocks)}")
        cache = self.cache
        xs, metas, missing = [], [], []
        extra = [c for c in ("method", "split", "kind", "role", "pair_id")
                 if c in manifest.columns]
        slices: dict = {}
        next_index: dict[str, int] = {}  # clip id -> its next frame index
        for row, seed in zip(manifest.itertuples(index=False), _seeds(manifest)):
            arrays = cache.load(row.path, _variant(seed))
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
                           f"{self.feature_names()})" if b not in self.feature_names() else
                           "the file lacks it; Extractor.run(manifest) extracts it again")
                    raise KeyError(f"feature block {b!r} is not in the cache for {row.path}: "
                                   f"{why}; cached blocks: {_feature_keys(arrays)}")
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
                    "prob": arrays["prob"][found]}
            clip = getattr(row, "clip", "")
            if clip:  # a frame of a video stored as separate files
                start, n = next_index.get(clip, 0), len(meta["prob"])
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
        X = np.concatenate(xs)
        X = X if list(blocks) == ["crops"] else X.astype(np.float32, copy=False)
        return FrameFeatures(X, frames, slices,
                             pd.DataFrame(missing, columns=["video_id", "reason"]))


_MALLOC_TRIM = None  # glibc's malloc_trim, or False where there is none; looked up once


def malloc_trim() -> bool:
    """Return freed heap memory to the OS (glibc ``malloc_trim(0)``).

    Returns
    -------
    bool
        True when glibc released memory; False when nothing was released or the C library
        is not glibc (then this does nothing).
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
            _MALLOC_TRIM = False
    return bool(_MALLOC_TRIM and _MALLOC_TRIM(0))


def _feature_keys(arrays: dict) -> list[str]:
    meta = {"frame_index", "found", "prob", "box", "landmarks", "n_faces", "n_total", "fps",
            "n_asked", "crops"}
    return [k for k in arrays if k not in meta]


def _seeds(manifest: pd.DataFrame) -> list[tuple[int | None, int | None]]:
    """Each row's ``(blend_seed, degrade_seed)`` (``(None, None)`` for the clip itself)."""
    def column(name: str) -> list[int | None]:
        if name not in manifest.columns:
            return [None] * len(manifest)
        return [None if pd.isna(v) else int(v) for v in manifest[name]]
    return list(zip(column("blend_seed"), column("degrade_seed")))


def _variant(seeds: tuple[int | None, int | None]) -> str | None:
    """The cache-file suffix of a copy (None for the clip itself)."""
    blend, degrade = seeds
    parts = ([f"sbi{blend}-v{BLEND_VERSION}"] if blend is not None else []) \
        + ([f"deg{degrade}-v{DEGRADE_VERSION}"] if degrade is not None else [])
    return "-".join(parts) or None


def degraded_faces(faces: FaceCrops, seed: int, path: str | Path) -> FaceCrops:
    """Face crops of a degraded copy of a clip (:mod:`deepmetric.features.degrade`).

    One :class:`~deepmetric.features.degrade.DegradeParams` is drawn per clip, from ``seed``
    and the clip's content fingerprint, and applied to every crop (boxes, landmarks and
    probabilities are kept).

    Parameters
    ----------
    faces : FaceCrops
        The clip's detected faces (crops uint8 (T, S, S, 3)).
    seed : int
        The copy's number.
    path : path-like
        The clip (its content fingerprint seeds the draw).

    Returns
    -------
    FaceCrops
        The same faces with degraded crops.
    """
    from deepmetric.features.cache import content_fingerprint
    from deepmetric.features.degrade import degrade_crops, sample_degrade_params

    rng = np.random.default_rng([int(seed), 1, int(content_fingerprint(path), 16) % 2**63])
    return replace(faces, crops=degrade_crops(faces.crops, sample_degrade_params(rng)))


def self_blended_faces(images: Sequence[np.ndarray], faces: FaceCrops, seed: int,
                       path: str | Path, detector: FaceDetector) -> FaceCrops:
    """Face crops of a self-blended copy of a clip (Shiohara & Yamasaki's SBI).

    One :class:`deepmetric.features.blend.BlendParams` is drawn per clip, from ``seed`` and the
    clip's content fingerprint, and applied to every frame with that frame's MTCNN
    landmarks, so the blended region moves with the face. The blend is made on the
    full-resolution frame; the crop is then taken at the detected box, as for the clip.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        RGB uint8 (H, W, 3) frames of the clip.
    faces : FaceCrops
        The detector's output on ``images``.
    seed : int
        Which copy (0, 1, ...).
    path : path-like
        The clip (its content fingerprint seeds the draw).
    detector : FaceDetector
        Gives the crop size and margin.

    Returns
    -------
    FaceCrops
        Same boxes, landmarks and probabilities; crops of the blended frames. A face taken
        whole (``fallback="image"``, ``whole_image``) has no landmarks to blend along: its
        frame is left out of the copy (``found`` False) rather than kept unblended under
        the copy's fake label, so a copy of a clip with no landmarks at all has no face.
    """
    from deepmetric.features.blend import apply_blend, sample_blend_params
    from deepmetric.features.cache import content_fingerprint

    rng = np.random.default_rng([int(seed), int(content_fingerprint(path), 16) % 2**63])
    params = sample_blend_params(rng)
    crops = np.zeros_like(faces.crops)
    # frames taken whole by the detector have no landmarks to blend along: not in the copy
    blendable = faces.found & np.isfinite(faces.landmarks).all(axis=(1, 2))
    for i in np.flatnonzero(blendable):
        blended, _ = apply_blend(images[i], faces.landmarks[i].astype(np.float64), params)
        crops[i] = crop_face(blended, faces.boxes[i], detector.image_size, detector.margin)
    return replace(faces, crops=crops, found=blendable)


def _read(path: str, n: int):
    """Decode in the prefetch thread; return the exception instead of raising it."""
    try:
        return read_frames(path, n)
    except Exception as exc:  # noqa: BLE001 — re-raised in the main thread with context
        if not isinstance(exc, MediaError):
            exc = MediaError(f"{path}: {type(exc).__name__}: {exc}")
        return exc

