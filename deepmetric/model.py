"""A fitted detector: extraction settings + fitted frame pipeline + the video rule.

This is what ``experiments.run`` saves (``model.skops``) and what ``deepmetric predict`` and
the app load. The file is data, not code (:mod:`deepmetric.modelfile`): loading it builds
only trusted types and refuses any other file before building anything. Pickles written by
earlier deepmetric versions (``model.joblib``) run code when loaded and load only with
``trust_pickle=True``. :meth:`DeepfakeModel.load` only ever opens the path it is given.
"""

from __future__ import annotations

import os
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from deepmetric.features.extract import Extractor
from deepmetric.eval.scoring import aggregate_scores, frame_scores
from deepmetric.learn.temporal import MIN_FRAMES, pool_frames

__all__ = ["DeepfakeModel", "NoFaceError", "SmokeTestWarning", "TooFewFramesError",
           "DEMO_LOADER"]

#: The data loader of the built-in demo (``experiments.run``'s default data).
DEMO_LOADER = "deepmetric.datasets.demo.load"
#: Smoke-test models that have warned already (once per model object).
_SMOKE_WARNED: weakref.WeakSet = weakref.WeakSet()


class NoFaceError(ValueError):
    """No face was found in any sampled frame of the file (named in the message)."""


class TooFewFramesError(ValueError):
    """A video-level (temporal) model got too few frames with a face (e.g. an image)."""


class SmokeTestWarning(UserWarning):
    """Scoring with a smoke-test model (see :attr:`DeepfakeModel.smoke_test`)."""


