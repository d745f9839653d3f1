"""The generalisation study's pipelines and protocols, on :class:`~experiments.study_data.Data`.

The pipelines (``logreg``, ``projected``, ``identity_removed``, ``finetuned``,
``seeds_recipe``) and the ways a row is scored: in-dataset grouped CV plus cross-dataset
(:func:`in_and_cross`), paired group-bootstrap differences (:func:`paired`), several
sources (:func:`multisource`) and nested selection of a video-level model
(:func:`nested_video`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from experiments.builders import compose
from experiments.study_data import Data, block_columns

__all__ = ["PROJECTOR_LOSSES", "logreg", "projected", "identity_removed", "finetuned",
           "seeds_recipe", "in_and_cross", "cross_scores", "paired", "multisource",
           "nested_video", "best_blocks"]

#: Heads of the metric rows whose loss is a projector config (experiments/conf/projector).
PROJECTOR_LOSSES = ("triplet", "supcon", "contrastive", "arcface", "paired")


def logreg(C: float = 0.1) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))


def projected(loss: str, C: float = 0.1, seed: int = 0) -> Any:
    """A metric-learning head (``loss``) before the same standardised logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from deepmetric.learn.projector import TripletProjector

    if loss == "oneclass":  # no projector config: its centre is this head's 64-d space
        from deepmetric.learn.losses import OneClassSoftmaxLoss

        lf = OneClassSoftmaxLoss(embedding_size=64)
    elif loss in PROJECTOR_LOSSES:  # the loss of projector=<loss>, as experiments.run builds it
        from hydra.utils import instantiate

        node = compose([f"projector={loss}"]).projector.loss
        lf = None if node is None else instantiate(node)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    proj = TripletProjector(loss=lf, epochs=50, dropout=0.2, weight_decay=1e-4,
                            device="cpu", random_state=seed)
    return Pipeline([("projector", proj), ("scaler", StandardScaler()),
                     ("classifier", LogisticRegression(C=C, max_iter=2000))])


def identity_removed(k: int, C: float = 0.1) -> Any:
    """The top ``k`` between-identity directions projected out (fitted on the training
    identity groups), then the same logistic regression (NuisanceProjection standardises)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from deepmetric.learn.nuisance import NuisanceProjection

    return Pipeline([("nuisance", NuisanceProjection(n_components=k)),
                     ("classifier", LogisticRegression(C=C, max_iter=2000))])


def finetuned(loss: str = "bce", C: float = 0.1, seed: int = 0) -> Any:
    """FaceNet's last blocks (from ``repeat_3``) fine-tuned on the crops with ``loss``, then
    the standardised logistic regression on the fine-tuned 512-d embedding."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from deepmetric.finetune import FaceNetFineTuner

    return Pipeline([("finetune", FaceNetFineTuner(start="repeat_3", loss=loss, epochs=10,
                                                   device="cpu", random_state=seed,
                                                   max_memo_mb=4096)),
                     ("scaler", StandardScaler()),
                     ("classifier", LogisticRegression(C=C, max_iter=2000))])


def seeds_recipe(seed: int = 0) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    from deepmetric.learn.projector import TripletProjector

    return Pipeline([("projector", TripletProjector(device="cpu", random_state=seed)),
                     ("classifier", RandomForestClassifier(n_estimators=300, n_jobs=2,
                                                           random_state=seed))])


# -- protocols ----------------------------------------------------------------------------
def in_and_cross(pipe: Any, blocks: list[str], data: dict[str, Data], *,
                 train: Data | None = None, temporal: list[str] | None = None) -> dict:
    """FF++ grouped 5-fold CV (video AUC) and FF++ → DFDC dev (image AUC) of one pipeline.

    ``train`` replaces FF++ as the training data of the cross-dataset fit (e.g. FF++ plus
    self-blended copies); the in-dataset CV then runs on it too, testing only rows that may
    be tested (``role``).
    """
    from deepmetric.eval.evaluation import evaluate

    tr = train if train is not None else data["ffpp"]
    ev = evaluate(pipe, tr.stack(blocks), tr.frames, n_splits=5, random_state=0,
                  temporal=temporal or [], cross_X=data["dfdc"].stack(blocks),
                  cross_frames=data["dfdc"].frames)
    m = ev.metrics
    return {"ffpp_video_auc": m["test"]["video"]["auc"],
            "ffpp_video_auc_std": m["test_std"]["video"]["auc"],
            "ffpp_frame_auc": m["test"]["frame"]["auc"],
            "dfdc_image_auc": m["cross"]["frame"]["auc"],
            "dfdc_image_ap": m["cross"]["frame"]["ap"],
            "dfdc_image_eer": m["cross"]["frame"]["eer"],
            "chosen": getattr(ev.estimator, "best_name_", None),
            "dim": int(tr.stack(blocks).shape[1])}


def cross_scores(pipe: Any, blocks: list[str], data: dict[str, Data], *,
                 train: Data | None = None) -> np.ndarray:
    """The DFDC dev image scores of a pipeline fitted on every trainable row of ``train``
    (default: all of FF++), as ``in_and_cross``'s cross-dataset column fits it."""
    from deepmetric.eval.evaluation import fit_pipeline, role_masks
    from deepmetric.eval.scoring import frame_scores

    tr = train if train is not None else data["ffpp"]
    keep = role_masks(tr.frames)[0]
    est = fit_pipeline(pipe, tr.stack(blocks)[keep], tr.frames[keep])
    return frame_scores(est, data["dfdc"].stack(blocks))


