"""deepmetric: deepfake detection by metric learning on FaceNet face embeddings.

Stages (one module each): ``items`` (manifest) → ``frames`` → ``faces`` (MTCNN) →
``embedder`` (FaceNet) → ``cache``/``extract`` → ``projector`` (semi-hard triplet head,
``mining``) → scikit-learn heads → ``scoring`` (frame → video) → ``metrics``/``plots``;
``splits`` and ``evaluation`` keep identities on one side of every split; ``temporal``
pools a clip's frame features into one video-level row.

Importing the package is cheap: names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # manifest and data
    "validate_manifest": "items", "manifest_from_paths": "items", "ManifestError": "items",
    "datasets": None,
    # face pipeline
    "read_frames": "frames", "sample_indices": "frames", "MediaError": "frames",
    "FaceDetector": "faces", "FaceEmbedder": "embedder", "load_facenet": "weights",
    "resolve_weights": "weights", "Extractor": "extract", "FrameFeatures": "extract",
    "FeatureCache": "cache", "radial_spectrum": "spectrum",
    # metric-learning core
    "TripletProjector": "projector", "SemiHardTripletLoss": "mining",
    "frame_scores": "scoring", "aggregate_scores": "scoring",
    "binary_metrics": "metrics", "frame_and_video_metrics": "metrics",
    "grouped_kfold": "splits", "grouped_train_test_split": "splits",
    "pool_frames": "temporal",
    "cross_validate": "evaluation", "fit_pipeline": "evaluation",
    "plot_roc": "plots", "plot_embedding_scatter": "plots",
    # fitted models
    "DeepfakeModel": "model", "NoFaceError": "model", "TooFewFramesError": "model",
    # self-blended images
    "self_blend": "blend",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


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
    from deepmetric.blend import self_blend  # noqa: F401
    from deepmetric.cache import FeatureCache  # noqa: F401
    from deepmetric.embedder import FaceEmbedder  # noqa: F401
    from deepmetric.evaluation import cross_validate, fit_pipeline  # noqa: F401
    from deepmetric.extract import Extractor, FrameFeatures  # noqa: F401
    from deepmetric.faces import FaceDetector  # noqa: F401
    from deepmetric.frames import MediaError, read_frames, sample_indices  # noqa: F401
    from deepmetric.items import ManifestError, manifest_from_paths, validate_manifest  # noqa
    from deepmetric.metrics import binary_metrics, frame_and_video_metrics  # noqa: F401
    from deepmetric.mining import SemiHardTripletLoss  # noqa: F401
    from deepmetric.model import DeepfakeModel, NoFaceError, TooFewFramesError  # noqa: F401
    from deepmetric.plots import plot_embedding_scatter, plot_roc  # noqa: F401
    from deepmetric.projector import TripletProjector  # noqa: F401
    from deepmetric.scoring import aggregate_scores, frame_scores  # noqa: F401
    from deepmetric.spectrum import radial_spectrum  # noqa: F401
    from deepmetric.splits import grouped_kfold, grouped_train_test_split  # noqa: F401
    from deepmetric.temporal import pool_frames  # noqa: F401
    from deepmetric.weights import load_facenet, resolve_weights  # noqa: F401
