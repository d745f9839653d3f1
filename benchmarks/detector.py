"""Detector variants (opt-in, ``--only detector``): evidence for tuning ``FaceDetector``.

Not part of the default run. The frames of a few FF++ clips are decoded once; then
``FaceDetector.detect`` runs on each clip's 25 frames under several settings that do not
change what it computes, in interleaved rounds (order rotated each round):

* ``default``: ``FaceDetector()`` as the library builds it;
* ``threads=1``: the same detector under ``torch.set_num_threads(1)``;
* ``channels_last nets``: P-/R-/O-Net weights converted to ``torch.channels_last``;
* ``batch_size=8``: MTCNN calls over 8 frames instead of 32.

Ratios are ``t(default) / t(variant)`` per round (median shown); boxes must stay equal
(max abs difference reported).
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import ffpp_manifest, interleave, log, median, paired_ratios, table

NAME = "detector"


def run(cfg: dict) -> dict:
    import torch

    from deepmetric.faces import FaceDetector
    from deepmetric.frames import read_frames

    device = cfg["device"]
    quick = cfg["quick"]
    n_clips = cfg.get("clips") or (1 if quick else 4)
    reps = cfg.get("reps") or (2 if quick else 3)
    manifest = ffpp_manifest(n_clips)
    clips = [read_frames(p, 5 if quick else 25).images for p in manifest["path"]]
    log(f"[detector] {len(clips)} clips decoded: "
        f"{[f'{c[0].shape[1]}x{c[0].shape[0]}' for c in clips]}")

    dets = {"default": FaceDetector(device=device),
            "channels_last nets": FaceDetector(device=device),
            "batch_size=8": FaceDetector(device=device, batch_size=8)}
    m = dets["channels_last nets"].mtcnn
    for net in (m.pnet, m.rnet, m.onet):
        net.to(memory_format=torch.channels_last)
    outs: dict[str, list] = {}

    def make(det, threads=None, key=None):
        def fn():
            prev = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            try:
                outs[key] = [det.detect(c).boxes for c in clips]
            finally:
                torch.set_num_threads(prev)
        return fn

    fns = {"default": make(dets["default"], key="default"),
           "threads=1": make(dets["default"], 1, key="threads=1"),
           "channels_last nets": make(dets["channels_last nets"], key="channels_last nets"),
           "batch_size=8": make(dets["batch_size=8"], key="batch_size=8")}
    for f in fns.values():  # warm-up
        f()
    times = interleave(fns, reps, log=log)
    rows, summary = [], []
    n_frames = sum(len(c) for c in clips)
    for k, ts in times.items():
        r = paired_ratios(times["default"], ts)
        diff = max(float(np.nanmax(np.abs(a - b))) if np.isfinite(a).any() else 0.0
                   for a, b in zip(outs[k], outs["default"]))
        rows.append({"variant": k, "median s": median(ts), "frames/s": n_frames / median(ts),
                     "speed-up vs default": median(r), "max |box diff| px": diff})
        if k != "default":
            summary.append({"benchmark": NAME, "metric": f"detect {k} / default",
                            "ratio": median(r), "goal": "(evidence)", "met": None,
                            "reps": [round(x, 3) for x in r]})
    tables = [table(rows, title=f"FaceDetector.detect variants: {len(clips)} clips, "
                                f"{n_frames} frames, {reps} interleaved reps, {device}")]
    return {"name": NAME, "times_s": times, "rows": rows, "summary": summary,
            "tables": tables}
