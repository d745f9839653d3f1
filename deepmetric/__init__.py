"""deepmetric: deepfake detection by metric learning on FaceNet face embeddings.

The package's folders are its layers, bottom first; each imports only the ones below it:

- ``device``, ``storage``, ``cluster``, ``params``, ``text``: services shared by every
  layer (device choice, cache and data folders and atomic writes, job scheduling,
  estimator parameter checks, names escaped for printing and CSV cells);
- ``model_selection``: identity-grouped splits, on arrays;
- ``augment``: image operators (self-blending, degradation);
- ``datasets``: the manifest (``items``) and one adapter per dataset layout;
- ``video``: frames (``frames``) → the largest face per frame (``faces``, ``mtcnn``);
- ``features``: the ``backbones`` run on face crops (FaceNet, MobileNetV2, FaceMesh, and
  the ``Backbone`` protocol they share), the crop's ``spectrum``, the per-clip ``cache``,
  training ``copies`` of clips, the one extraction loop (``passes``) behind ``extract``,
  and ``shard`` for many jobs;
- ``learn``: the metric-learning core on arrays: losses and miners (``losses``,
  ``mining``), the projection head (``projector``, ``network``), identity nuisance
  projection (``nuisance``), per-clip pooling (``temporal``);
- ``eval``: frame → video ``scoring``, ``metrics`` and their group-bootstrap intervals
  (``bootstrap``), the evaluation protocol (``evaluation``), nested selection
  (``selection``) and ``plots``;
- on top: a fitted end-to-end detector (``model``, saved by ``modelfile``, described by
  its ``card``), the model shipped in the package (``pretrained``), fine-tuning FaceNet
  itself (``finetune``), explanations (``scorer``, ``explain``) and the ``deepmetric``
  command (``cli``).

``model_selection``, ``learn`` and ``eval`` work on arrays and tables alone and never import
``augment``, ``datasets``, ``video`` or ``features`` (``tests/test_architecture.py`` checks
every import). Importing the package is cheap: names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.3.0"

#: The public names, each with the module it lives in (None: a sub-package), written once:
#: ``__all__``, ``dir()`` and the lazy ``__getattr__`` all read it.
_EXPORTS = {
    # data
    "datasets": None,
    "validate_manifest": "datasets.items", "manifest_from_paths": "datasets.items",
    "ManifestError": "datasets.items",
    # video and faces
    "read_frames": "video.frames", "sample_indices": "video.frames",
    "MediaError": "video.frames", "FaceDetector": "video.faces",
    # features
    "FaceEmbedder": "features.backbones.facenet", "load_facenet": "features.backbones.weights",
    "resolve_weights": "features.backbones.weights", "Extractor": "features.extract",
    "FrameFeatures": "features.results", "FeatureCache": "features.cache",
    "radial_spectrum": "features.spectrum", "self_blend": "augment.blend",
    "ImageNetEmbedder": "features.backbones.mobilenet",
    "FaceMeshEmbedder": "features.backbones.facemesh",
    # metric-learning core
    "TripletProjector": "learn.projector", "SemiHardTripletLoss": "learn.mining",
    "pool_frames": "learn.temporal", "NuisanceProjection": "learn.nuisance",
    # evaluation
    "frame_scores": "eval.scoring", "aggregate_scores": "eval.scoring",
    "binary_metrics": "eval.metrics", "frame_and_video_metrics": "eval.metrics",
    "bootstrap_auc": "eval.bootstrap",
    "grouped_kfold": "model_selection", "grouped_train_test_split": "model_selection",
    "fit_pipeline": "eval.evaluation",
    "evaluate": "eval.evaluation", "InnerCVSelector": "eval.selection",
    "plot_roc": "eval.plots", "plot_embedding_scatter": "eval.plots",
    # fitted models
    "DeepfakeModel": "model", "NoFaceError": "model", "TooFewFramesError": "model",
    "SmokeTestWarning": "model", "load_packaged": "pretrained", "model_card": "card",
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
