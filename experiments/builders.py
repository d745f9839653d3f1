"""Builders shared by the experiment scripts: config nodes → library objects.

``experiments.run``, ``experiments.extract`` and the generalisation study build their
manifests, extractors and pipelines here, from the same config keys, so that every script
fills and reads the same feature cache.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from deepmetric.datasets.items import add_degraded, add_self_blended

__all__ = ["build_pipeline", "pipeline_specs", "training_items", "load_items",
           "build_extractor", "extractor_for", "compose", "objective", "check_config",
           "data_name", "ConfigError", "CONF"]

#: The experiments' config folder.
CONF = Path(__file__).resolve().parent / "conf"


def build_pipeline(spec: DictConfig | dict) -> Any:
    """An sklearn Pipeline from ``{projector, scaler, classifier}`` configs (empty → skipped)."""
    from sklearn.pipeline import Pipeline

    steps = []
    for name in ("projector", "scaler", "classifier"):
        node = spec.get(name) if spec is not None else None
        if node and "_target_" in node:
            steps.append((name, instantiate(node, _convert_="all")))
    if not steps or steps[-1][0] != "classifier":
        raise ValueError(f"pipeline {dict(spec) if spec else spec} has no classifier")
    return Pipeline(steps)


def pipeline_specs(cfg: DictConfig) -> dict[str, Any]:
    """Named pipelines of the run: ``cfg.pipelines`` or the single projector/classifier."""
    if cfg.get("pipelines"):
        return {str(k): build_pipeline(v) for k, v in cfg.pipelines.items()}
    single = {"projector": cfg.get("projector"), "scaler": cfg.get("scaler"),
              "classifier": cfg.get("classifier")}
    return {str(cfg.name): build_pipeline(single)}


def training_items(cfg: DictConfig) -> pd.DataFrame:
    """``cfg.data``'s manifest with the training-only copies the config asks for: self-blended
    pseudo-fakes (``self_blend``), then degraded copies of every trainable row (``degrade``)."""
    items = load_items(cfg.data, "data")
    sbi = cfg.get("self_blend") or {}
    if int(sbi.get("copies", 0)) or sbi.get("only", False):
        items = add_self_blended(items, int(sbi.get("copies", 0)), only=bool(sbi.get("only")))
    deg = cfg.get("degrade") or {}
    if int(deg.get("copies", 0)):
        items = add_degraded(items, int(deg["copies"]))
    return items


def load_items(node: DictConfig, what: str) -> pd.DataFrame:
    """The manifest of a data config (``data``, ``eval_data``): its adapter instantiated,
    its ``detector`` overrides left for :func:`extractor_for`; an adapter's error keeps its
    message, prefixed with ``what`` and the adapter."""
    spec = OmegaConf.to_container(node, resolve=True)
    spec.pop("detector", None)  # the dataset's detector overrides: see extractor_for
    try:
        return instantiate(spec, _convert_="all")
    except Exception as exc:  # hydra wraps adapter errors; keep the adapter's message
        cause = exc.__cause__ or exc
        raise type(cause)(f"{what} ({node.get('_target_')}): {cause}") from exc


def data_name(node: DictConfig | Mapping) -> str:
    """A data config's short name for titles and tables: its adapter and its folder.

    E.g. ``"ffpp: ffpp-c23"`` (``data=ffpp``), ``"manifest: dfdc-faces"``
    (``data=dfdc_faces``), ``"demo"``; ``" (first N)"`` is added for ``head=N``.
    """
    target = str(node.get("_target_") or "data")
    parts = target.split(".")
    adapter = parts[-2] if len(parts) >= 2 else target
    name = adapter
    where = node.get("root") or node.get("path")
    if where:
        p = Path(str(where))
        folder = p.parent.name if p.suffix else p.name
        if folder and folder != adapter:
            name = f"{adapter}: {folder}"
    if node.get("head"):
        name += f" (first {int(node['head'])})"
    return name


def build_extractor(cfg: DictConfig) -> tuple[Any, list[str]]:
    """The run's extractor and feature blocks: ``cfg.extractor``, plus ``cfg.backbone`` (one
    more network on the same crops, e.g. ``backbone=timm``) whose blocks join
    ``cfg.features``."""
    extractor = instantiate(cfg.extractor, _convert_="all")
    blocks = list(cfg.features)
    if cfg.get("backbone"):
        backbone = instantiate(cfg.backbone, _convert_="all")
        extractor.backbones = [*extractor.backbones, backbone]
        blocks += [b for b in backbone.feature_names() if b not in blocks]
    return extractor, blocks


def backbone_provenance(extractor) -> list[dict]:
    """What each extra backbone of an extractor is (name, weights and their digest, ...)."""
    return [b.provenance() if hasattr(b, "provenance") else b.settings()
            for b in extractor.backbones]


def extractor_for(extractor, node: DictConfig):
    """The run's extractor, with the dataset's own ``detector`` overrides (e.g. tight crops)."""
    over = node.get("detector")
    if not over:
        return extractor
    import copy

    ex = copy.copy(extractor)
    ex.detector = copy.copy(extractor.detector)
    for key, value in OmegaConf.to_container(over, resolve=True).items():
        if not hasattr(ex.detector, key):
            raise ValueError(f"unknown detector option {key!r} in the dataset config")
        setattr(ex.detector, key, value)
    return ex


class ConfigError(ValueError):
    """A config value out of its range; the message names the key, the value and the range."""


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: The range of each checked key: ``key -> (test, what the value must be)``. Keys a config
#: does not have are not checked.
RANGES: dict[str, tuple[Any, str]] = {
    "threshold": (lambda v: _number(v) and 0 <= v <= 1, "a number between 0 and 1"),
    "seed": (_integer, "an integer"),
    "cv.n_splits": (lambda v: _integer(v) and v >= 2, "an integer >= 2"),
    "aggregate.how": (lambda v: v in ("mean", "median", "topk"), "mean, median or topk"),
    "aggregate.k": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "temporal.ddof": (lambda v: v in (0, 1) and _integer(v), "0 or 1"),
    "temporal.stats": (lambda v: isinstance(v, list) and len(set(v)) == len(v)
                       and set(v) <= {"mean", "std"}, "a list of distinct mean, std"),
    "self_blend.copies": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "degrade.copies": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "extractor.n_frames": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "extractor.image_batch": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "extractor.spectrum_bins": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "extract.jobs": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
}


def check_config(cfg: DictConfig) -> DictConfig:
    """Range-check a composed config before anything runs (as the CLI checks its options).

    Parameters
    ----------
    cfg : omegaconf.DictConfig
        A composed config of ``experiments/conf``.

    Returns
    -------
    omegaconf.DictConfig
        ``cfg``, unchanged.

    Raises
    ------
    ConfigError
        The first key of :data:`RANGES` whose value is out of range, e.g. ``threshold
        must be a number between 0 and 1, got 2 (threshold=2)``.
    """
    missing = object()
    for key, (ok, what) in RANGES.items():
        value = OmegaConf.select(cfg, key, default=missing)
        if value is missing or value is None:
            continue
        if not isinstance(value, (int, float, str, bool)):
            value = OmegaConf.to_container(value, resolve=True)
        if not ok(value):
            raise ConfigError(f"{key} must be {what}, got {value!r} ({key}={value})")
    return cfg


def compose(overrides: list[str], config_name: str = "config") -> DictConfig:
    """The config ``python -m experiments.run <overrides>`` would run with (no Hydra run).

    Parameters
    ----------
    overrides : list of str
        Command-line overrides, e.g. ``["exp=deepmetric", "data=ffpp"]``.
    config_name : str
        A config of ``experiments/conf``.

    Returns
    -------
    omegaconf.DictConfig
        Range-checked (:func:`check_config`).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return check_config(hydra_compose(config_name, overrides=overrides))


def objective(metrics: Mapping, key: str) -> float:
    """The value of a dotted ``metrics.json`` path, for sweepers.

    Parameters
    ----------
    metrics : mapping
        A run's metrics (what ``metrics.json`` holds).
    key : str
        A dotted path into it, e.g. ``"test.video.auc"`` or ``"cross.frame.auc"``.

    Returns
    -------
    float

    Raises
    ------
    KeyError
        The path is not in the metrics (the message names the key and what is there).
    ValueError
        The value is missing (None), not a number, or NaN (named with the key).
    """
    node: Any = metrics
    done = []
    for part in str(key).split("."):
        if not isinstance(node, Mapping) or part not in node:
            there = sorted(map(str, node)) if isinstance(node, Mapping) else type(node).__name__
            raise KeyError(f"optimized_metric {key!r}: {'.'.join(done + [part])!r} is not in "
                           f"the run's metrics (there: {there})")
        node = node[part]
        done.append(part)
    try:
        value = float(node)
    except (TypeError, ValueError):
        raise ValueError(f"optimized_metric {key!r} is {node!r}, not a number") from None
    if math.isnan(value):
        raise ValueError(f"optimized_metric {key!r} is NaN (the metric could not be "
                         "computed on this run)")
    return value
