"""Main job: extract (cached) → fit pipelines on identity-grouped splits → tables and plots.

    python -m experiments.run                                   # built-in demo data
    python -m experiments.run +exp=triplet_rf data=ffpp data.root=/data/ffpp
    python -m experiments.run +exp=poster_table data=ffpp data.root=... eval_data=folder \\
        eval_data.root=/data/dfdc-crops

Outputs in the Hydra run dir: ``metrics.json``, ``results.md``, ``frame_scores.csv``,
``video_scores.csv``, ``roc.png``, ``triplet_scatter.png``, ``model.joblib``,
``extraction.json``.
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
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import deepmetric
from deepmetric.eval.evaluation import (cross_validate, fit_pipeline, per_method_metrics,
                                        role_masks, score_frames, split_masks)
from deepmetric.learn.temporal import video_table
from deepmetric.features.extract import FrameFeatures
from deepmetric.datasets.items import add_self_blended
from deepmetric.eval.metrics import frame_and_video_metrics
from deepmetric.model import DeepfakeModel
from deepmetric.learn.temporal import MIN_FRAMES, pool_frames

log = logging.getLogger(__name__)

TABLE_ROWS = ("auc", "accuracy", "precision", "recall", "f1", "ap", "eer")


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


def _flat(summary: dict) -> tuple[dict, dict]:
    """summarize_folds output → (means, stds) with the same nesting as one fold."""
    mean, std = {}, {}
    for level, metrics in summary.items():
        mean[level] = {k: v["mean"] for k, v in metrics.items()}
        std[level] = {k: v["std"] for k, v in metrics.items()}
    return mean, std


def _load_items(node: DictConfig, what: str) -> pd.DataFrame:
    spec = OmegaConf.to_container(node, resolve=True)
    spec.pop("detector", None)  # the dataset's detector overrides: see _extractor_for
    try:
        return instantiate(spec, _convert_="all")
    except Exception as exc:  # hydra wraps adapter errors; keep the adapter's message
        cause = exc.__cause__ or exc
        raise type(cause)(f"{what} ({node.get('_target_')}): {cause}") from exc


def _extractor_for(extractor, node: DictConfig):
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


def _features(extractor, items: pd.DataFrame, blocks: list[str], out: Path,
              tag: str) -> tuple[FrameFeatures, dict]:
    report = extractor.run(items)
    log.info("%s extraction: %s", tag, report.summary())
    feats = extractor.features(items, blocks)
    rep = report.to_dict()
    rep["missing"] = feats.missing.to_dict("records")
    (out / f"extraction{'' if tag == 'data' else '_' + tag}.json").write_text(
        json.dumps(rep, indent=1, default=str))
    return feats, rep


def run(cfg: DictConfig) -> dict:
    """Run one experiment and return its metrics (also written to ``metrics.json``).

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
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.random.seed(int(cfg.seed))
    blocks = list(cfg.features)
    extractor = instantiate(cfg.extractor, _convert_="all")
    items = _load_items(cfg.data, "data")
    sbi = cfg.get("self_blend") or {}
    if int(sbi.get("copies", 0)) or sbi.get("only", False):
        items = add_self_blended(items, int(sbi.get("copies", 0)), only=bool(sbi.get("only")))
    feats, rep = _features(_extractor_for(extractor, cfg.data), items, blocks, out, "data")
    X, frames = feats.X, feats.frames
    n_frames = len(frames)
    tcfg = cfg.get("temporal") or {}
    temporal = [str(s) for s in tcfg.get("stats") or []]
    ddof = int(tcfg.get("ddof", 1))
    if temporal:  # a video-level model: one row of frame statistics per clip
        X, frames = pool_frames(X, frames, temporal, ddof=ddof)
    pipelines = pipeline_specs(cfg)
    how, k = str(cfg.aggregate.how), int(cfg.aggregate.k)

    has_split = "split" in frames and frames["split"].notna().all() \
        and frames["split"].astype(str).str.lower().isin(["test", "testing"]).any()
    results: dict[str, dict] = {}
    scored: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for name, pipe in pipelines.items():
        tp = time.perf_counter()
        if has_split:
            tr, te = split_masks(frames)
            est = fit_pipeline(pipe, X[tr], frames[tr])
            fdf, vdf = score_frames(est, X[te], frames[te], how=how, k=k)
            m = frame_and_video_metrics(fdf["label"], fdf["score"], fdf["video_id"],
                                        how=how, k=k, threshold=float(cfg.threshold))
            res = {"protocol": "split column", "test": m, "per_method": per_method_metrics(vdf)}
        else:
            cv = cross_validate(pipe, X, frames, n_splits=int(cfg.cv.n_splits),
                                random_state=int(cfg.seed), how=how, k=k)
            mean, std = _flat(cv.summary)
            fdf, vdf = cv.frame_scores, cv.video_scores
            res = {"protocol": f"identity-grouped {cfg.cv.n_splits}-fold CV (mean over folds)",
                   "test": mean, "test_std": std, "folds": cv.folds,
                   "per_method": cv.per_method}
        if temporal:
            res["protocol"] += f"; video-level model on per-clip {temporal} of frame features"
            _no_frame_level(res)
        res["seconds"] = round(time.perf_counter() - tp, 2)
        results[name] = res
        scored[name] = (fdf.assign(pipeline=name), vdf.assign(pipeline=name))
        log.info("%s: video AUC %.3f, frame AUC %.3f (%s)", name, res["test"]["video"]["auc"],
                 res["test"]["frame"]["auc"], res["protocol"])

    # Fit every pipeline on all of `data` for the saved model and cross-dataset evaluation.
    cross: dict[str, dict] = {}
    cross_skipped = None
    fitted: dict[str, Any] = {}
    eval_items = None
    if cfg.get("eval_data") or cfg.save_model:
        trainable, _ = role_masks(frames)
        for name, pipe in pipelines.items():
            fitted[name] = fit_pipeline(pipe, X[trainable], frames[trainable])
    if cfg.get("eval_data"):
        eval_items = _load_items(cfg.eval_data, "eval_data")
        efeats, erep = _features(_extractor_for(extractor, cfg.eval_data), eval_items, blocks,
                                 out, "eval")
        eX, eframes = efeats.X, efeats.frames
        if temporal:  # clips only: an item with one face (an image) has no temporal spread
            eX, eframes = pool_frames(eX, eframes, temporal, ddof=ddof)
            keep = eframes["n_frames"].to_numpy() >= MIN_FRAMES
            if not keep.all():
                log.warning("eval_data: %d of %d items have fewer than %d frames with a face; "
                            "a video-level model does not score them", int((~keep).sum()),
                            len(keep), MIN_FRAMES)
            eX, eframes = eX[keep], eframes[keep]
            if not len(eframes):
                cross_skipped = (f"all {len(keep)} eval_data items have fewer than "
                                 f"{MIN_FRAMES} frames with a face (images?); a video-level "
                                 "model scores clips")
        for name, est in (fitted.items() if len(eframes) else ()):
            fdf, vdf = score_frames(est, eX, eframes, how=how, k=k)
            m = frame_and_video_metrics(fdf["label"], fdf["score"], fdf["video_id"], how=how,
                                        k=k, threshold=float(cfg.threshold))
            m["per_method"] = per_method_metrics(vdf)
            if temporal:
                _no_frame_level(m)
            cross[name] = m
            fdf.assign(pipeline=name).to_csv(out / f"cross_frame_scores_{name}.csv",
                                             index=False)
            vdf.assign(pipeline=name).to_csv(out / f"cross_video_scores_{name}.csv",
                                             index=False)
    first = next(iter(results))
    metrics = {
        "name": str(cfg.name), "pipeline": first, "protocol": results[first]["protocol"],
        "test": results[first]["test"], "test_std": results[first].get("test_std"),
        "per_method": results[first]["per_method"],
        **({"cross": cross[first]} if cross else {}),
        **({"cross_skipped": cross_skipped} if cross_skipped else {}),
        "pipelines": {n: {**r, **({"cross": cross[n]} if n in cross else {})}
                      for n, r in results.items()},
        "data": {"n_videos": int(len(items)), "n_scored_videos": int(frames.video_id.nunique()),
                 "n_frames": int(n_frames), "features": blocks, "dim": int(X.shape[1]),
                 "temporal": temporal},
        "extraction": {k: rep[k] for k in ("n_items", "n_extracted", "n_cached", "n_failed",
                                           "failures", "no_face", "missing")},
        "deepmetric_version": deepmetric.__version__,
        "seconds": None,
    }
    pd.concat([f for f, _ in scored.values()]).to_csv(out / "frame_scores.csv", index=False)
    pd.concat([v for _, v in scored.values()]).to_csv(out / "video_scores.csv", index=False)
    (out / "results.md").write_text(results_markdown(metrics, cfg))
    if cfg.plots:
        _plots(out, scored, pipelines, X, frames, cfg)
    if cfg.save_model:
        DeepfakeModel(extractor, fitted[first], blocks, how=how, k=k,
                      threshold=float(cfg.threshold), temporal=temporal, ddof=ddof,
                      info={"version": f"{cfg.name}-{first}-{time.strftime('%Y%m%d%H%M%S')}",
                            "config": OmegaConf.to_container(cfg, resolve=False),
                            "test": metrics["test"]}).save(out / "model.joblib")
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    (out / "metrics.json").write_text(json.dumps(_jsonable(metrics), indent=1))
    log.info("results in %s\n%s", out, (out / "results.md").read_text())
    return metrics