def paired(pipe: Any, blocks: list[str], data: dict[str, Data], base: np.ndarray, *,
           train: Data | None = None, n_boot: int = 1000) -> dict:
    """A pipeline's DFDC dev AUC against ``base``, the scores of ``exp=deepmetric``'s frame
    path on the same crops: group-bootstrap intervals (DFDC groups = source videos) of its
    AUC and of the paired difference, as a study row."""
    from deepmetric.eval.bootstrap import bootstrap_auc

    dd = data["dfdc"]
    if len(base) != len(dd.frames):
        raise ValueError(f"the baseline scores {len(base)} DFDC rows, this data {len(dd.frames)}:"
                         " a paired comparison needs the same rows")
    y, g = dd.frames["label"].to_numpy(), dd.frames["group"].astype(str).to_numpy()
    r = bootstrap_auc(y, cross_scores(pipe, blocks, data, train=train), g, baseline=base,
                      n_boot=n_boot)
    nan = float("nan")
    return {"ffpp_video_auc": nan, "ffpp_video_auc_std": nan, "ffpp_frame_auc": nan,
            "dfdc_image_auc": r["auc"], "dfdc_image_auc_ci": r["ci"],
            "diff_vs_deepmetric": r["diff"], "diff_ci": r["diff_ci"],
            "p_not_better": r["p_not_better"], "n_groups": r["n_groups"],
            "n_boot": r["n_boot"], "dim": 0}


def multisource(pipe: Any, blocks: list[str], data: dict[str, Data], n_splits: int = 5) -> dict:
    """Train on FF++ plus 4/5 of the DFDC dev groups, test on the other 1/5 (image AUC)."""
    from deepmetric.eval.evaluation import fit_pipeline
    from deepmetric.eval.metrics import binary_metrics
    from deepmetric.eval.scoring import frame_scores
    from deepmetric.model_selection import grouped_kfold

    ff, dd = data["ffpp"], data["dfdc"]
    y, g = dd.frames["label"].to_numpy(), dd.frames["group"].astype(str).to_numpy()
    both, only = [], []
    for tr, te in grouped_kfold(y, g, n_splits=n_splits, random_state=0):
        Xte = dd.stack(blocks)[te]
        for train_frames, Xtr, store in (
                (pd.concat([ff.frames, dd.frames.iloc[tr]], ignore_index=True),
                 np.concatenate([ff.stack(blocks), dd.stack(blocks)[tr]]), both),
                (dd.frames.iloc[tr].reset_index(drop=True), dd.stack(blocks)[tr], only)):
            est = fit_pipeline(pipe, Xtr, train_frames.astype({"group": str}))
            store.append(binary_metrics(y[te], frame_scores(est, Xte))["auc"])
    return {"dfdc_image_auc_ffpp_plus_dfdc": float(np.mean(both)),
            "dfdc_image_auc_ffpp_plus_dfdc_std": float(np.std(both)),
            "dfdc_image_auc_dfdc_only": float(np.mean(only)),
            "dfdc_image_auc_dfdc_only_std": float(np.std(only))}


# -- the rows -----------------------------------------------------------------------------


def nested_video(data: dict[str, Data], choices: list[list[str]]) -> dict:
    """FF++ grouped 5-fold CV (video AUC) of a video-level model whose blocks, per-clip
    statistics ([std] or [mean, std]) and C are chosen inside each training fold.

    Cross-dataset scoring is left out: a video-level model scores images with its frame
    path, whose columns (frame features) are not the pooled ones the candidates select.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline

    from deepmetric.eval.evaluation import evaluate
    from deepmetric.eval.selection import InnerCVSelector

    allb, columns = block_columns(data["ffpp"], choices)
    d = data["ffpp"].stack(allb).shape[1]  # pooled: [mean of all blocks, std of all blocks]
    cand = {}
    for tag, cols in columns.items():
        for stats, sel in (("std", cols + d), ("mean+std", np.concatenate([cols, cols + d]))):
            for C in (0.01, 0.1):
                cand[f"{tag} [{stats}] C={C}"] = make_pipeline(
                    ColumnTransformer([("keep", "passthrough", sel)]), logreg(C))
    ff = data["ffpp"]
    sel = InnerCVSelector(cand, n_splits=3)
    ev = evaluate(sel, ff.stack(allb), ff.frames, n_splits=5, random_state=0,
                  temporal=["mean", "std"])
    m = ev.metrics
    # the choice on all of FF++ (what a saved model would use)
    from deepmetric.eval.evaluation import fit_grouped
    from deepmetric.learn.temporal import pool_frames

    V, videos = pool_frames(ff.stack(allb), ff.frames, ["mean", "std"])
    final = fit_grouped(sel, V, videos["label"].to_numpy(), videos["group"].to_numpy())
    return {"ffpp_video_auc": m["test"]["video"]["auc"],
            "ffpp_video_auc_std": m["test_std"]["video"]["auc"],
            "ffpp_frame_auc": float("nan"), "dfdc_image_auc": float("nan"),
            "dfdc_image_ap": float("nan"), "dfdc_image_eer": float("nan"),
            "chosen": final.best_name_, "n_candidates": len(cand),
            "dim": int(2 * d)}


def best_blocks(done: list[dict]) -> list[str]:
    """The blocks of the ``blocks`` row with the best DFDC dev image AUC (a dev-set choice)."""
    cands = [r for r in done if r["group"] == "blocks" and "dfdc_image_auc" in r]
    if not cands:
        return ["repeat_1"]
    return max(cands, key=lambda r: r["dfdc_image_auc"])["blocks"]
