"""Main job: extract (cached) → fit pipelines on identity-grouped splits → tables and plots.

    python -m experiments.run                                   # built-in demo data
    python -m experiments.run exp=triplet_rf data=ffpp data.root=/data/ffpp
    python -m experiments.run exp=poster_table data=ffpp data.root=... eval_data=folder \\
        eval_data.root=/data/dfdc-crops

Outputs in the Hydra run dir: ``metrics.json``, ``results.md``, ``frame_scores.csv``,
``video_scores.csv``, ``roc.png``, ``triplet_scatter.png``, ``model.skops`` (the fitted
model as data, see :mod:`deepmetric.modelfile`), ``extraction.json``. ``metrics.json`` is
written first and the model last; each file is written whole or not at all (a full disk
stops the run with an error naming the file, and leaves no half-written file).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

import deepmetric
from deepmetric.eval.evaluation import evaluate
from deepmetric.features.results import FrameFeatures
from deepmetric.model import DeepfakeModel
from deepmetric.model_selection import check_two_classes
from deepmetric.storage import atomic_file, atomic_write
from deepmetric.text import printable, spreadsheet_safe
from experiments.builders import (backbone_provenance, build_extractor, check_config, data_name,
                                  extractor_for, load_items, objective, pipeline_specs,
                                  training_items)
from experiments.extract import extract_items, wants_sharding

log = logging.getLogger(__name__)

TABLE_ROWS = ("auc", "accuracy", "precision", "recall", "f1", "ap", "eer")


def _features(extractor, items: pd.DataFrame, blocks: list[str], tag: str,
              ext: DictConfig | None = None) -> tuple[FrameFeatures, dict]:
    if wants_sharding(ext) and not all(extractor.cache.has(p) for p in items["path"]):
        # a cold cache: shard the extraction first (extract.jobs / extract.executor)
        extract_items(extractor, items, ext, tag).raise_for_failures()
    report = extractor.run(items)
    log.info("%s extraction: %s", tag, report.summary())
    feats = extractor.features(items, blocks)
    rep = report.to_dict()
    rep["missing"] = feats.missing.to_dict("records")
    return feats, rep


def run(cfg: DictConfig) -> dict:
    """Run one experiment and return its metrics (also written to ``metrics.json``).

    Configuration → library calls → files: the protocol itself is
    :func:`deepmetric.eval.evaluation.evaluate`.

    Parameters
    ----------
    cfg : omegaconf.DictConfig
        The composed config (see ``conf/config.yaml``).

    Returns
    -------
    dict
        ``{"test": {"frame": {...}, "video": {...}}, "test_std": ..., "per_method": ...,
        "cross": ... (with eval_data), "pipelines": {name: ...}, "extraction": ...}``.
    """
    t0 = time.perf_counter()
    check_config(cfg)  # out-of-range values fail here, before any work
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.random.seed(int(cfg.seed))
    extractor, blocks = build_extractor(cfg)
    items = training_items(cfg)
    # before extraction: one-class data cannot train, whatever the features
    trainable = items["role"].fillna("both") != "test" if "role" in items else items.index
    where = cfg.data.get("path") or cfg.data.get("root") or cfg.data.get("_target_")
    check_two_classes(items.loc[trainable, "label"], f"data ({where}, {len(items)} items)")
    feats, rep = _features(extractor_for(extractor, cfg.data), items, blocks, "data",
                           cfg.get("extract"))
    reports = {"extraction.json": rep}
    cross = {}
    if cfg.get("eval_data"):
        efeats, reports["extraction_eval.json"] = _features(
            extractor_for(extractor, cfg.eval_data), load_items(cfg.eval_data, "eval_data"),
            blocks, "eval", cfg.get("extract"))
        cross = {"cross_X": efeats.X, "cross_frames": efeats.frames}
    tcfg = cfg.get("temporal") or {}
    protocol = {"n_splits": int(cfg.cv.n_splits), "random_state": int(cfg.seed),
                "how": str(cfg.aggregate.how), "k": int(cfg.aggregate.k),
                "threshold": float(cfg.threshold),
                "temporal": [str(s) for s in tcfg.get("stats") or []],
                "ddof": int(tcfg.get("ddof", 1))}
    pipelines = pipeline_specs(cfg)
    results = {}
    for name, pipe in pipelines.items():
        tp = time.perf_counter()
        results[name] = evaluate(pipe, feats.X, feats.frames, **protocol, **cross,
                                 fit_final=bool(cfg.save_model))
        results[name].metrics["seconds"] = round(time.perf_counter() - tp, 2)
        log.info("%s: video AUC %.3f, frame AUC %.3f (%s)", name,
                 *(results[name].metrics["test"][lv]["auc"] for lv in ("video", "frame")),
                 results[name].metrics["protocol"])
    first = next(iter(results))
    m0 = results[first].metrics
    metrics = {
        "name": str(cfg.name), "pipeline": first, "protocol": m0["protocol"],
        "threshold": protocol["threshold"],
        "test": m0["test"], "test_std": m0.get("test_std"), "per_method": m0["per_method"],
        **{k: m0[k] for k in ("pooled", "cross", "cross_skipped", "cross_scored_by",
                              "n_left_out_few_frames", "left_out_few_frames") if k in m0},
        "pipelines": {n: r.metrics for n, r in results.items()},
        "data": {"name": data_name(cfg.data),
                 "eval_name": data_name(cfg.eval_data) if cfg.get("eval_data") else None,
                 "n_videos": int(len(items)),
                 # videos a video-level model left out (< 2 frames) were not scored
                 "n_scored_videos": int(feats.frames.video_id.nunique())
                 - int(m0.get("n_left_out_few_frames", 0)),
                 "n_frames": int(len(feats.frames)), "features": blocks,
                 "dim": int(feats.X.shape[1]), "temporal": protocol["temporal"],
                 "backbones": backbone_provenance(extractor)},
        "extraction": {k: rep[k] for k in ("n_items", "n_extracted", "n_cached", "n_failed",
                                           "failures", "no_face", "missing")},
        "deepmetric_version": deepmetric.__version__,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    # metrics.json first; each file whole or not at all (a full disk stops the run naming
    # the file, and leaves nothing half-written under a final name)
    atomic_write(out / "metrics.json", json.dumps(_jsonable(metrics), indent=1))
    for fname, rep_ in reports.items():
        atomic_write(out / fname, json.dumps(rep_, indent=1, default=str))
    for kind in ("frame", "video"):
        _csv(pd.concat([getattr(r, f"{kind}_scores").assign(pipeline=n)
                        for n, r in results.items()]), out / f"{kind}_scores.csv")
        for n, r in results.items():
            if getattr(r, f"cross_{kind}_scores") is not None:
                _csv(getattr(r, f"cross_{kind}_scores").assign(pipeline=n),
                     out / f"cross_{kind}_scores_{n}.csv")
    atomic_write(out / "results.md", results_markdown(metrics, cfg))
    if cfg.plots:
        _plots(out, results, pipelines, feats.X, feats.frames, cfg, metrics)
    if cfg.save_model:  # last: a model that cannot be written loses no metrics
        DeepfakeModel(extractor, results[first].estimator, blocks, how=protocol["how"],
                      k=protocol["k"], threshold=protocol["threshold"],
                      temporal=protocol["temporal"], ddof=protocol["ddof"],
                      frame_pipeline=results[first].frame_estimator,
                      info={"version": f"{cfg.name}-{first}-{time.strftime('%Y%m%d%H%M%S')}",
                            "config": OmegaConf.to_container(cfg, resolve=False),
                            "backbones": metrics["data"]["backbones"],
                            "data": metrics["data"]["name"], "protocol": metrics["protocol"],
                            "test": metrics["test"]}).save(out / "model.skops")
    log.info("results in %s\n%s", out, (out / "results.md").read_text())
    return metrics


def _csv(table: pd.DataFrame, path: Path) -> None:
    """Write a score table atomically, its text cells unable to become spreadsheet formulas."""
    with atomic_file(path) as tmp:
        spreadsheet_safe(table).to_csv(tmp, index=False)


def roc_curves(results: dict, temporal: bool, cross: bool = False) -> dict:
    """The ROC curves of a run: per pipeline its video (or image) curve and, for a
    frame-level model, its frame curve; ``cross``: those of the cross-dataset scores."""
    curves = {}
    for i, (n, r) in enumerate(results.items()):
        frames, videos = ((r.cross_frame_scores, r.cross_video_scores) if cross else
                          (r.frame_scores, r.video_scores))
        if videos is None or videos["label"].nunique() < 2:
            continue
        color = f"C{i % 10}"  # one colour per pipeline: video solid, frame dashed
        images = "n_frames" in videos and bool((videos["n_frames"] == 1).all())
        curves[f"{n}, {'image' if images else 'video'} level"] = (
            videos["label"].to_numpy(), videos["fake_score"].to_numpy(), {"color": color})
        if frames is not None and not images and (cross or not temporal):
            curves[f"{n}, frame level"] = (frames["label"].to_numpy(),
                                           frames["fake_score"].to_numpy(),
                                           {"color": color, "ls": "--", "lw": 1.2})
    return curves


def _plots(out: Path, results: dict, pipelines: dict, X: np.ndarray, frames: pd.DataFrame,
           cfg: DictConfig, metrics: dict) -> None:
    from deepmetric.eval.plots import plot_projection_before_after, plot_roc

    temporal = bool(metrics["data"]["temporal"])
    pooled = "split column" not in metrics["protocol"]
    how = (f"out-of-fold scores pooled over {int(cfg.cv.n_splits)} identity-grouped folds "
           "(results.md: mean over folds)" if pooled else "the split column's test part")
    plot_roc(roc_curves(results, temporal), out / "roc.png",
             title=f"{metrics['data']['name']}, in-dataset: {how}",
             auc_label="pooled AUC" if pooled else "AUC")
    cross = roc_curves(results, temporal, cross=True)
    if cross:
        plot_roc(cross, out / "roc_cross.png",
                 title=f"cross-dataset, all items pooled: fitted on "
                       f"{metrics['data']['name']}, tested on {metrics['data']['eval_name']}")
    # Before/after the projector on a held-out group split (as on the poster).
    proj_name = next((n for n, p in pipelines.items() if "projector" in p.named_steps), None)
    if proj_name is not None:
        plot_projection_before_after(pipelines[proj_name][:1], X, frames,
                                     out / "triplet_scatter.png", random_state=int(cfg.seed))


def results_markdown(metrics: dict, cfg: DictConfig) -> str:
    """The poster-shaped table: rows AUC/accuracy/precision/recall/F1, a column per pipeline."""
    pipes = metrics["pipelines"]
    data = metrics["data"]
    lines = [f"# {metrics['name']}", "",
             f"Data: {data.get('name', '')}, {data['n_scored_videos']} videos, "
             f"{data['n_frames']} frames; features {data['features']} ({data['dim']}-d). "
             f"Protocol: {metrics['protocol']}.", ""]
    temporal = data.get("temporal")
    cv = "split column" not in metrics["protocol"]
    how = (f"mean ± std over {int(cfg.cv.n_splits)} identity-grouped folds" if cv else
           "the split column's test part")
    for level in ("video", "frame"):
        if level == "frame" and temporal:
            lines += ["## frame level", "", f"None: a video-level model (per-clip {temporal} "
                      "of the frame features) scores whole clips.", ""]
            continue
        lines += [f"## {level} level, in-dataset ({data.get('name', 'data')}): {how}", "",
                  "| metric | " + " | ".join(pipes) + " |", "|---|" + "---|" * len(pipes)]
        for row in TABLE_ROWS:
            cells = []
            for r in pipes.values():
                v = r["test"][level].get(row, math.nan)
                sd = (r.get("test_std") or {}).get(level, {}).get(row)
                cells.append(_fmt(v) + (f" ± {_fmt(sd)}" if sd is not None else ""))
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        if cv:
            lines.append("| auc, out-of-fold scores pooled (roc.png) | " + " | ".join(
                _fmt(r.get("pooled", {}).get(level, {}).get("auc", math.nan))
                for r in pipes.values()) + " |")
        lines.append("")
    methods = sorted({m for r in pipes.values() for m in r.get("per_method", {})})
    if methods:
        lines += ["## video AUC per manipulation method (pooled out-of-fold scores)", "",
                  "| method | " + " | ".join(pipes) + " |", "|---|" + "---|" * len(pipes)]
        for m in methods:
            lines.append(f"| {m} | " + " | ".join(
                _fmt(r["per_method"].get(m, {}).get("auc", math.nan)) for r in pipes.values())
                + " |")
        lines.append("")
    if any("cross" in r for r in pipes.values()):
        lines += [f"## cross-dataset: fitted on all of {data.get('name', 'data')}, tested on "
                  f"{data.get('eval_name') or 'eval_data'} (roc_cross.png)", "",
                  "All its items pooled; video: one score per item (for an image, the image's "
                  "score), frame: every frame.", "",
                  "| metric | " + " | ".join(pipes) + " |", "|---|" + "---|" * len(pipes)]
        for level in ("video", "frame"):
            for row in ("auc", "accuracy", "f1"):
                lines.append(f"| {level} {row} | " + " | ".join(
                    _fmt(r.get("cross", {}).get(level, {}).get(row, math.nan))
                    for r in pipes.values()) + " |")
        lines.append("")
    if metrics.get("left_out_few_frames"):
        left = metrics["left_out_few_frames"]
        lines += ["## left out", "", f"{len(left)} video(s) with a face in fewer than 2 "
                  "frames: a video-level model cannot score them: "
                  + ", ".join(printable(v) for v in left[:20])
                  + (" ..." if len(left) > 20 else "") + ".", ""]
    if metrics.get("cross_skipped"):
        lines += ["## cross-dataset", "", f"Not scored: {metrics['cross_skipped']}.", ""]
    ex = metrics["extraction"]
    lines.append(f"Extraction: {ex['n_items']} items, {ex['n_failed']} failed, "
                 f"{len(ex['no_face'])} without a face.")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    try:
        return "n/a" if v is None or math.isnan(float(v)) else f"{float(v):.3f}"
    except (TypeError, ValueError):
        return str(v)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the run's ``optimized_metric`` (for sweepers).

    A run whose objective is missing or NaN fails, naming the key (see
    :func:`experiments.builders.objective`), rather than looking like a bad trial.
    """
    metrics = run(cfg)
    return objective(metrics, str(cfg.optimized_metric))


if __name__ == "__main__":
    main()