def _no_frame_level(metrics: dict) -> None:
    """Blank the frame-level entries (NaN) of a video-level model's metrics, in place.

    Its rows are whole clips, so the "frame" metrics computed over them would only repeat
    the video ones under a frame-level label.
    """
    for key, value in metrics.items():
        if key == "frame" and isinstance(value, dict):
            metrics[key] = {m: math.nan for m in value}
        elif isinstance(value, dict):
            _no_frame_level(value)
        elif isinstance(value, list):
            for v in value:
                if isinstance(v, dict):
                    _no_frame_level(v)


def _plots(out: Path, scored: dict, pipelines: dict, X: np.ndarray, frames: pd.DataFrame,
           cfg: DictConfig) -> None:
    from deepmetric.eval.plots import plot_embedding_scatter, plot_roc

    curves = {f"{n} (video)": (v["label"].to_numpy(), v["score"].to_numpy())
              for n, (_, v) in scored.items()}
    plot_roc(curves, out / "roc.png")
    # Before/after triplet training on a held-out group split (as on the poster).
    from deepmetric.eval.splits import grouped_train_test_split

    proj_name = next((n for n, p in pipelines.items() if "projector" in p.named_steps), None)
    if proj_name is None:
        return
    videos = video_table(frames)
    tr_v, te_v = grouped_train_test_split(videos["label"].to_numpy(),
                                          videos["group"].to_numpy(), test_size=0.25,
                                          random_state=int(cfg.seed))
    tr = frames["video_id"].isin(videos["video_id"].iloc[tr_v]).to_numpy()
    te = ~tr
    proj = fit_pipeline(pipelines[proj_name][:1], X[tr], frames[tr])
    before = X[te]
    if X.dtype == np.uint8:  # face crops (fine-tuning): "before" is the untrained network
        from sklearn.base import clone

        untrained = clone(proj.named_steps["projector"]).set_params(epochs=0)
        before = untrained.fit(X[tr], frames["label"].to_numpy()[tr]).transform(X[te])
    plot_embedding_scatter(before, proj.transform(X[te]), frames["label"].to_numpy()[te],
                           out / "triplet_scatter.png")


