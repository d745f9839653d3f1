"""Memory: RSS of a full FF++ extraction stays bounded (does not grow with the clip count).

A fresh subprocess (``python -m benchmarks.memory``, JSON payload on stdin) loads the
models, then runs ``Extractor(...).run`` on all 142 clips (25 frames each) with a fresh
cache directory, while a thread samples its RSS (psutil, else ``/proc/self/status``) every
``interval`` s together with the number of clips finished (``*.npz`` files in the cache).

Reported: RSS after model load, peak RSS while the first 20 clips ran vs over all clips,
RSS after each finished clip and its trend (least-squares slope, MiB per 100 clips, over
the clips after the 20th), the trend of each clip's own peak (the highest sample while it
ran) over the same clips, and ``VmHWM`` at the end. The goals: the peak stays under 2 GiB,
and neither trend grows with the clip count (|slope| < 50 MiB per 100 clips).

``peak(all) / peak(first 20)`` is reported too, with no goal: the peak of one clip depends
on its frame size and on what the prefetch thread holds at that moment, so the same clips
peak differently from pass to pass (``--reps``). The clip with the largest frames is moved
to the front (the others keep their order), so that the first 20 hold the worst frame size.

``--crops N`` (default 400 with the full 142 clips) adds the first N DFDC dev face crops
(``dfdc-faces/labels.csv``, hash-ordered), spread evenly between the clips, so that the
run covers more than 500 *distinct* items of both kinds (clips and single images) and the
mix is the same all along (a trend then measures growth, not a change of item kind).
``--detector blazeface`` extracts with :class:`~deepmetric.video.blazeface.BlazeFaceDetector`
instead of MTCNN; ``--quantize int8`` embeds with ``FaceEmbedder(quantize="int8")``.

``--reps K`` runs the same clips K times, each pass a fresh ``Extractor`` with its own
fresh cache directory, in the same process: with the content fixed, whatever changes from
pass to pass grows with the clip count (``--clips 20 --reps 5``: 100 extractions of the
same 20 clips). Its goals are ratios against the first pass, in the same run: the median
over a pass's clips of their own peak, and of the RSS after each clip, last pass / first
pass <= 1.1. Medians, because single samples swing by a few hundred MiB with what the
prefetch thread holds at the moment.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time

import numpy as np

NAME = "memory"
FIRST = 20


def _rss_kb() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss // 1024
    except ImportError:
        from benchmarks.common import proc_status_kb

        return proc_status_kb("VmRSS")


def items(n_clips: int, n_crops: int):
    """The manifest: ``n_clips`` FF++ clips (the one with the largest frames first) with the
    first ``n_crops`` DFDC dev crops spread evenly between them; ``width``/``height`` of a
    crop are its original frame's."""
    import pandas as pd

    from benchmarks.common import dfdc_faces_manifest, ffpp_manifest

    manifest = ffpp_manifest(n_clips)
    area = (manifest["width"].astype(int) * manifest["height"].astype(int)).to_numpy()
    big = int(np.argmax(area))  # the largest frames first: the baseline sees the worst case
    manifest = manifest.iloc[[big] + [i for i in range(len(manifest)) if i != big]]
    manifest = manifest.reset_index(drop=True)
    if not n_crops:
        return manifest
    crops = dfdc_faces_manifest(n_crops)
    crops = crops.assign(width=crops["original_width"].astype(str),
                         height=crops["original_height"].astype(str))
    # position of each row: clip k at k / n_clips, crop j at (j + 0.5) / n_crops
    order = np.argsort(np.concatenate([np.arange(len(manifest)) / len(manifest),
                                       (np.arange(len(crops)) + 0.5) / len(crops)]),
                       kind="stable")
    both = pd.concat([manifest, crops[[c for c in manifest.columns if c in crops.columns]]],
                     ignore_index=True)
    return both.iloc[order].reset_index(drop=True)


def make_detector(name: str, device: str):
    """The detector of the run, its models loaded."""
    if name == "blazeface":
        from deepmetric.video.blazeface import BlazeFaceDetector

        det = BlazeFaceDetector()
        _ = det.interpreter
        return det
    from deepmetric.video.faces import FaceDetector

    det = FaceDetector(device=device)
    _ = det.mtcnn
    return det


