"""deepmetric: deepfake detection by metric learning on FaceNet face embeddings.

The package's folders are its layers; data flows one way through them:

- ``datasets``: the manifest (``items``) and one adapter per dataset layout;
- ``video``: frames (``frames``) → the largest face per frame (``faces``, ``mtcnn``);
- ``features``: FaceNet embeddings and tapped layers (``embedder``, ``weights``), the
  crop's spectrum, self-blended pseudo-fakes (``blend``), the per-clip ``cache`` and the
  ``extract`` loop over a manifest, fine-tuning FaceNet itself (``finetune``);
- ``learn``: the metric-learning core on arrays: losses and miners (``losses``,
  ``mining``), the projection head (``projector``), identity nuisance projection
  (``nuisance``), per-clip pooling (``temporal``);
- ``eval``: identity-grouped ``splits``, frame → video ``scoring``, ``metrics`` and their
  group-bootstrap intervals (``bootstrap``), the evaluation protocol (``evaluation``),
  nested selection (``selection``) and ``plots``;
- on top: a fitted end-to-end detector (``model``), explanations (``explain``) and the
  ``deepmetric`` command (``cli``). ``device`` and ``storage`` are shared by all layers.

``learn`` and ``eval`` work on arrays and tables alone and never import ``datasets``,
``video`` or ``features`` (``tests/test_architecture.py`` checks every import).
Importing the package is cheap: names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_EXPORTS = {
    # data
    "datasets": None,
    "validate_manifest": "datasets.items", "manifest_from_paths": "datasets.items",
    "ManifestError": "datasets.items",
    # video and faces
    "read_frames": "video.frames", "sample_indices": "video.frames",
    "MediaError": "video.frames", "FaceDetector": "video.faces",
    # features
    "FaceEmbedder": "features.embedder", "load_facenet": "features.weights",
    "resolve_weights": "features.weights", "Extractor": "features.extract",
    "FrameFeatures": "features.results", "FeatureCache": "features.cache",
    "radial_spectrum": "features.spectrum", "self_blend": "features.blend",
    "ImageNetEmbedder": "features.imagenet", "FaceMeshEmbedder": "features.facemesh",
    # metric-learning core
    "TripletProjector": "learn.projector", "SemiHardTripletLoss": "learn.mining",
    "pool_frames": "learn.temporal", "NuisanceProjection": "learn.nuisance",
    # evaluation
    "frame_scores": "eval.scoring", "aggregate_scores": "eval.scoring",
    "binary_metrics": "eval.metrics", "frame_and_video_metrics": "eval.metrics",
    "bootstrap_auc": "eval.bootstrap",
    "grouped_kfold": "eval.splits", "grouped_train_test_split": "eval.splits",
    "cross_validate": "eval.evaluation", "fit_pipeline": "eval.evaluation",
    "evaluate": "eval.evaluation", "InnerCVSelector": "eval.selection",
    "plot_roc": "eval.plots", "plot_embedding_scatter": "eval.plots",
    # fitted models
    "DeepfakeModel": "model", "NoFaceError": "model", "TooFewFramesError": "model",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deepmetric' has no attribute {name!r}")
    module = _EXPORTS[name]
    if module is None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from deepmetric import datasets  # noqa: F401
    from deepmetric.datasets.items import (ManifestError, manifest_from_paths,  # noqa: F401
                                           validate_manifest)
    from deepmetric.eval.evaluation import cross_validate, evaluate, fit_pipeline  # noqa: F401
    from deepmetric.eval.selection import InnerCVSelector  # noqa: F401
    from deepmetric.eval.metrics import binary_metrics, frame_and_video_metrics  # noqa: F401
    from deepmetric.eval.plots import plot_embedding_scatter, plot_roc  # noqa: F401
    from deepmetric.eval.scoring import aggregate_scores, frame_scores  # noqa: F401
    from deepmetric.model_selection import grouped_kfold, grouped_train_test_split  # noqa: F401
    from deepmetric.augment.blend import self_blend  # noqa: F401
    from deepmetric.features.cache import FeatureCache  # noqa: F401
    from deepmetric.features.backbones.facenet import FaceEmbedder  # noqa: F401
    from deepmetric.features.extract import Extractor, FrameFeatures  # noqa: F401
    from deepmetric.features.backbones.facemesh import FaceMeshEmbedder  # noqa: F401
    from deepmetric.features.backbones.mobilenet import ImageNetEmbedder  # noqa: F401
    from deepmetric.features.spectrum import radial_spectrum  # noqa: F401
    from deepmetric.features.weights import load_facenet, resolve_weights  # noqa: F401
    from deepmetric.learn.mining import SemiHardTripletLoss  # noqa: F401
    from deepmetric.learn.projector import TripletProjector  # noqa: F401
    from deepmetric.learn.temporal import pool_frames  # noqa: F401
    from deepmetric.model import DeepfakeModel, NoFaceError, TooFewFramesError  # noqa: F401
    from deepmetric.video.faces import FaceDetector  # noqa: F401
    from deepmetric.video.frames import MediaError, read_frames, sample_indices  # noqa: F401
