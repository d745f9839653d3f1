"""Heads: fit and predict time of each scikit-learn head on the projected embeddings.

Data: the synthetic clustered 512-d embeddings of the triplet benchmark (3,550 rows), the
``TripletProjector`` (``conf/projector/triplet.yaml`` settings, a few epochs) fitted on them
and its 64-d output. Heads come from ``conf/classifier/*.yaml`` (``${seed}`` = 0), except
the SVM, which is ``SVC(probability=True)`` as in the poster (the YAML skips Platt scaling).

Baseline in the same run: the same head fitted on the raw (standardised) 512-d embeddings,
i.e. without the projector; the ratio is ``time(raw 512-d) / time(projected 64-d)``.
Each head fits on all rows and predicts ``predict_proba`` on all rows; raw and projected
alternate within each repetition, medians over repetitions.
"""

from __future__ import annotations

import importlib
import time


from benchmarks.common import REPO, log, median, table

NAME = "heads"
HEADS = {"KNN": "knn", "SGD log_loss": "sgd", "RandomForest": "rf",
         "LogisticRegression": "logreg", "SVC(probability=True)": "svm"}


def load_head(name: str):
    """A fresh estimator from ``conf/classifier/<name>.yaml`` (``${seed}`` → 0)."""
    import yaml

    path = REPO / "experiments" / "conf" / "classifier" / f"{name}.yaml"
    spec = yaml.safe_load(path.read_text())
    target = spec.pop("_target_")
    spec = {k: (0 if v == "${seed}" else v) for k, v in spec.items()}
    if name == "svm":
        spec["probability"] = True
    mod, cls = target.rsplit(".", 1)
    return getattr(importlib.import_module(mod), cls)(**spec)


def run(cfg: dict) -> dict:
    import warnings

    import torch  # noqa: F401  (TripletProjector)
    from sklearn.preprocessing import StandardScaler

    from benchmarks.triplet import synthetic
    from deepmetric.learn.projector import TripletProjector

    quick = cfg["quick"]
    device = cfg["device"]
    reps = cfg.get("reps") or (1 if quick else 3)
    n = 500 if quick else 3550
    X, y = synthetic(n, seed=1)
    t0 = time.perf_counter()
    proj = TripletProjector(epochs=2 if quick else 5, validation_fraction=0.0,
                            random_state=0, device=device).fit(X, y)
    Z = proj.transform(X)
    log(f"[heads] projector fitted in {time.perf_counter() - t0:.1f} s: "
        f"{X.shape} -> {Z.shape}")
    data = {"projected 64-d": Z, "raw 512-d": StandardScaler().fit_transform(X)}

    times = {(h, d, s): [] for h in HEADS for d in data for s in ("fit", "predict")}
    for r in range(reps):
        for h, conf in HEADS.items():
            order = list(data) if r % 2 == 0 else list(data)[::-1]
            for d in order:
                est = load_head(conf)
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    # scikit-learn 1.9 deprecates SVC(probability=True) (still works)
                    warnings.simplefilter("ignore", FutureWarning)
                    est.fit(data[d], y)
                t1 = time.perf_counter()
                est.predict_proba(data[d])
                t2 = time.perf_counter()
                times[(h, d, "fit")].append(t1 - t0)
                times[(h, d, "predict")].append(t2 - t1)
            log(f"[heads] rep {r + 1}/{reps} {h}: "
                + ", ".join(f"{d} fit {times[(h, d, 'fit')][-1]:.2f} s" for d in data))

    rows, summary = [], []
    for h in HEADS:
        p_fit = median(times[(h, "projected 64-d", "fit")])
        p_pred = median(times[(h, "projected 64-d", "predict")])
        r_fit = median(times[(h, "raw 512-d", "fit")])
        r_pred = median(times[(h, "raw 512-d", "predict")])
        rows.append({"head": h, "fit s (64-d)": p_fit, "predict s (64-d)": p_pred,
                     "fit s (512-d)": r_fit, "predict s (512-d)": r_pred,
                     "fit speed-up": r_fit / p_fit, "predict speed-up": r_pred / p_pred})
        summary.append({"benchmark": NAME,
                        "metric": f"{h} fit+predict 512-d / 64-d",
                        "ratio": (r_fit + r_pred) / (p_fit + p_pred), "goal": "(report)",
                        "met": None})
    tables = [table(rows, title=f"Heads on {n} rows (fit on all, predict_proba on all), "
                                f"{reps} reps; baseline = same head on raw 512-d")]
    return {"name": NAME, "n": n, "reps": reps, "rows": rows,
            "times_s": {f"{h}|{d}|{s}": v for (h, d, s), v in times.items()},
            "summary": summary, "tables": tables}