def worker(p: dict) -> dict:
    from benchmarks.common import peak_rss_kb
    from deepmetric.features.backbones.facenet import FaceEmbedder
    from deepmetric.features.extract import Extractor

    manifest = items(p["clips"], p.get("crops", 0))
    rss_start = _rss_kb()
    det = make_detector(p.get("detector", "mtcnn"), p["device"])
    emb = FaceEmbedder(device=p["device"], quantize=p.get("quantize"))
    _ = emb.model
    rss_models = _rss_kb()
    passes = int(p.get("passes", 1))
    cache_dirs = []
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    def n_done() -> int:
        n = 0
        for d in list(cache_dirs):
            try:
                n += sum(1 for e in os.scandir(d) if e.name.endswith(".npz"))
            except FileNotFoundError:
                pass
        return n

    def sample():
        while True:
            samples.append((time.perf_counter() - t0, _rss_kb(), n_done()))
            if stop.wait(p["interval"]):
                break

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    reports = []
    for k in range(passes):
        ex = Extractor(det, emb, n_frames=p["n_frames"],
                       cache_dir=os.path.join(p["cache_dir"], f"pass{k}"), progress=False)
        cache_dirs.append(ex.cache.dir)
        reports.append(ex.run(manifest).to_dict())
    stop.set()
    th.join()
    samples.append((time.perf_counter() - t0, _rss_kb(), n_done()))
    rep = {key: sum(r[key] for r in reports) for key in ("n_faces", "n_frames", "n_failed")}
    sizes = [f"{w}x{h}" for w, h in zip(manifest["width"], manifest["height"])]
    return {"clips": len(manifest) * passes, "passes": passes, "rss_start_kb": rss_start,
            "rss_models_kb": rss_models, "samples": samples, "vmhwm_kb": peak_rss_kb(),
            "report": rep, "seconds": time.perf_counter() - t0, "sizes": sizes * passes}