class DeepfakeModel:
    """Score clips and images end to end.

    Parameters
    ----------
    extractor : Extractor
        Frame sampling, face detection and embedding settings (no cache is used when
        predicting single files).
    pipeline : sklearn estimator
        Fitted frame-level pipeline (projector + head) with ``predict_proba`` or
        ``decision_function``; a video-level one when ``temporal`` is given.
    blocks : sequence of str
        Feature blocks the pipeline was fitted on, in order.
    how : {"mean", "median", "topk"}
        Frame → video aggregation.
    k : int
        For ``how="topk"``.
    threshold : float
        Video score at or above which the verdict is "fake".
    temporal : sequence of str
        Empty: frame-level pipeline, video score aggregated by ``how``. Else the statistics
        the pipeline's video-level rows were pooled with (:func:`deepmetric.learn.temporal.
        pool_frames`): the clip's frames are pooled the same way and scored once; there are
        no per-frame scores (``frame_scores["fake_score"]`` is NaN).
    ddof : int
        The ``ddof`` of the ``"std"`` statistic (see :func:`~deepmetric.learn.temporal.
        pool_frames`); models pickled before the option existed used 0.
    frame_pipeline : sklearn estimator, optional
        For a video-level model: the same pipeline fitted on frames. Items with fewer than
        :data:`~deepmetric.learn.temporal.MIN_FRAMES` frames with a face (an image, a clip
        where the face was found once) are scored by it, as a frame-level model would;
        without it they raise :class:`TooFewFramesError`. The result's ``scored_by`` says
        which path scored an item (``"video"`` or ``"frame"``).
    info : dict, optional
        Free-form provenance (training data, config, metrics, version); ``info["card"]``
        is the model card, if any (:mod:`deepmetric.card`).
    """

    temporal: Sequence[str] = ()  # class defaults: models pickled before the options existed
    ddof: int = 0
    frame_pipeline: Any = None

    def __init__(self, extractor: Extractor, pipeline: Any,
                 blocks: Sequence[str] = ("embedding",), how: str = "mean", k: int = 5,
                 threshold: float = 0.5, temporal: Sequence[str] = (), ddof: int = 1,
                 frame_pipeline: Any = None, info: dict | None = None):
        self.extractor = extractor
        self.pipeline = pipeline
        self.blocks = list(blocks)
        self.how = how
        self.k = k
        self.threshold = threshold
        self.temporal = list(temporal)
        self.ddof = int(ddof)
        self.frame_pipeline = frame_pipeline
        self.info = dict(info or {})

    @property
    def version(self) -> str:
        """A short identifier of this fitted model (from its provenance)."""
        return str(self.info.get("version", "unversioned"))

    @property
    def smoke_test(self) -> str | None:
        """Why this model is only a smoke test, or None for a model fitted on real data.

        A model is a smoke test when its card says so (``info["card"]["smoke_test"]``, the
        reason) or when it was trained on deepmetric's built-in demo data (self-blended clips
        of three public-domain portraits: it shows that the pipeline runs, nothing more).
        :meth:`predict` and :meth:`predict_many` warn (:class:`SmokeTestWarning`) once per
        model.
        """
        reason = (self.info.get("card") or {}).get("smoke_test")
        if reason:
            return str(reason)
        data = (self.info.get("config") or {}).get("data")
        if isinstance(data, dict) and data.get("_target_") == DEMO_LOADER:
            return ("it was trained on deepmetric's built-in demo data (self-blended clips of "
                    "three public-domain portraits), which only shows that the pipeline runs; "
                    "its scores mean nothing on real faces")
        return None

    def _warn_smoke_test(self) -> None:
        if self.smoke_test and self not in _SMOKE_WARNED:
            _SMOKE_WARNED.add(self)  # not an attribute: it would be saved with the model
            warnings.warn(f"model {self.version} is a smoke-test model: {self.smoke_test}",
                          SmokeTestWarning, stacklevel=3)

    def features_of(self, arrays: dict) -> tuple[np.ndarray, np.ndarray]:
        """Feature matrix (F, D) float32 and frame indices (F,) of the frames with a face."""
        found = arrays["found"].astype(bool)
        X = np.concatenate([arrays[b][found] for b in self.blocks], axis=1)
        return X.astype(np.float32), arrays["frame_index"][found]

    def score_arrays(self, arrays: dict, name: str = "item") -> dict:
        """Score already-extracted arrays (see :meth:`Extractor.extract_item`)."""
        if not arrays["found"].any():
            raise NoFaceError(f"{name}: no face found in any of the "
                              f"{len(arrays['found'])} sampled frame(s)")
        X, idx = self.features_of(arrays)
        scored_by = "frame"
        if self.temporal and len(X) >= MIN_FRAMES:
            scored_by = "video"
        if self.temporal and scored_by == "frame" and self.frame_pipeline is None:
            raise TooFewFramesError(
                f"{name}: this model scores clips by how their frames vary "
                f"(temporal={list(self.temporal)}) and needs faces in at least "
                f"{MIN_FRAMES} frames; found {len(X)}, and it has no frame-level path "
                "(models saved before deepmetric 0.2). Single images need a frame-level "
                "model.")
        if scored_by == "video":
            V, _ = pool_frames(X, pd.DataFrame({"video_id": np.zeros(len(X), np.int64)}),
                               self.temporal, ddof=self.ddof)
            score = float(frame_scores(self.pipeline, V)[0])
            s = np.full(len(X), np.nan)
        else:
            s = frame_scores(self.frame_pipeline if self.temporal else self.pipeline, X)
            video = aggregate_scores(s, np.zeros(len(s), np.int64),  # type: ignore[arg-type]
                                     how=self.how, k=self.k)
            score = float(video["fake_score"].iloc[0])
        found = arrays["found"].astype(bool)
        return {"score": score, "verdict": "fake" if score >= self.threshold else "real",
                "scored_by": scored_by, "n_frames": int(len(found)), "n_faces": int(found.sum()),
                "frame_scores": pd.DataFrame({"frame_index": idx, "fake_score": s,
                                              "face_prob": arrays["prob"][found]})}

    def predict(self, path: str | os.PathLike) -> dict:
        """Score one clip or image.

        Returns
        -------
        dict
            ``path, score`` (P(fake), float), ``verdict`` ("real"/"fake"), ``n_frames``,
            ``n_faces``, ``seconds``, ``frame_scores`` (DataFrame, one row per frame with a
            face: ``frame_index`` int, ``fake_score`` float P(fake) of the frame, NaN for a
            video-level model, ``face_prob`` float32 the face detector's confidence).

        Warns
        -----
        SmokeTestWarning
            Once per model, when it is a smoke test (:attr:`smoke_test`).

        Raises
        ------
        deepmetric.video.frames.MediaError
            Unreadable, empty or unsupported file.
        NoFaceError
            No face in any sampled frame.
        """
        self._warn_smoke_test()
        t = time.perf_counter()
        arrays = self.extractor.extract_item(path)
        out = {"path": str(path), **self.score_arrays(arrays, str(path))}
        out["seconds"] = time.perf_counter() - t
        return out

    def predict_many(self, paths: Iterable[str | os.PathLike]
                     ) -> Iterator[tuple[str, dict | Exception]]:
        """Score many clips and images, single images batched (see
        :meth:`Extractor.extract_items`): a folder of photos or face crops is scored about
        twice as fast as by :meth:`predict` one at a time, with the same scores to float
        rounding.

        Yields
        ------
        path : str
            Each path, in the order given.
        result : dict or Exception
            What :meth:`predict` returns (``seconds`` is the item's share of the wall
            time), or the exception it would raise (naming the file). One bad item never
            stops the rest.

        Warns
        -----
        SmokeTestWarning
            Once per model, when it is a smoke test (:attr:`smoke_test`).
        """
        self._warn_smoke_test()
        for path, arrays, seconds in self.extractor.extract_items(paths):
            if isinstance(arrays, Exception):
                yield path, arrays
                continue
            t = time.perf_counter()
            try:
                out = {"path": path, **self.score_arrays(arrays, path)}
            except Exception as exc:  # noqa: BLE001 — handed to the caller, not lost
                yield path, exc
                continue
            out["seconds"] = seconds + time.perf_counter() - t
            yield path, out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as a ``.skops`` data file, atomically (see :mod:`deepmetric.modelfile`).

        Raises
        ------
        ValueError
            ``path`` is named like a pickle (``.joblib``, ``.pkl``, ``.pickle``): this writes
            data, not a pickle.
        OSError
            The file could not be written; the message names it and no temp file is left.
        """
        from deepmetric.modelfile import save_model

        path = Path(path)
        if path.suffix.lower() in (".joblib", ".pkl", ".pickle"):
            raise ValueError(f"{path}: DeepfakeModel.save writes a data file (skops), not a "
                             "pickle; name it .skops")
        return save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, trust_pickle: bool = False) -> "DeepfakeModel":
        """Load a model saved by :meth:`save`, or, with ``trust_pickle``, an older pickle.

        Parameters
        ----------
        path : path-like
            A ``.skops`` file (data: loads only the types :data:`deepmetric.modelfile.
            TRUSTED_TYPES` and skops' defaults name, and refuses any other before building
            anything), or a joblib pickle written by earlier versions.
        trust_pickle : bool
            Load a pickle too. **A pickle runs any code it holds**: only for files you trust.
            Without it a pickle is refused (recognised by its content) before it is read.
            Pickles of the flat 0.1.x layout (``deepmetric.extract``, ...) load too.

        Raises
        ------
        FileNotFoundError, deepmetric.modelfile.UntrustedModelError, TypeError
            No such file; a refused file (a pickle without ``trust_pickle``, or untrusted
            types, named); not a deepmetric model. Each message names the file.
        """
        from deepmetric.modelfile import load_model

        path = Path(path)
        obj = load_model(path, trust_pickle=trust_pickle)
        if not isinstance(obj, cls):
            raise TypeError(f"{path}: not a deepmetric model (got {type(obj).__name__})")
        return obj
