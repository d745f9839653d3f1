"""The generalisation study: what holds up from FaceForensics++ to DFDC, on cached features.

    python -m experiments.generalization                                   # default rows
    python -m experiments.generalization study.rows=[blocks,metric]        # some groups
    python -m experiments.generalization -m study.rows=blocks,metric,sbi   # a job per group
    python -m experiments.generalization -m study.rows=blocks,metric hydra/launcher=slurm

A Hydra app (config ``conf/study.yaml``: the run config with ``exp=deepmetric``, ``data=ffpp``
and ``eval_data=dfdc_faces``), so a multirun goes through the same launchers as sweeps
(local, joblib, SLURM; docs/sweeps.md) and its jobs' rows are merged into the sweep folder by
:class:`experiments.callbacks.MergeStudyCallback`. Data from ``FFPP_ROOT`` (the in-dataset
set: identity-grouped 5-fold CV, video AUC) and ``DFDC_FACES_ROOT`` (the cross-dataset
development set: fitted on all of FF++, image AUC; ``eval_data.head=N`` keeps the first N
rows of its hash-ordered ``labels.csv``, ``null`` all). Features come from the extractor of
``exp=deepmetric`` (FaceNet blocks averaged over the crop and its mirror, the spectrum, the
crops themselves), extracted and cached on first use exactly as ``python -m experiments.run
exp=deepmetric ... extractor.save_crops=true`` does; the ImageNet MobileNetV2 blocks
(``mnv2/...``) are computed from the cached crops.

Row groups (``study.rows``):

- ``blocks``: each feature block alone and a few combinations, standardised → logistic
  regression (frame level; video score = mean of frame scores);
- ``adapt``: each data set standardised with its own feature statistics (transductive: it
  reads the unlabelled DFDC dev features' mean and std; a batch-statistics check on how much
  of the gap is a shift of the feature distribution);
- ``metric``: the same features with and without a metric-learning projection head
  (semi-hard triplet, SupCon, one-class softmax, contrastive, ArcFace) before the same
  classifier;
- ``sbi``: self-blended pseudo-fakes of the real FF++ clips (``study.sbi_copies``), with the real
  fakes and real-only (pseudo-fakes as the only fakes);
- ``degrade``: training-only copies of every FF++ clip whose face crops went through a random
  blur / resampling / JPEG chain (``study.degrade_copies``; :mod:`deepmetric.augment.degrade`),
  alone and with the self-blended copies;
- ``finetune``: FaceNet's last blocks fine-tuned on the crops (BCE), on FF++ and on FF++ plus
  the self-blended copies (``study.rows=finetune``; not in the default rows: about half an
  hour on 2 CPU cores);
- ``identity``: the top k between-identity directions of the training data projected out
  (:class:`deepmetric.learn.nuisance.NuisanceProjection`, nuisance attribute projection)
  before the same classifier, k in {8, 16, 32};
- ``source_paired``: the triplet head trained on source-paired triplets (each fake against
  the real clip it was made from, positives across identities; ``projector=paired``,
  :mod:`deepmetric.learn.paired`) beside the plain semi-hard triplet head and no head, with
  group-bootstrap intervals of the difference to no head (``study.rows=source_paired``);
- ``timm``: each ``study.timm`` backbone's pooled features (:mod:`deepmetric.features.backbones.
  timm`, weights from a local file or the user's hub cache, never downloaded), alone and
  beside ``exp=deepmetric``'s blocks, with group-bootstrap intervals against its frame path
  (``study.rows=timm "study.timm=['clip=/path/to/weights.safetensors']"``);
- ``paired``: a few rows again, fitted on all of FF++ (and its copies) only, with 95 %
  group-bootstrap intervals (DFDC groups: source videos) of their DFDC dev AUC and of its
  paired difference to ``exp=deepmetric``'s frame path (:mod:`deepmetric.eval.bootstrap`);
- ``multisource``: FF++ plus part of the DFDC dev set for training, tested on the rest of
  it (grouped by source video, 5 folds) — a second protocol, not cross-dataset;
- ``nested``: the choice of features and of C made by an inner grouped CV inside each outer
  FF++ training fold (and on all of FF++ for the cross-dataset column);
- ``nested_video``: the same for the video-level model, whose per-clip statistics
  ([std] or [mean, std]) are chosen too (in-dataset only; ``study.rows=nested_video``).
- ``landmarks``: MediaPipe FaceMesh geometry (:mod:`deepmetric.features.backbones.facemesh`: the 468
  landmarks with pose, position and scale taken out, and FaceMesh's face-presence logit)
  alone and added to ``exp=deepmetric``'s blocks (``study.rows=landmarks``);
- ``geometry``: the crop geometry of the two data sets matched (``study.rows=geometry``): the
  DFDC crops taken whole as faces (``detector.whole_image``) instead of MTCNN's box plus
  margin clamped to the 224-px crop, and the FF++ faces cropped at MTCNN's tight box
  (``detector.margin=0``), as the DFDC crops were made; with group-bootstrap intervals
  of the difference to ``exp=deepmetric``'s frame path. With ``study.sbi_copies`` it adds
  the self-blended copies cut at the same tight box, and the matched geometry's
  video-level model.

Every choice this study reports as "best" was made on the DFDC *development* set (or, for
``nested``, inside the training folds); the held-out test splits are not read here.
Writes ``generalization.json`` and ``generalization.md`` into the run folder
(``outputs/generalization/<time>``, or ``$DEEPMETRIC_OUTPUTS``) after every row.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import hydra
from omegaconf import DictConfig

from experiments.builders import check_config
from experiments.study_data import (DEEPMETRIC, FACENET_BLOCKS, MNV2_BLOCKS, Data,
                                    block_columns, load_data, self_standardised, with_copies)
from experiments.study_protocols import (best_blocks, cross_scores,
                                         finetuned, identity_removed, in_and_cross, logreg,
                                         multisource, nested_video, paired, projected,
                                         seeds_recipe)

log = logging.getLogger("generalization")

#: ``study.timm`` short names of the foundation backbones behind published cross-dataset results
#: (docs/generalization.md): timm model name and TimmEmbedder options.
TIMM_PRESETS = {
    "clip": ("vit_large_patch14_clip_224.openai", {}),               # CLIP ViT-L/14
    "dinov2": ("vit_large_patch14_dinov2.lvd142m",                     # DINOv2 ViT-L/14, at 224
               {"image_size": 224, "model_kwargs": {"dynamic_img_size": True}}),
    "effnet_b4": ("tf_efficientnet_b4.ap_in1k", {}),                  # SBI's EfficientNet-B4
}

#: The row groups, in the order a job runs them.
ROW_GROUPS = ("baselines", "blocks", "adapt", "metric", "timm", "source_paired", "sbi",
              "identity", "degrade", "finetune", "paired", "geometry", "landmarks",
              "multisource", "nested", "nested_video")


#: The groups that use the dev-set best blocks of the ``blocks`` rows (:func:`best_blocks`).
USES_BEST = frozenset({"adapt", "metric", "sbi", "identity", "degrade", "paired", "geometry",
                       "multisource", "nested", "nested_video"})


def rows(data: dict[str, Data], groups: set[str],
         on_row: Callable[[list[dict]], None] | None = None,
         done: list[dict] | None = None, sbi_copies: int = 0,
         degrade_copies: int = 0, timm_blocks: tuple = ()) -> list[dict]:
    """Run the study's row groups; each row: name, group, blocks, what, and its metrics.

    ``on_row`` is called with all rows so far after each row (to write them as they come);
    ``done`` holds rows of an earlier run (``study.previous``): they are kept and count for the
    dev-set choice of the best blocks. ``sbi_copies`` and ``degrade_copies`` (copies per
    clip in ``data["sbi"]`` and ``data["degrade"]``) name the rows that use them, so runs
    with other numbers of copies keep their own rows. ``timm_blocks`` are the blocks of the
    ``study.timm`` backbones (the ``timm`` rows).
    """
    out: list[dict] = list(done or [])

    def row(group: str, name: str, what: str, blocks: list[str], fn: Callable[[], dict]):
        nonlocal out
        t = time.perf_counter()
        try:
            res = fn()
        except Exception as exc:  # noqa: BLE001 — one failed row keeps the others
            log.exception("row %s failed", name)
            res = {"error": f"{type(exc).__name__}: {exc}"}
        res.update(name=name, group=group, what=what, blocks=blocks,
                   seconds=round(time.perf_counter() - t, 1))
        log.info("%s", {k: (round(v, 3) if isinstance(v, float) else v)
                        for k, v in res.items() if k != "blocks"})
        out = [r for r in out if (r["group"], r["name"]) != (group, name)] + [res]
        if on_row is not None:
            on_row(out)

    if "baselines" in groups:
        row("baselines", "seeds' recipe on flip-averaged FaceNet", "embedding → semi-hard "
            "triplet head → RF", ["embedding"],
            lambda: in_and_cross(seeds_recipe(), ["embedding"], data))
        row("baselines", "exp=deepmetric, frame level", "texture stats + spectrum → logreg",
            DEEPMETRIC, lambda: in_and_cross(logreg(), DEEPMETRIC, data))
        row("baselines", "exp=deepmetric, video level (images: its frame path)",
            "per-clip std → logreg", DEEPMETRIC,
            lambda: in_and_cross(logreg(), DEEPMETRIC, data, temporal=["std"]))
    if "blocks" in groups:
        for b in FACENET_BLOCKS + MNV2_BLOCKS:
            row("blocks", b, "one block → logreg", [b],
                lambda b=b: in_and_cross(logreg(), [b], data))
        for combo in (["mnv2/13", "mnv2/17"], ["mnv2/6", "mnv2/13", "mnv2/17"],
                      ["repeat_1", "mnv2/13"], ["repeat_1", "repeat_2", "spectrum"],
                      DEEPMETRIC + ["mnv2/13", "mnv2/17"]):
            row("blocks", "+".join(combo), "blocks → logreg", combo,
                lambda c=combo: in_and_cross(logreg(), c, data))
    best = best_blocks(out)
    if "adapt" in groups:
        for blocks in (best, DEEPMETRIC):
            row("adapt", "+".join(blocks) + ": each data set standardised by its own "
                "statistics", "transductive: uses the unlabelled DFDC dev features' mean/std",
                blocks, lambda b=blocks: in_and_cross(logreg(), b, self_standardised(data)))
    if "metric" in groups:
        for blocks in (best, DEEPMETRIC):
            tag = "+".join(blocks)
            row("metric", f"{tag}: no projector", "standardised → logreg", blocks,
                lambda b=blocks: in_and_cross(logreg(), b, data))
            for loss in ("triplet", "supcon", "oneclass", "contrastive", "arcface"):
                row("metric", f"{tag}: {loss} head", f"{loss} projection (64-d) → logreg",
                    blocks, lambda b=blocks, lf=loss: in_and_cross(projected(lf), b, data))
    if "timm" in groups and timm_blocks:
        base = cross_scores(logreg(), DEEPMETRIC, data)
        for b in timm_blocks:
            for name, blocks in ((b, [b]), (f"exp=deepmetric's blocks + {b}", DEEPMETRIC + [b])):
                row("timm", name, "standardised → logreg", blocks,
                    lambda bl=blocks: in_and_cross(logreg(), bl, data))
                row("timm", f"paired: {name}", "fitted on all FF++; DFDC dev AUC, group "
                    "bootstrap vs exp=deepmetric's frame path", blocks,
                    lambda bl=blocks: paired(logreg(), bl, data, base))
    if "source_paired" in groups:
        base = cross_scores(logreg(), DEEPMETRIC, data)  # projector=none's DFDC scores
        tag = "+".join(DEEPMETRIC)
        for loss, what in (("triplet", "semi-hard triplet head (pairing ignored)"),
                           ("paired", "source-paired triplet head")):
            row("source_paired", f"{tag}: {what}", f"{loss} projection (64-d) → logreg",
                DEEPMETRIC, lambda lf=loss: in_and_cross(projected(lf), DEEPMETRIC, data))
            row("source_paired", f"paired: {tag}: {what}", "fitted on all FF++; DFDC dev AUC, "
                "group bootstrap vs no projector (exp=deepmetric's frame path)", DEEPMETRIC,
                lambda lf=loss: paired(projected(lf), DEEPMETRIC, data, base))
    # FF++ with its training-only copies, built once for every group that uses them
    ff_sbi = with_copies(data["ffpp"], data["sbi"]) if "sbi" in data else None
    ff_deg = with_copies(data["ffpp"], data["degrade"]) if "degrade" in data else None
    if "sbi" in groups and ff_sbi is not None:
        n = f" ({sbi_copies} per real clip)" if sbi_copies > 1 else ""
        only = ff_sbi.frames.copy()  # FF++'s own fakes are tested, never trained on
        only.loc[only["label"].eq(1) & only["role"].eq("both"), "role"] = "test"
        sbi_only = Data(ff_sbi.X, only)
        for blocks in (best, DEEPMETRIC):
            tag = "+".join(blocks)
            row("sbi", f"{tag}: FF++ + self-blended copies{n}", "real + fakes + pseudo-fakes",
                blocks, lambda b=blocks: in_and_cross(logreg(), b, data, train=ff_sbi))
            row("sbi", f"{tag}: real + self-blended only{n}", "no real fake in training",
                blocks, lambda b=blocks: in_and_cross(logreg(), b, data, train=sbi_only))
    if "identity" in groups:
        for blocks in (["embedding"], DEEPMETRIC, best):
            tag = "+".join(blocks)
            for k in (8, 16, 32):
                row("identity", f"{tag}: identity subspace removed, k={k}",
                    f"NuisanceProjection({k}) → logreg", blocks,
                    lambda b=blocks, k=k: in_and_cross(identity_removed(k), b, data))
    if "degrade" in groups and ff_deg is not None:
        ff_both = with_copies(data["ffpp"], data["degrade"], data["sbi"]) \
            if "sbi" in data else None
        for blocks in (best, DEEPMETRIC):
            tag = "+".join(blocks)
            row("degrade", f"{tag}: FF++ + degraded copies ({degrade_copies} per clip)",
                "blur / resampling / JPEG copies of every clip, training only", blocks,
                lambda b=blocks: in_and_cross(logreg(), b, data, train=ff_deg))
            if ff_both is not None:
                row("degrade", f"{tag}: FF++ + degraded + self-blended copies",
                    "both kinds of copies, training only", blocks,
                    lambda b=blocks: in_and_cross(logreg(), b, data, train=ff_both))
    if "finetune" in groups and "crops" in data["ffpp"].X:
        crops = ["crops"]
        row("finetune", "FaceNet fine-tuned from repeat_3 (BCE) on FF++", "fine-tuned "
            "embedding → standardised logreg", crops,
            lambda: in_and_cross(finetuned("bce"), crops, data))
        if ff_sbi is not None:
            row("finetune", "FaceNet fine-tuned from repeat_3 (BCE) on FF++ + self-blended "
                f"copies ({sbi_copies} per real clip)", "the SBI recipe on FaceNet's last "
                "blocks", crops, lambda: in_and_cross(finetuned("bce"), crops, data,
                                                       train=ff_sbi))
    if "paired" in groups:
        cands = {"exp=deepmetric, frame level (the baseline itself)": (logreg(), DEEPMETRIC,
                                                                       None),
                 "+ MobileNetV2 blocks (the dev-set best blocks)": (logreg(), best, None),
                 "+ identity subspace removed, k=16": (identity_removed(16), DEEPMETRIC, None)}
        if ff_sbi is not None:
            cands[f"+ self-blended copies ({sbi_copies} per real clip)"] = (
                logreg(), DEEPMETRIC, ff_sbi)
            cands["+ MobileNetV2 blocks + self-blended copies"] = (logreg(), best, ff_sbi)
        if ff_deg is not None:
            cands[f"+ degraded copies ({degrade_copies} per clip)"] = (
                logreg(), DEEPMETRIC, ff_deg)
        base = cross_scores(logreg(), DEEPMETRIC, data)
        for name, (pipe, blocks, train) in cands.items():
            row("paired", name, "fitted on all FF++ (+ copies); DFDC dev AUC, group bootstrap "
                "vs exp=deepmetric's frame path", blocks,
                lambda p=pipe, b=blocks, t=train: paired(p, b, data, base, train=t))
    if "geometry" in groups and {"ffpp_tight", "dfdc_whole"} <= data.keys():
        base = cross_scores(logreg(), DEEPMETRIC, data)
        for name, what, ff, dd in (
                ("DFDC crops taken whole", "FF++ crops as before (MTCNN box + margin)",
                 "ffpp", "dfdc_whole"),
                ("FF++ at MTCNN's tight box + DFDC crops taken whole", "both data sets "
                 "cropped at the face box, as the DFDC crops were made", "ffpp_tight",
                 "dfdc_whole")):
            matched = {"ffpp": data[ff], "dfdc": data[dd]}
            row("geometry", f"exp=deepmetric, frame level: {name}", what, DEEPMETRIC,
                lambda m=matched: in_and_cross(logreg(), DEEPMETRIC, m))
            row("geometry", f"paired: {name}", "fitted on all FF++; DFDC dev AUC, group "
                "bootstrap vs exp=deepmetric's frame path", DEEPMETRIC,
                lambda m=matched: paired(logreg(), DEEPMETRIC, m, base))
        tight = {"ffpp": data["ffpp_tight"], "dfdc": data["dfdc_whole"]}
        row("geometry", "exp=deepmetric, video level (images: its frame path): FF++ at "
            "MTCNN's tight box + DFDC crops taken whole", "per-clip std → logreg, matched "
            "geometry", DEEPMETRIC,
            lambda: in_and_cross(logreg(), DEEPMETRIC, tight, temporal=["std"]))
        if "sbi_tight" in data:
            tight_sbi = with_copies(data["ffpp_tight"], data["sbi_tight"])
            name = (f"FF++ + self-blended copies ({sbi_copies} per real clip), all at "
                    "MTCNN's tight box + DFDC crops taken whole")
            for tag, blocks in (("exp=deepmetric, frame level", DEEPMETRIC),
                                ("+ MobileNetV2 blocks", best)):
                row("geometry", f"{tag}: {name}", "matched geometry + pseudo-fakes", blocks,
                    lambda b=blocks: in_and_cross(logreg(), b, tight, train=tight_sbi))
                row("geometry", f"paired: {tag}: {name}", "fitted on all FF++ and its "
                    "copies; DFDC dev AUC, group bootstrap vs exp=deepmetric's frame path",
                    blocks, lambda b=blocks: paired(logreg(), b, tight, base, train=tight_sbi))
    if "landmarks" in groups and "facemesh/shape" in data["ffpp"].X:
        shape, flag = ["facemesh/shape"], ["facemesh/flag"]
        for name, what, blocks in (
                ("facemesh/shape", "FaceMesh landmarks, pose/position/scale taken out → "
                 "logreg", shape),
                ("facemesh/flag", "FaceMesh's face-presence logit → logreg", flag),
                ("facemesh/shape+facemesh/flag", "both → logreg", shape + flag),
                ("exp=deepmetric's blocks + facemesh", "texture stats + spectrum + "
                 "landmark geometry → logreg", DEEPMETRIC + shape + flag)):
            row("landmarks", name, what, blocks,
                lambda b=blocks: in_and_cross(logreg(), b, data))
        base = cross_scores(logreg(), DEEPMETRIC, data)
        row("landmarks", "paired: exp=deepmetric's blocks + facemesh", "fitted on all "
            "FF++; DFDC dev AUC, group bootstrap vs exp=deepmetric's frame path",
            DEEPMETRIC + shape + flag,
            lambda: paired(logreg(), DEEPMETRIC + shape + flag, data, base))
    if "multisource" in groups:
        for blocks in (best, DEEPMETRIC):
            row("multisource", "+".join(blocks), "FF++ + 4/5 of DFDC dev → 1/5", blocks,
                lambda b=blocks: multisource(logreg(), b, data))
    if "nested" in groups:
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import make_pipeline

        from deepmetric.eval.selection import InnerCVSelector

        choices = [DEEPMETRIC, best, ["repeat_3", "spectrum"], ["mnv2/13", "mnv2/17"]]
        allb, columns = block_columns(data["ffpp"], choices)
        cand = {}
        for tag, cols in columns.items():
            for C in (0.01, 0.1):
                cand[f"{tag} C={C}"] = make_pipeline(
                    ColumnTransformer([("keep", "passthrough", cols)]), logreg(C))
        row("nested", "inner-CV choice of blocks and C", f"{len(cand)} candidates, inner "
            "grouped 3-fold CV on the training rows", allb,
            lambda: in_and_cross(InnerCVSelector(cand, n_splits=3), allb, data))
    if "nested_video" in groups:
        row("nested_video", "inner-CV choice of blocks, statistics and C, video level",
            "per-clip [std] or [mean, std] pooled blocks, standardised logreg; inner grouped "
            "3-fold CV on the training clips", DEEPMETRIC,
            lambda: nested_video(data, [DEEPMETRIC, best, ["repeat_3", "spectrum"]]))
    return out


def timm_backbone(spec: str) -> Any:
    """A :class:`~deepmetric.features.backbones.timm.TimmEmbedder` from ``NAME[=WEIGHTS]``
    (NAME a timm model or a :data:`TIMM_PRESETS` key), pooled features only."""
    from deepmetric.features.backbones.timm import TimmEmbedder

    name, _, weights = spec.partition("=")
    model, options = TIMM_PRESETS.get(name, (name, {}))
    return TimmEmbedder(model, weights or None, layers=["pool"], device="auto",
                        prefix=name if name in TIMM_PRESETS else None, **options)


def markdown(results: list[dict], head: int | None,
             sets: tuple[str, str] = ("ffpp", "dfdc_faces")) -> str:
    """The rows as a markdown table; ``sets``: the ``data`` and ``eval_data`` choices."""
    if tuple(sets) == ("ffpp", "dfdc_faces"):
        intro = (f"FF++ c23 sample (142 clips), identity-grouped 5-fold CV, **video** AUC (mean "
                 f"of frame scores; ± std over folds) | FF++ → DFDC dev crops ({head or 'all'} "
                 f"rows), **image** AUC, fitted on all of FF++.")
    else:  # the columns keep the study's names; say which data they hold
        intro = (f"Not the study's data: the FF++ column is data={sets[0]} (identity-grouped "
                 f"5-fold CV, **video** AUC, mean ± std over folds), the DFDC column "
                 f"eval_data={sets[1]} ({head or 'all'} rows; frame-level AUC, fitted on all "
                 f"of data={sets[0]}).")
    lines = ["# Generalisation study", "", intro, "",
             "| group | row | FF++ in-dataset, video AUC | FF++ → DFDC dev, image AUC | "
             "dim | s |", "|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['group']} | {r['name']} | error: {r['error']} | | | |")
        elif "diff_vs_deepmetric" in r:  # a paired row (group paired, geometry)
            lo, hi = r["dfdc_image_auc_ci"]
            dlo, dhi = r["diff_ci"]
            lines.append(f"| {r['group']} | {r['name']} | — | {r['dfdc_image_auc']:.3f} "
                         f"[{lo:.3f}, {hi:.3f}]; vs exp=deepmetric "
                         f"{r['diff_vs_deepmetric']:+.3f} [{dlo:+.3f}, {dhi:+.3f}] | | "
                         f"{r['seconds']} |")
        elif r["group"] == "multisource":
            lines.append(
                f"| multisource | {r['name']} | — | FF++ + DFDC 4/5 → 1/5: "
                f"{r['dfdc_image_auc_ffpp_plus_dfdc']:.3f} ± "
                f"{r['dfdc_image_auc_ffpp_plus_dfdc_std']:.3f}; DFDC 4/5 alone: "
                f"{r['dfdc_image_auc_dfdc_only']:.3f} ± {r['dfdc_image_auc_dfdc_only_std']:.3f}"
                f" | | {r['seconds']} |")
        else:
            chosen = f" (chose {r['chosen']})" if r.get("chosen") else ""
            cross = r["dfdc_image_auc"]
            cross = "—" if cross is None or cross != cross else f"{cross:.3f}"  # NaN: not run
            lines.append(f"| {r['group']} | {r['name']}{chosen} | {r['ffpp_video_auc']:.3f} ± "
                         f"{r['ffpp_video_auc_std']:.3f} | {cross} | "
                         f"{r['dim']} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def write(out: Path, results: list[dict], head: int | None,
          sets: tuple[str, str] = ("ffpp", "dfdc_faces")) -> None:
    """``generalization.json`` (the rows) and ``generalization.md`` (their table) into ``out``,
    each written whole under its final name (a killed run keeps the rows written so far)."""
    from deepmetric.storage import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "generalization.json", json.dumps(results, indent=1, default=str))
    atomic_write(out / "generalization.md", markdown(results, head, sets))


def study(cfg: DictConfig) -> list[dict]:
    """Run the row groups of ``cfg.study.rows`` on the data of ``cfg`` (``conf/study.yaml``);
    the rows are written into ``cfg.paths.output_dir`` after each row, and returned."""
    check_config(cfg)
    rows_cfg = cfg.study.rows
    groups = {rows_cfg} if isinstance(rows_cfg, str) else set(rows_cfg)
    unknown = groups - set(ROW_GROUPS)
    if unknown:
        raise ValueError(f"study.rows: unknown row group(s) {sorted(unknown)}; "
                         f"choose from {list(ROW_GROUPS)}")
    out = Path(cfg.paths.output_dir)
    head, sets = cfg.eval_data.get("head"), data_names()
    done = []
    if cfg.study.previous:
        prev = Path(cfg.study.previous)
        try:
            done = json.loads(prev.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"study.previous={prev}: not a generalization.json "
                             f"({exc})") from exc
    if groups & USES_BEST and "blocks" not in groups and not any(
            r.get("group") == "blocks" for r in done):
        raise ValueError(f"study.rows: {sorted(groups & USES_BEST)} use the dev-set best "
                         "blocks of the `blocks` rows: add blocks to study.rows, or give "
                         "study.previous=<a generalization.json that has them>")
    plain = bool(groups & {"sbi", "degrade", "finetune", "paired"})  # default-margin copies
    n_sbi = int(cfg.study.sbi_copies) if plain or "geometry" in groups else 0
    n_deg = int(cfg.study.degrade_copies) if groups & {"degrade", "paired"} else 0
    timm = [timm_backbone(spec) for spec in cfg.study.timm]
    data = load_data(cfg, n_sbi, degrade_copies=n_deg,
                     keep_crops="finetune" in groups, geometry="geometry" in groups,
                     default_copies=plain, landmarks="landmarks" in groups, timm=timm)
    results = rows(data, groups, on_row=lambda r: write(out, r, head, sets), done=done,
                   sbi_copies=n_sbi, degrade_copies=n_deg,
                   timm_blocks=tuple(b for e in timm for b in e.feature_names()))
    write(out, results, head, sets)
    return results


def data_names(config: DictConfig | None = None) -> tuple[str, str]:
    """The ``data`` and ``eval_data`` choices of this Hydra run (or of ``config``'s)."""
    from hydra.core.hydra_config import HydraConfig

    choices = (config.hydra.runtime.choices if config is not None
               else HydraConfig.get().runtime.choices)
    return str(choices.get("data")), str(choices.get("eval_data"))


@hydra.main(version_base=None, config_path="conf", config_name="study")
def main(cfg: DictConfig) -> None:
    """``python -m experiments.generalization [-m] [overrides]``: see the module docstring."""
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    results = study(cfg)
    print(markdown(results, cfg.eval_data.get("head"), data_names()))


if __name__ == "__main__":
    main()
