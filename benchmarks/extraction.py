"""Extraction: deepmetric's ``Extractor`` vs a naive facenet-pytorch pipeline, same clips.

Naive baseline (the way facenet-pytorch's examples are written; ``benchmarks/naive.py``):
every frame read, MTCNN on each full-resolution frame, each face embedded alone.

Candidate: ``Extractor(FaceDetector(), FaceEmbedder(), n_frames=25).run(manifest)`` with a
fresh cache directory, i.e. including its decode-prefetch thread and its cache writes.

The clips are split into rounds of 2 clips (so the prefetch thread still overlaps decoding
with compute inside a round, while rounds stay short enough for both pipelines of a round
to see the same load on a shared machine); in each round every pipeline processes the same
clips, the order rotating from round to round, and the per-round speed-up
``t_naive / t_ours`` is recorded; the headline is the median over rounds. Both produce
faces that are then compared: boxes (IoU) on frames where both found a face, and embeddings
of the *same* (naive) crops through both embedders.

Second headline: ours with :class:`~deepmetric.video.blazeface.BlazeFaceDetector` (the
``detector=blazeface`` option) instead of MTCNN, same embedder, same clips, timed in the same
rounds against the same naive baseline (goal >= 5x); its boxes are compared with the naive
MTCNN's on the frames both found a face, and it gets its own stage breakdown. On the CPU
a third row runs BlazeFace with FaceNet's convolutional blocks in int8
(``FaceEmbedder(quantize="int8")``, the fastest configuration): its embeddings are compared
with the float BlazeFace row's on the same frames (cosine), and the breakdown gets its embed
stage.

Extra rows (not the headline, only with ``--extras``): ours with one torch thread; ours
with facenet-pytorch's own MTCNN cascade, one resize call per candidate box
(``FaceDetector(batched_crops=False)``, the price of not batching them); and ours in a child
process started with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP reads it only at start-up, so it needs its
own process; the child loads the models once and waits on stdin between rounds). With the
default policy torch's idle OpenMP threads spin, taking CPU from the decode-prefetch thread;
the naive pipeline, which has no such thread, is faster with the default policy, so the
baseline keeps it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (ffpp_dir, ffpp_manifest, interleave, log, median,
                               paired_ratios, precisions, shared_dir, sync, table)
from benchmarks.naive import Naive
from benchmarks.passive import PassiveChild
from benchmarks.stages import breakdown

NAME = "extraction"
#: The timed pipelines besides the naive loop: result key -> (detector, embedder) of a
#: variant. ``embedder_int8`` exists only on the CPU in fp32, so that row runs only there.
PIPELINES = {"ours": ("detector", "embedder"), "ours_blazeface": ("blazeface", "embedder"),
             "ours_blazeface_int8": ("blazeface", "embedder_int8")}
GOAL = 3.0
GOAL_BLAZEFACE = 5.0
#: Extra rows (not the headline): key suffix in ``times``, pipeline label, metric label.
EXTRAS = (("threads1", "ours, torch.set_num_threads(1)", "ours with 1 torch thread"),
          ("perbox", "ours, FaceDetector(batched_crops=False)",
           "ours with facenet-pytorch's per-box crops"),
          ("passive", "ours, child process with OMP_WAIT_POLICY=PASSIVE",
           "ours with OMP_WAIT_POLICY=PASSIVE"))


# ----------------------------------------------------------------------------- checks
def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, 0], b[:, 0])
    y1 = np.maximum(a[:, 1], b[:, 1])
    x2 = np.minimum(a[:, 2], b[:, 2])
    y2 = np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def frame_hashes(frames) -> list[str]:
    return [hashlib.sha1(np.ascontiguousarray(f).tobytes()).hexdigest() for f in frames]


# ----------------------------------------------------------------------------- main
def fingerprint_cost(clip_seconds: float, n_frames: int, detector, embedder,
                     n_crops: int = 60) -> dict:
    """Time :func:`~deepmetric.features.cache.content_fingerprint` over every FF++ clip and
    every DFDC crop, against the extraction time of one item measured in the same run.

    ``clip_seconds``: ours' mean extraction time per FF++ clip (``n_frames`` frames) from
    the timed rounds. The DFDC crops' extraction time per item is measured here on the first
    ``n_crops`` crops (fresh cache, one frame each). Each set is fingerprinted twice with the
    in-process memo cleared: pass 1 reads the files as the page cache holds them, pass 2
    from a warm page cache.
    """
    import pandas as pd

    from deepmetric.datasets.items import validate_manifest
    from deepmetric.features import cache as cache_mod
    from deepmetric.features.extract import Extractor

    dfdc_root = shared_dir() / "data" / "dfdc-faces"
    crops = pd.read_csv(dfdc_root / "labels.csv", dtype=str)
    crops["path"] = [str(dfdc_root / p) for p in crops["path"]]
    sample = validate_manifest(crops[["path", "label"]].iloc[:n_crops].assign(
        video_id=lambda d: d["path"]))
    cache_mod._fingerprints.clear()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        Extractor(detector, embedder, n_frames=1, cache_dir=tmp, progress=False).run(sample)
        crop_seconds = (time.perf_counter() - t) / len(sample)
    sets = {"FF++ c23 clips": ([str(ffpp_dir() / p) for p in pd.read_csv(
                ffpp_dir() / "labels.csv", dtype=str)["path"]], clip_seconds,
                f"{n_frames} frames/clip, timed rounds"),
            "DFDC face crops": (list(crops["path"]), crop_seconds,
                                f"1 frame/crop, {len(sample)} crops")}
    rows = []
    for data, (paths, extract_s, how) in sets.items():
        size = sum(os.path.getsize(p) for p in paths)
        with tempfile.TemporaryDirectory() as index:
            # pass 3 hashes and writes the on-disk index (what a shard does); pass 4 is a new
            # process's lookup from it (what the run after a sharded extraction does)
            for pass_, where in (("pass 1", None), ("pass 2 (warm page cache)", None),
                                 ("pass 3 (hash + write the index)", index),
                                 ("pass 4 (new process: from the index)", index)):
                cache_mod._fingerprints.clear()
                cache_mod._indexes.clear()
                t = time.perf_counter()
                for p in paths:
                    cache_mod.content_fingerprint(p, where)
                cache_mod.flush_fingerprints()  # what the process does when it ends
                sec = time.perf_counter() - t
                rows.append({"data": data, "pass": pass_, "items": len(paths),
                             "MB": size / 1e6, "fingerprint s": sec,
                             "MB/s": size / 1e6 / sec,
                             "fingerprint ms/item": 1e3 * sec / len(paths),
                             "extraction ms/item": 1e3 * extract_s,
                             "extraction measured": how,
                             "fingerprint / extraction": sec / len(paths) / extract_s})
        warm, indexed = rows[-3]["fingerprint s"], rows[-1]["fingerprint s"]
        rows[-1]["index lookup / hashing (warm)"] = indexed / warm
    cache_mod._fingerprints.clear()
    cache_mod._indexes.clear()
    return {"rows": rows}


def run(cfg: dict) -> dict:
    import pandas as pd
    import torch

    from deepmetric.features.backbones.facenet import FaceEmbedder
    from deepmetric.features.extract import Extractor
    from deepmetric.video.blazeface import BlazeFaceDetector
    from deepmetric.video.faces import FaceDetector

    device = cfg["device"]
    quick = cfg["quick"]
    extras = bool(cfg.get("extras"))
    n_clips = cfg.get("clips") or (2 if quick else 20)
    n_frames = 3 if quick else 25
    per_round = 1 if quick else 2
    manifest = ffpp_manifest(n_clips)
    sizes = manifest["width"] + "x" + manifest["height"]
    log(f"[extraction] {len(manifest)} clips x {n_frames} frames on {device}; "
        f"resolutions: {sizes.value_counts().to_dict()}")

    variants = {}
    for prec in precisions(device):
        det = FaceDetector(device=device)
        emb = FaceEmbedder(device=device, autocast=(prec == "bf16"))
        variants[prec] = {"detector": det, "embedder": emb, "naive": Naive(device, prec, det),
                          "blazeface": BlazeFaceDetector()}
    # int8 FaceNet (CPU only): a third pipeline, BlazeFace + FaceEmbedder(quantize="int8")
    if "fp32" in variants and not device.startswith("cuda"):
        variants["fp32"]["embedder_int8"] = FaceEmbedder(device=device, quantize="int8")
    timed = {prec: [key for key, (_, emb) in PIPELINES.items() if emb in v]
             for prec, v in variants.items()}

    # Warm-up: build the models and their kernels on a short clip (not timed).
    warm = manifest.iloc[:1]
    for prec, v in variants.items():
        for key in timed[prec]:
            det, emb = PIPELINES[key]
            with tempfile.TemporaryDirectory() as tmp:
                Extractor(v[det], v[emb], n_frames=2, cache_dir=tmp, progress=False).run(warm)
        v["naive"].clip(warm["path"].iloc[0], 2)
    log("[extraction] models loaded and warmed up")

    rounds = [manifest.iloc[i:i + per_round] for i in range(0, len(manifest), per_round)]
    tmp_root = tempfile.TemporaryDirectory(prefix="bench-extract-")
    results = {prec: {who: {} for who in ("naive", *timed[prec])} for prec in variants}
    # Extra variant (not the headline): ours with one intra-op thread, which is faster than
    # two on a 2-core machine shared with other jobs (OpenMP threads wait for each other).
    extra_t1 = (extras and (not quick) and (not device.startswith("cuda"))
                and torch.get_num_threads() > 1)
    times = {f"{who}_{prec}": [] for prec in variants for who in ("naive", *timed[prec])}
    n_faces = {k: 0 for k in times}  # the extras process the same clips as "ours"
    if extra_t1:
        times.update({f"ours_{prec}_threads1": [] for prec in variants})
    # Extra: ours with facenet-pytorch's own cascade (one resize call per candidate box),
    # i.e. without deepmetric.video.mtcnn's batched crops (their gain).
    extra_perbox = extras and not quick
    if extra_perbox:
        times.update({f"ours_{prec}_perbox": [] for prec in variants})
        for v in variants.values():
            d = v["detector"]
            v["perbox"] = FaceDetector(device=device, batched_crops=False)
            v["perbox"]._mtcnn = d.mtcnn  # the same networks
    # Extra: ours with passive OpenMP waiting, in a child process (CPU only, fp32).
    child = None
    if extras and not quick and not device.startswith("cuda"):
        child = PassiveChild(device, len(manifest))
        times["ours_fp32_passive"] = []
    for r, chunk in enumerate(rounds):
        fns = {}
        for prec, v in variants.items():
            def ours(prec=prec, v=v, chunk=chunk, r=r, threads=None, detector="detector",
                     embedder="embedder", keep=None):
                ex = Extractor(v[detector], v[embedder], n_frames=n_frames,
                               cache_dir=Path(tmp_root.name) / f"{prec}-{r}-{threads}-"
                                                                f"{detector}-{embedder}",
                               progress=False)
                prev = torch.get_num_threads()
                if threads:
                    torch.set_num_threads(threads)
                try:
                    rep = ex.run(chunk)
                finally:
                    torch.set_num_threads(prev)
                if rep.n_failed:
                    raise RuntimeError(f"extraction failed: {rep.failures}")
                sync(device)
                if keep:  # a headline pipeline: its features go to the checks
                    for path in chunk["path"]:
                        results[prec][keep][path] = ex.cache.load(path)

            def naive(prec=prec, v=v, chunk=chunk):
                for path in chunk["path"]:
                    results[prec]["naive"][path] = v["naive"].clip(path, n_frames)

            fns[f"naive_{prec}"] = naive
            for key in timed[prec]:
                det, emb = PIPELINES[key]
                fns[f"{key}_{prec}"] = (lambda ours=ours, det=det, emb=emb, key=key: ours(
                    detector=det, embedder=emb, keep=key))
            if extra_t1:
                fns[f"ours_{prec}_threads1"] = (lambda ours=ours: ours(threads=1))
            if extra_perbox:
                fns[f"ours_{prec}_perbox"] = (lambda ours=ours: ours(detector="perbox"))
        if child is not None:
            fns["ours_fp32_passive"] = (lambda chunk=chunk, r=r: child.run(
                list(chunk["path"]), n_frames, str(Path(tmp_root.name) / f"passive-{r}")))
        # rotate which pipeline goes first from round to round
        names = list(fns)
        names = names[r % len(names):] + names[:r % len(names)]
        t = interleave({k: fns[k] for k in names}, 1)
        for k, v in t.items():
            times[k].append(v[0])
        for prec in variants:
            for path in chunk["path"]:
                for who in ("naive", *timed[prec]):
                    n_faces[f"{who}_{prec}"] += int(results[prec][who][path]["found"].sum())
                # keep only what the checks need
                fr = results[prec]["naive"][path].pop("frames")
                results[prec]["naive"][path]["hashes"] = frame_hashes(fr)
        log(f"[extraction] round {r + 1}/{len(rounds)}: "
            + ", ".join(f"{k} {times[k][-1]:.1f} s" for k in times))
    tmp_root.cleanup()
    if child is not None:
        child.close()

    # --------------------------------------------------------------- checks (untimed)
    from deepmetric.video.frames import read_frames

    checks = {}
    for prec, v in variants.items():
        ious, corner, only_ours, only_naive, emb_diff, cos = [], [], 0, 0, [], []
        worst = []
        same_frames = total_frames = 0
        for path in manifest["path"]:
            o, nv = results[prec]["ours"][path], results[prec]["naive"][path]
            both = o["found"] & nv["found"]
            only_ours += int((o["found"] & ~nv["found"]).sum())
            only_naive += int((~o["found"] & nv["found"]).sum())
            if both.any():
                iu = iou(o["box"][both], nv["boxes"][both])
                ious.extend(iu.tolist())
                for fi, v_ in zip(o["frame_index"][both], iu):
                    if v_ <= 0.9:
                        worst.append({"clip": Path(path).name, "frame": int(fi),
                                      "iou": round(float(v_), 3)})
                corner.extend(np.abs(o["box"][both] - nv["boxes"][both]).max(1).tolist())
                cos.extend(np.sum(o["embedding"][both] * nv["embedding"][both], 1).tolist())
            if nv["found"].any():  # same crops through both embedders
                e = v["embedder"].embed(nv["crops"][nv["found"]])["embedding"]
                emb_diff.append(float(np.abs(e - nv["embedding"][nv["found"]]).max()))
            if prec == "fp32":
                h = frame_hashes(read_frames(path, n_frames).images)
                same_frames += sum(a == b for a, b in zip(h, nv["hashes"]))
                total_frames += max(len(h), len(nv["hashes"]))
        ious = np.asarray(ious)
        b_ious, b_found = [], 0
        for path in manifest["path"]:
            o, nv = results[prec]["ours_blazeface"][path], results[prec]["naive"][path]
            both = o["found"] & nv["found"]
            b_found += int(o["found"].sum())
            if both.any():
                b_ious.extend(iou(o["box"][both], nv["boxes"][both]).tolist())
        b_ious = np.asarray(b_ious)
        # int8 against float FaceNet on the same BlazeFace crops (same frames, same boxes)
        cos8 = []
        for path, o8 in results[prec].get("ours_blazeface_int8", {}).items():
            o = results[prec]["ours_blazeface"][path]
            both = o["found"] & o8["found"]
            cos8.extend(np.sum(o["embedding"][both] * o8["embedding"][both], 1).tolist())
        tol = 1e-3 if prec == "fp32" else 5e-2
        checks[prec] = {
            "frames_identical": f"{same_frames}/{total_frames}" if prec == "fp32" else "n/a",
            "matched_frames": int(ious.size), "only_ours": only_ours, "only_naive": only_naive,
            "iou_min": float(ious.min()) if ious.size else float("nan"),
            "iou_median": float(np.median(ious)) if ious.size else float("nan"),
            "iou_gt_0.9": f"{int((ious > 0.9).sum())}/{ious.size}",
            "box_corner_diff_px_median": float(np.median(corner)) if corner else float("nan"),
            "box_corner_diff_px_max": float(np.max(corner)) if corner else float("nan"),
            "same_crop_embedding_maxdiff": max(emb_diff) if emb_diff else float("nan"),
            "embedding_tolerance": tol,
            "cosine_ours_vs_naive_median": float(np.median(cos)) if cos else float("nan"),
            "iou_le_0.9_frames": worst,
            "boxes_ok": bool(ious.size and (ious > 0.9).all()),
            "blazeface_faces": b_found,
            "blazeface_iou_vs_naive_median": (float(np.median(b_ious)) if b_ious.size
                                              else float("nan")),
            "blazeface_iou_vs_naive_min": float(b_ious.min()) if b_ious.size else float("nan"),
            "embeddings_ok": bool(emb_diff and max(emb_diff) < tol),
            "int8_cosine_vs_float_median": float(np.median(cos8)) if cos8 else float("nan"),
            "int8_cosine_vs_float_min": float(np.min(cos8)) if cos8 else float("nan"),
        }

    # --------------------------------------------------------------- stage breakdown
    bd = None
    if not quick:
        prof_clips = manifest.iloc[:2]
        log(f"[extraction] stage breakdown on {len(prof_clips)} clip(s)")
        v = variants["fp32"]
        bd = breakdown(prof_clips, n_frames, v["detector"], v["embedder"], v["naive"],
                       v["blazeface"], v.get("embedder_int8"))

    v = variants["fp32"]
    fp = fingerprint_cost(sum(times["ours_fp32"]) / len(manifest), n_frames, v["detector"],
                          v["embedder"], n_crops=10 if quick else 60)

    # --------------------------------------------------------------- report
    rows, summary = [], []
    for prec in variants:
        tn, to = times[f"naive_{prec}"], times[f"ours_{prec}"]
        ratios = paired_ratios(tn, to)
        for who, ts in (("naive", tn), ("ours", to)):
            tot = sum(ts)
            rows.append({"precision": prec, "pipeline": who, "clips": len(manifest),
                         "faces": n_faces[f"{who}_{prec}"], "seconds": tot,
                         "clips/s": len(manifest) / tot,
                         "faces/s": n_faces[f"{who}_{prec}"] / tot,
                         "speed-up (median of rounds)": median(ratios) if who == "ours" else 1.0})
        summary.append({"benchmark": NAME, "metric": f"clips/s ours (MTCNN) / naive ({prec})",
                        "ratio": median(ratios), "goal": f">= {GOAL}x",
                        "met": median(ratios) >= GOAL,
                        "rounds": [round(x, 3) for x in ratios]})
        for key, pipeline, metric in (
                ("ours_blazeface", "ours, BlazeFaceDetector", "ours (BlazeFace)"),
                ("ours_blazeface_int8", "ours, BlazeFaceDetector + int8 FaceNet",
                 "ours (BlazeFace, int8 FaceNet)")):
            tb = times.get(f"{key}_{prec}")
            if tb is None:
                continue
            rb = paired_ratios(tn, tb)
            rows.append({"precision": prec, "pipeline": pipeline,
                         "clips": len(manifest), "faces": n_faces[f"{key}_{prec}"],
                         "seconds": sum(tb), "clips/s": len(manifest) / sum(tb),
                         "faces/s": n_faces[f"{key}_{prec}"] / sum(tb),
                         "speed-up (median of rounds)": median(rb)})
            summary.append({"benchmark": NAME, "metric": f"clips/s {metric} / naive ({prec})",
                            "ratio": median(rb), "goal": f">= {GOAL_BLAZEFACE}x",
                            "met": median(rb) >= GOAL_BLAZEFACE,
                            "rounds": [round(x, 3) for x in rb]})
        for suffix, pipeline, metric in EXTRAS:
            tx = times.get(f"ours_{prec}_{suffix}")
            if tx is None:
                continue
            rx = paired_ratios(tn, tx)
            rows.append({"precision": prec, "pipeline": pipeline, "clips": len(manifest),
                         "faces": n_faces[f"ours_{prec}"], "seconds": sum(tx),
                         "clips/s": len(manifest) / sum(tx),
                         "faces/s": n_faces[f"ours_{prec}"] / sum(tx),
                         "speed-up (median of rounds)": median(rx)})
            summary.append({"benchmark": NAME,
                            "metric": f"clips/s {metric} / naive ({prec}) [extra]",
                            "ratio": median(rx), "goal": "(report)", "met": None,
                            "rounds": [round(x, 3) for x in rx]})
    check_rows = [{"precision": p, **{k: c[k] for k in (
        "frames_identical", "matched_frames", "only_ours", "only_naive", "iou_min",
        "iou_median", "iou_gt_0.9", "box_corner_diff_px_median", "box_corner_diff_px_max",
        "same_crop_embedding_maxdiff", "cosine_ours_vs_naive_median", "blazeface_faces",
        "blazeface_iou_vs_naive_median", "blazeface_iou_vs_naive_min",
        "int8_cosine_vs_float_median", "int8_cosine_vs_float_min")}}
        for p, c in checks.items()]
    tables = [
        table(rows, title=f"Extraction: {len(manifest)} FF++ clips x {n_frames} frames, "
                          f"{len(rounds)} interleaved rounds, {device}, "
                          f"torch threads={torch.get_num_threads()}"),
        table(check_rows, title="Same faces? (boxes on frames both found; embeddings of the "
                                "same naive crops through both embedders)"),
    ]
    tables.append(table(fp["rows"], title="Content fingerprint (BLAKE2b of every byte, "
                                          "cache key) vs extraction, per item, this run"))
    summary += [{"benchmark": NAME, "metric": f"fingerprint / extraction time per item "
                                              f"({r['data']}, {r['pass']}) [extra]",
                 "ratio": r["fingerprint / extraction"], "goal": "(report)", "met": None}
                for r in fp["rows"]]
    summary += [{"benchmark": NAME, "metric": f"fingerprint from the on-disk index / hashing "
                                              f"(warm page cache), {r['data']} [extra]",
                 "ratio": r["index lookup / hashing (warm)"], "goal": "(report)", "met": None}
                for r in fp["rows"] if "index lookup / hashing (warm)" in r]
    for p_, c in checks.items():
        if c["iou_le_0.9_frames"]:
            tables.append(f"{p_}: matched frames with IoU <= 0.9: {c['iou_le_0.9_frames']}\n")
    if bd is not None:
        tot_o = sum(bd["ours"].values()) or 1.0
        tot_n = sum(bd["naive"].values()) or 1.0
        bd_rows = ([{"pipeline": "ours", "stage": k, "seconds": s, "share": s / tot_o}
                    for k, s in bd["ours"].items()]
                   + [{"pipeline": "naive", "stage": k, "seconds": s, "share": s / tot_n}
                      for k, s in bd["naive"].items()])
        tot_b = sum(bd["blazeface"].values()) or 1.0
        bd_rows += [{"pipeline": "ours, BlazeFace", "stage": k, "seconds": s,
                     "share": s / tot_b} for k, s in bd["blazeface"].items()]
        if bd["blazeface_int8"]:
            tot_8 = sum(bd["blazeface_int8"].values()) or 1.0
            bd_rows += [{"pipeline": "ours, BlazeFace + int8 FaceNet", "stage": k,
                         "seconds": s, "share": s / tot_8}
                        for k, s in bd["blazeface_int8"].items()]
        det_o = bd["ours"]["detect (batched MTCNN, max_side)"] or 1.0
        det_n = bd["naive"]["detect (MTCNN per frame, full res)"] or 1.0
        split_rows = [{"MTCNN part": k, "ours s": so[0], "ours calls": so[1],
                       "ours share of detect": so[0] / det_o,
                       "naive s": sn[0], "naive calls": sn[1],
                       "naive share of detect": sn[0] / det_n}
                      for k in bd["mtcnn_split_ours"]
                      for so, sn in [(bd["mtcnn_split_ours"][k], bd["mtcnn_split_naive"][k])]]
        tables += [
            table(bd_rows, title=f"Where the time goes (sequential stages, "
                                 f"{len(bd['clips'])} clip(s), {bd['n_faces'][0]}/"
                                 f"{bd['n_faces'][1]} faces ours/naive)"),
            table(split_rows, title="Inside MTCNN (cProfile cumulative s)"),
        ]
    return {"name": NAME, "device": device, "n_clips": len(manifest), "n_frames": n_frames,
            "clips": list(manifest["video_id"]), "rounds": len(rounds),
            "times_s": times, "n_faces": n_faces, "rows": rows, "checks": checks,
            "breakdown": bd, "fingerprint": fp, "summary": summary, "tables": tables,
            "resolutions": pd.Series(sizes).value_counts().to_dict()}

