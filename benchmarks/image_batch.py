"""Image data sets: ``Extractor(image_batch=16)`` vs one FaceNet pass per image, same crops.

Baseline: ``Extractor(..., image_batch=1)``, the extractor as it was before images were
batched: every image is read, its face found, and its crop (and mirror image) run through
FaceNet alone. Candidate: the same extractor with ``image_batch=16`` (the default), which
keeps 16 one-frame items waiting and runs their crops through FaceNet in one forward
pass. Both extract ``exp=deepmetric``'s blocks (flip-averaged FaceNet taps + spectrum)
from the first DFDC dev face crops into fresh cache directories, including reading,
face finding and the cache writes; once with the crops taken whole (``whole_image``: FaceNet
is nearly all the cost) and once with MTCNN on each crop (the ``dfdc_faces`` default).
Rounds alternate the order; the headline is the median of the per-round speed-ups. The
features of both are compared (largest absolute difference).

A third comparison scores a folder of crops with a fitted model, as ``deepmetric predict``
does: :meth:`DeepfakeModel.predict` one file at a time (baseline, what the CLI did before)
vs :meth:`DeepfakeModel.predict_many` (images batched), MTCNN on each crop, same files each
round (prediction caches nothing); the scores of both are compared.
"""

from __future__ import annotations

import tempfile

import numpy as np

from benchmarks.common import dfdc_faces_manifest, interleave, log, median, paired_ratios, table

NAME = "image_batch"
GOAL = 1.3
BLOCKS = ["embedding", "repeat_2@2x2", "repeat_3", "spectrum"]


def run(cfg: dict) -> dict:
    from deepmetric.features.backbones.facenet import FaceEmbedder
    from deepmetric.features.extract import Extractor
    from deepmetric.video.faces import FaceDetector

    quick = cfg["quick"]
    n = cfg.get("clips") or (48 if quick else 160)
    reps = cfg.get("reps") or (2 if quick else 3)
    items = dfdc_faces_manifest(n * reps)
    device = cfg["device"]
    embedder = FaceEmbedder(layers=["repeat_2@2x2", "repeat_3"], flip_average=True,
                            device=device)
    embedder.model  # noqa: B018 — loaded once, outside the timings
    rows, summary, times_all = [], [], {}
    for mode, detector in (("crops taken whole", FaceDetector(whole_image=True,
                                                              device=device)),
                           ("MTCNN on each crop", FaceDetector(fallback="image",
                                                               device=device))):
        caches: dict[str, list[str]] = {}
        rnd = {"r": 0}

        def make(batch: int, key: str):
            def fn():
                d = tempfile.mkdtemp(prefix=f"bench-{batch}-")
                caches.setdefault(key, []).append(d)
                part = items.iloc[rnd["r"] * n:(rnd["r"] + 1) * n]  # new crops each round
                Extractor(detector, embedder, spectrum_bins=32, cache_dir=d, progress=False,
                          image_batch=batch).run(part)
            return fn

        fns = {"one pass per image": make(1, "one"), "image_batch=16": make(16, "batch")}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for r in range(reps):  # each round: both variants on the same n new crops
            rnd["r"] = r
            t = interleave(fns if r % 2 == 0 else dict(reversed(fns.items())), 1, log=log)
            for k, v in t.items():
                times[k] += v
        ratios = paired_ratios(times["one pass per image"], times["image_batch=16"])
        diff = 0.0
        for r, (a_dir, b_dir) in enumerate(zip(caches["one"], caches["batch"])):
            part = items.iloc[r * n:(r + 1) * n]
            fa = Extractor(detector, embedder, spectrum_bins=32, cache_dir=a_dir,
                           progress=False).features(part, BLOCKS)
            fb = Extractor(detector, embedder, spectrum_bins=32, cache_dir=b_dir,
                           progress=False).features(part, BLOCKS)
            diff = max(diff, float(np.nanmax(np.abs(fa.X - fb.X))))
        for k, ts in times.items():
            rows.append({"crops": mode, "variant": k, "median s": median(ts),
                         "images/s": n / median(ts),
                         "speed-up": median(paired_ratios(times["one pass per image"], ts)),
                         "max |feature diff|": diff if k != "one pass per image" else 0.0})
        summary.append({"benchmark": NAME, "metric": f"images/s, image_batch=16 / one pass "
                        f"per image ({mode})", "ratio": median(ratios), "goal": f">= {GOAL}",
                        "met": median(ratios) >= GOAL, "reps": [round(x, 3) for x in ratios]})
        times_all[mode] = times
    tables = [table(rows, title=f"Extracting {n} DFDC dev face crops per round, {reps} rounds "
                                f"(fresh caches, {device})")]
    prow, psum = _predict_folder(items.iloc[:n], embedder, device, reps)
    rows += prow
    summary.append(psum)
    tables.append(table(prow, title=f"Scoring {n} DFDC dev face crops with a fitted model, "
                                    f"{reps} rounds ({device})"))
    return {"name": NAME, "n_images": n, "reps": reps, "times_s": times_all, "rows": rows,
            "summary": summary, "tables": tables}


def _predict_folder(items, embedder, device: str, reps: int) -> tuple[list[dict], dict]:
    """``predict`` per file vs ``predict_many`` on the same files, with a model whose head is
    fitted on these crops' own embeddings (the head's cost is negligible either way)."""
    from sklearn.linear_model import LogisticRegression

    from deepmetric.features.extract import Extractor
    from deepmetric.model import DeepfakeModel
    from deepmetric.video.faces import FaceDetector

    extractor = Extractor(FaceDetector(fallback="image", device=device), embedder,
                          progress=False)
    files = list(items["path"])
    with tempfile.TemporaryDirectory() as d:
        ex = Extractor(extractor.detector, embedder, cache_dir=d, progress=False)
        ex.run(items)
        feats = ex.features(items)
    head = LogisticRegression(max_iter=1000).fit(feats.X, feats.y)
    model = DeepfakeModel(extractor, head)
    out: dict[str, list] = {}

    def one():
        out["one"] = [_score(lambda f=f: model.predict(f)) for f in files]

    def many():
        out["many"] = [r["score"] if isinstance(r, dict) else None
                       for _, r in model.predict_many(files)]

    fns = {"predict, one file at a time": one, "predict_many": many}
    times = interleave(fns, reps, log=log)
    ratios = paired_ratios(times["predict, one file at a time"], times["predict_many"])
    a, b = np.array(out["one"], float), np.array(out["many"], float)
    diff = float(np.nanmax(np.abs(a - b)))
    rows = [{"crops": "deepmetric predict (MTCNN on each crop)", "variant": k,
             "median s": median(ts), "images/s": len(files) / median(ts),
             "speed-up": median(paired_ratios(times["predict, one file at a time"], ts)),
             "max |score diff|": diff if k == "predict_many" else 0.0}
            for k, ts in times.items()]
    summary = {"benchmark": NAME, "metric": "images/s, predict_many / predict one file at a "
               "time (deepmetric predict on a folder)", "ratio": median(ratios),
               "goal": f">= {GOAL}", "met": median(ratios) >= GOAL,
               "reps": [round(x, 3) for x in ratios]}
    return rows, summary


def _score(fn) -> float | None:
    try:
        return fn()["score"]
    except ValueError:  # no face: None in both variants
        return None
