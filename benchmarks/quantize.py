"""int8 FaceNet (``FaceEmbedder(quantize="int8")``) vs the float network: time and closeness.

Time: ``FaceEmbedder.embed`` on the same 25 DFDC dev face crops (one clip's worth), float
(channels-last, the default) against int8, interleaved rounds in the same run; the headline
is the median per-round speed-up (CPU only).

Closeness: the embeddings of N other DFDC dev crops (``dfdc-faces/labels.csv``, hash-ordered,
rows after the timing crops) through the float network and through int8 FaceNet calibrated
two ways: the library's data-free recipe (seeded smooth random images,
:func:`~deepmetric.features.backbones.quantize.calibration_images`) and, as the reference a
data-calibrated network would give, the first 64 DFDC dev crops (not among the N). Reported:
cosine similarity to the float embedding (median, 1st percentile, minimum), and how often the
nearest other crop (by embedding) stays the same.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import dfdc_faces_manifest, interleave, log, median, paired_ratios, table

NAME = "quantize"
GOAL = 1.5  # FaceNet int8 / float on the CPU


def _crops(paths) -> np.ndarray:
    import cv2

    from deepmetric.video.frames import read_image

    return np.stack([cv2.resize(read_image(p), (160, 160), interpolation=cv2.INTER_AREA)
                     for p in paths])


def run(cfg: dict) -> dict:
    import torch

    from deepmetric.features.backbones.facenet import (QUANTIZED_BLOCKS, FaceEmbedder,
                                                       standardize_crops)
    from deepmetric.features.backbones.quantize import quantize_blocks

    if cfg["device"].startswith("cuda"):
        raise RuntimeError("quantize: int8 FaceNet runs on the CPU only (--device cpu)")
    quick = cfg["quick"]
    n = cfg.get("crops") or (60 if quick else 300)
    reps = cfg.get("reps") or (3 if quick else 10)
    items = dfdc_faces_manifest(64 + 25 + n)
    paths = list(items["path"])
    calib_real, timing, probe = (_crops(paths[:64]), _crops(paths[64:89]),
                                 _crops(paths[89:89 + n]))

    fp32 = FaceEmbedder(device="cpu")
    int8 = FaceEmbedder(device="cpu", quantize="int8")
    for e in (fp32, int8):  # load, quantize and warm up outside the timings
        e.embed(timing)
    fns = {"float32 (channels-last)": lambda: fp32.embed(timing),
           "int8": lambda: int8.embed(timing)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(reps):
        t = interleave(fns if r % 2 == 0 else dict(reversed(fns.items())), 1, log=log)
        for k, v in t.items():
            times[k] += v
    ratios = paired_ratios(times["float32 (channels-last)"], times["int8"])

    ref = fp32.embed(probe)["embedding"]
    model = FaceEmbedder(device="cpu", channels_last=False).model
    variants = {"data-free recipe (the library's)": int8.embed(probe)["embedding"]}
    real = quantize_blocks(model, QUANTIZED_BLOCKS, standardize_crops(calib_real))
    with torch.inference_mode():
        e = real(standardize_crops(probe))
    variants["64 DFDC dev crops (reference)"] = torch.nn.functional.normalize(e).numpy()

    def nearest(e: np.ndarray) -> np.ndarray:
        s = e @ e.T
        np.fill_diagonal(s, -np.inf)
        return s.argmax(1)

    rows = []
    for name, e in variants.items():
        cos = np.sum(ref * e, 1)
        rows.append({"calibration": name, "crops": n, "cosine median": float(np.median(cos)),
                     "cosine 1st pct": float(np.percentile(cos, 1)),
                     "cosine min": float(cos.min()),
                     "same nearest crop": float((nearest(e) == nearest(ref)).mean())})
    trows = [{"FaceNet": k, "median s per 25 faces": median(v),
              "speed-up": median(paired_ratios(times["float32 (channels-last)"], v))}
             for k, v in times.items()]
    summary = [{"benchmark": NAME, "metric": "FaceNet embed, float32 / int8 (25 faces, CPU)",
                "ratio": median(ratios), "goal": f">= {GOAL}", "met": median(ratios) >= GOAL,
                "rounds": [round(x, 3) for x in ratios]},
               {"benchmark": NAME, "metric": f"int8 embedding cosine to float, median of {n} "
                                             "DFDC crops", "ratio": rows[0]["cosine median"],
                "goal": "(report)", "met": None}]
    tables = [table(trows, title=f"FaceNet on 25 DFDC dev crops, {reps} interleaved rounds, "
                                 f"torch threads {torch.get_num_threads()}"),
              table(rows, title=f"int8 against float FaceNet on {n} other DFDC dev crops")]
    return {"name": NAME, "times_s": times, "rows": rows + trows, "summary": summary,
            "tables": tables}