def run(cfg: dict) -> dict:
    from benchmarks.common import log, run_json_subprocess, table

    n_clips = cfg.get("clips") or 142
    passes = cfg.get("reps") or 1
    n_crops = cfg.get("crops")
    if n_crops is None:
        n_crops = 400 if n_clips >= 142 and passes == 1 else 0
    detector = cfg.get("detector") or "mtcnn"
    quantize = cfg.get("quantize")
    label = detector + (" + int8 FaceNet" if quantize else "")
    n_frames = 25
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        log(f"[memory] extracting {n_clips} clips x {n_frames} frames and {n_crops} DFDC "
            f"crops with {label}, {passes} pass(es), in a subprocess (takes a while on 2 "
            f"shared cores)")
        o = run_json_subprocess("benchmarks.memory",
                                {"clips": n_clips, "crops": n_crops, "detector": detector,
                                 "quantize": quantize,
                                 "passes": passes, "n_frames": n_frames,
                                 "cache_dir": tmp,
                                 "device": cfg["device"], "interval": 0.25})
    s = np.asarray(o["samples"], dtype=np.float64)  # t, rss_kb, n_done
    mib = s[:, 1] / 1024
    done = s[:, 2].astype(int)
    first = min(FIRST, o["clips"])
    peak_first = float(mib[done < first].max()) if (done < first).any() else float("nan")
    peak_all = float(mib.max())
    # RSS right after each clip finished: the first sample where n_done reached k
    after = {}
    for k in range(1, o["clips"] + 1):
        idx = np.flatnonzero(done >= k)
        if idx.size:
            after[k] = float(mib[idx[0]])
    ks = np.array([k for k in after if k > first], dtype=float)
    slope = (float(np.polyfit(ks, [after[int(k)] for k in ks], 1)[0]) * 100
             if ks.size >= 3 else float("nan"))
    # each clip's own peak: the highest sample while clip k ran (k - 1 clips done)
    own_peak = {k: float(mib[done == k - 1].max()) for k in range(1, o["clips"] + 1)
                if (done == k - 1).any()}
    peaks = {k: v for k, v in own_peak.items() if k > first}
    peak_slope = (float(np.polyfit(list(peaks), list(peaks.values()), 1)[0]) * 100
                  if len(peaks) >= 3 else float("nan"))

    def largest(sizes):
        return max(sizes, key=lambda z: int(z.split("x")[0]) * int(z.split("x")[1]))

    ratio = peak_all / peak_first
    rows = [{"clips": f"1-{first}", "largest frame": largest(o["sizes"][:first]),
             "peak RSS MiB": peak_first,
             "RSS after last clip MiB": after.get(first, float("nan"))},
            {"clips": f"1-{o['clips']}", "largest frame": largest(o["sizes"]),
             "peak RSS MiB": peak_all,
             "RSS after last clip MiB": after.get(o["clips"], float("nan"))}]
    rep = o["report"]
    tables = [table(rows, title=(
        f"Memory ({label}): {o['clips']} extractions ({n_clips} FF++ clips x {n_frames} "
        f"frames + {n_crops} DFDC crops, x {passes} pass(es)), in a fresh "
        f"process ({o['seconds']:.0f} s, {rep['n_faces']}/{rep['n_frames']} faces, "
        f"{rep['n_failed']} failed); RSS after imports {o['rss_start_kb'] / 1024:.0f} MiB, "
        f"after model load {o['rss_models_kb'] / 1024:.0f} MiB, VmHWM "
        f"{o['vmhwm_kb'] / 1024:.0f} MiB; trend of RSS after each clip beyond the "
        f"{first}th: {slope:+.1f} MiB per 100 clips, of each clip's own peak: "
        f"{peak_slope:+.1f} MiB per 100 clips"))]
    vmhwm = o["vmhwm_kb"] / 1024
    per_pass = []
    if o["passes"] > 1:  # the same clips again: medians per pass, last / first
        n = o["clips"] // o["passes"]
        for j in range(o["passes"]):
            ks = range(j * n + 1, (j + 1) * n + 1)
            own = [own_peak[k] for k in ks if k in own_peak]
            per_pass.append({"pass": j + 1, "median clip peak MiB": float(np.median(own)),
                             "median RSS after clip MiB": float(np.median(
                                 [after[k] for k in ks if k in after]))})
        tables.append(table(per_pass, title="Per pass (the same clips each pass)"))
    summary = [{"benchmark": NAME, "metric": f"peak RSS (VmHWM) of {o['clips']} items, MiB",
                "ratio": vmhwm, "goal": "< 2048", "met": vmhwm < 2048},
               {"benchmark": NAME, "metric": "RSS trend after item 20 (MiB / 100 items)",
                "ratio": slope, "goal": "~0 (|x| < 50)", "met": abs(slope) < 50},
               {"benchmark": NAME, "metric": "per-item peak trend after item 20 (MiB / 100 items)",
                "ratio": peak_slope, "goal": "~0 (|x| < 50)", "met": abs(peak_slope) < 50},
               {"benchmark": NAME, "metric": f"peak RSS all {o['clips']} clips / first {first}",
                "ratio": ratio, "goal": "(report)", "met": None}]
    for key in ("median clip peak MiB", "median RSS after clip MiB") if per_pass else ():
        r = per_pass[-1][key] / per_pass[0][key]
        summary.append({"benchmark": NAME, "metric": f"{key[:-4]}, pass {len(per_pass)} / pass 1",
                        "ratio": r, "goal": "<= 1.1 (no growth)", "met": r <= 1.1})
    return {"name": NAME, "pipeline": label, "worker": o, "rss_after_clip_mib": after,
            "peak_first_mib": peak_first,
            "peak_all_mib": peak_all, "slope_mib_per_100_clips": slope,
            "clip_peak_mib": peaks, "peak_slope_mib_per_100_clips": peak_slope,
            "per_pass": per_pass, "rows": rows,
            "summary": summary, "tables": tables}


if __name__ == "__main__":
    from benchmarks.common import setup_env

    setup_env()
    print(json.dumps(worker(json.loads(sys.stdin.read()))))