def results_markdown(metrics: dict, cfg: DictConfig) -> str:
    """The poster-shaped table: rows AUC/accuracy/precision/recall/F1, a column per pipeline."""
    pipes = metrics["pipelines"]
    lines = [f"# {metrics['name']}", "",
             f"Data: {metrics['data']['n_scored_videos']} videos, {metrics['data']['n_frames']}"
             f" frames; features {metrics['data']['features']} ({metrics['data']['dim']}-d). "
             f"Protocol: {metrics['protocol']}.", ""]
    temporal = metrics["data"].get("temporal")
    for level in ("video", "frame"):
        if level == "frame" and temporal:
            lines += ["## frame level", "", f"None: a video-level model (per-clip {temporal} "
                      "of the frame features) scores whole clips.", ""]
            continue
        lines += [f"## {level} level", "", "| metric | " + " | ".join(pipes) + " |",
                  "|---|" + "---|" * len(pipes)]
        for row in TABLE_ROWS:
            cells = []
            for r in pipes.values():
                v = r["test"][level].get(row, math.nan)
                sd = (r.get("test_std") or {}).get(level, {}).get(row)
                cells.append(_fmt(v) + (f" ± {_fmt(sd)}" if sd is not None else ""))
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
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
        lines += ["## cross-dataset (fit on all of data, test on eval_data)", "",
                  "| metric | " + " | ".join(pipes) + " |", "|---|" + "---|" * len(pipes)]
        for level in ("video", "frame"):
            for row in ("auc", "accuracy", "f1"):
                lines.append(f"| {level} {row} | " + " | ".join(
                    _fmt(r.get("cross", {}).get(level, {}).get(row, math.nan))
                    for r in pipes.values()) + " |")
        lines.append("")
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the video AUC (for sweepers)."""
    metrics = run(cfg)
    auc = metrics["test"]["video"]["auc"]
    return float(auc) if auc is not None and not math.isnan(auc) else 0.0


if __name__ == "__main__":
    main()
