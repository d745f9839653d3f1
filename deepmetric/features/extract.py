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
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from deepmetric.features.backbones.facenet import EMBEDDING, FaceEmbedder
from deepmetric.features.cache import FeatureCache, flush_fingerprints
from deepmetric.features.passes import extraction_passes, malloc_trim
from deepmetric.features.copies import copy_faces, copy_seeds, variant_name
from deepmetric.features.results import (ExtractionError, ExtractionReport, FrameFeatures,
                                         read_features)
from deepmetric.features.spectrum import SPECTRUM, radial_spectrum
from deepmetric.storage import cache_root
from deepmetric.video.faces import FaceCrops, FaceDetector
from deepmetric.text import printable
from deepmetric.video.frames import MediaError, check_limits, read_frames

__all__ = ["Extractor"]

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
        :class:`deepmetric.features.backbones.mobilenet.ImageNetEmbedder`): anything with
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
            Extract a *self-blended* copy instead (see
            :func:`deepmetric.features.copies.self_blended_faces`).
        degrade_seed : int, optional
            Extract a *degraded* copy (see
            :func:`deepmetric.features.copies.degraded_faces`; after the blend, if both).

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

        Raises
        ------
        ValueError
            A bad ``DEEPMETRIC_MAX_PIXELS`` or ``DEEPMETRIC_MAX_CLIP_PIXELS``, before the
            first file (one settings error, not one per file).
        """
        check_limits()
        def prepare(path: str, frames_or_exc) -> list[tuple]:
            t = time.perf_counter()
            try:
                if isinstance(frames_or_exc, BaseException):
                    raise frames_or_exc
                faces = self.detector.detect(frames_or_exc.images)
            except Exception as exc:  # noqa: BLE001 — handed to the caller, not lost
                return [(path, exc, None, time.perf_counter() - t)]
            if len(frames_or_exc.indices) <= 1:  # only the crops wait, not the image
                frames_or_exc = replace(frames_or_exc, images=[])
            return [(path, frames_or_exc, faces, time.perf_counter() - t)]

        for units, pad in extraction_passes([str(p) for p in paths], self.n_frames,
                                            self.image_batch, prepare):
            ok = [u for u in units if not isinstance(u[1], BaseException)]
            t = time.perf_counter()
            out = iter(self._embed_units([(fr, faces) for _, fr, faces, _ in ok], pad)
                       if ok else [])
            share = (time.perf_counter() - t) / max(len(ok), 1)
            for path, fr, _, s in units:
                if isinstance(fr, BaseException):
                    yield path, fr, s
                else:
                    yield path, next(out), s + share

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
        return self._arrays_many([(fr, copy_faces(path, fr.images, faces, seeds,
                                                  self.detector))])[0]

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

        check_limits()  # a bad DEEPMETRIC_MAX_PIXELS is one settings error, not one per item
        cache = self.cache
        report = ExtractionReport(n_items=len(manifest))
        todo: dict[str, list[tuple[str, tuple]]] = {}  # path -> [(video_id, seeds)]
        for vid, path, seed in zip(manifest["video_id"], manifest["path"], copy_seeds(manifest)):
            name = variant_name(seed)
            if cache.has(path, name) and self._usable(cache.load(path, name)):
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
        for v, p, s in zip(manifest["video_id"], manifest["path"], copy_seeds(manifest)):
            if (a := cache.load(p, variant_name(s))) is None:
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
                              f"{printable(f['path'])} ({f['read']} of {f['asked']})"
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
        with ExitStack() as locks:

            def prepare(path: str, frames_or_exc) -> list[tuple]:
                try:
                    lock = cache.try_lock(path)
                    got = lock.__enter__()
                except OSError as exc:  # cannot be fingerprinted (e.g. unreadable)
                    why = frames_or_exc if isinstance(frames_or_exc, MediaError) else exc
                    for vid, _ in todo[path]:
                        self._failed(vid, path, why, report)
                        finished(1)
                    return []
                if not got:  # another job is on it: come back later
                    lock.__exit__(None, None, None)
                    busy.append(path)
                    return []
                locks.push(lock)
                single = not isinstance(frames_or_exc, BaseException) \
                    and len(frames_or_exc.indices) <= 1
                faces, units = None, []
                for vid, seed in todo[path]:
                    try:
                        if self._usable(cache.load(path, variant_name(seed))):  # another job
                            report.n_cached += 1
                            finished(1)
                            continue
                        cache.clear_stale(path, variant_name(seed))  # a killed job's temp
                        if isinstance(frames_or_exc, BaseException):
                            raise frames_or_exc
                        if faces is None:  # once for the clip and all its copies
                            faces = self.detector.detect(frames_or_exc.images)
                        units.append((vid, path, seed,
                                      # only the crops wait: not the decoded frames (50 MP)
                                      replace(frames_or_exc, images=[]) if single
                                      else frames_or_exc,
                                      copy_faces(path, frames_or_exc.images, faces, seed,
                                                 self.detector)))
                    except Exception as exc:  # noqa: BLE001 — one item's, recorded by name
                        self._failed(vid, path, exc, report)
                        finished(1)
                return units

            def flushed() -> None:
                locks.close()  # every lock of the items just saved
                if self.trim_memory:
                    malloc_trim()

            for units, pad in extraction_passes(paths, self.n_frames, self.image_batch,
                                                  prepare, flushed):
                self._save_many(units, cache, report, finished, pad=pad)
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
                cache.save(path, arr, variant_name(seed))
                report.n_extracted += 1
                report.n_frames += int(len(arr["found"]))
                report.n_faces += int(arr["found"].sum())
            except Exception as exc:  # noqa: BLE001 — one item's, recorded by name
                self._failed(vid, path, exc, report)
            finally:
                finished(1)

    def _failed(self, vid: str, path: str, exc: BaseException,
                report: ExtractionReport) -> None:
        """Record a failed item (``on_error="skip"``) or stop with :class:`ExtractionError`."""
        text = str(exc) if isinstance(exc, (MediaError, ValueError, RuntimeError, OSError)) \
            else f"{type(exc).__name__}: {exc}"  # unexpected: say what kind of error
        msg = text if str(path) in text else f"{path}: {text}"
        if self.on_error == "raise":
            raise ExtractionError(msg) from exc
        report.failures.append({"video_id": vid, "path": path,
                                "error": msg.replace(f"{path}: ", "", 1)})

    def features(self, manifest: pd.DataFrame,
                 blocks: Sequence[str] | str = (EMBEDDING,)) -> FrameFeatures:
        """Frame-level features of the cached items of a manifest: ``manifest`` and ``blocks``
        as :func:`deepmetric.features.results.read_features` takes them, from this
        extractor's cache.

        Returns
        -------
        FrameFeatures
            X float32 (F, D) (uint8 for ``["crops"]``), one row per frame with a face.
        """
        return read_features(self.cache, manifest, blocks, self.feature_names())
