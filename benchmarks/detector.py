"""Detector variants (opt-in, ``--only detector``): evidence for tuning ``FaceDetector``.

Not part of the default run. The frames of a few FF++ clips are decoded once; then
``FaceDetector.detect`` runs on each clip's 25 frames under several settings that do not
change what it computes, in interleaved rounds (order rotated each round):

* ``default``: ``FaceDetector()`` as the library builds it;
* ``threads=1``: the same detector under ``torch.set_num_threads(1)``;
* ``NumPy batch (before)``: the frames handed to MTCNN as one stacked NumPy array, as
  before the default switched to an NCHW-laid-out tensor (``deepmetric.video.faces._nchw_backed``);
* ``per-box crops (before)``: ``FaceDetector(batched_crops=False)``, facenet-pytorch's own
  ``MTCNN.detect``, which resizes each candidate box for R-/O-Net in its own call (the default
  resizes them all at once, exactly, ``deepmetric.video.mtcnn``);
* ``contiguous nets``: ``FaceDetector(channels_last=False)``, P-/R-/O-Net weights left
  contiguous (the default converts them to ``torch.channels_last``);
* ``batch_size=8``: MTCNN calls over 8 frames instead of 32;
* ``max_side=480``: detection on a smaller copy — this one *changes the output* (faces
  found, boxes: IoU against the default is shown).

Ratios are ``t(default) / t(variant)`` per round (median shown); boxes of all but the last
must stay equal (max abs difference reported).

A micro-benchmark then times what facenet-pytorch's ``detect_face`` does once per
candidate box before R-Net and O-Net (``imresample``: ``interpolate(mode="area")`` of one
crop) against ``cv2.resize(INTER_AREA)`` of the same crop, against one batched
``torchvision.ops.roi_align`` call for all boxes, and against ``deepmetric.video.mtcnn``'s exact
batched resize (summed-area table of the frame, then one gather for all boxes).
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import ffpp_manifest, interleave, log, median, paired_ratios, table

NAME = "detector"


def run(cfg: dict) -> dict:
    import torch

    from deepmetric.video.faces import FaceDetector
    from deepmetric.video.frames import read_frames

    device = cfg["device"]
    quick = cfg["quick"]
    n_clips = cfg.get("clips") or (1 if quick else 4)
    reps = cfg.get("reps") or (2 if quick else 3)
    manifest = ffpp_manifest(n_clips)
    clips = [read_frames(p, 5 if quick else 25).images for p in manifest["path"]]
    log(f"[detector] {len(clips)} clips decoded: "
        f"{[f'{c[0].shape[1]}x{c[0].shape[0]}' for c in clips]}")

    import deepmetric.video.faces as faces_mod

    default = FaceDetector(device=device)
    variants = {  # name: (detector, torch threads, hand MTCNN a plain NumPy batch)
        "default": (default, None, False),
        "threads=1": (default, 1, False),
        "NumPy batch (before)": (default, None, True),
        "per-box crops (before)": (FaceDetector(device=device, batched_crops=False), None,
                                   False),
        "contiguous nets": (FaceDetector(device=device, channels_last=False), None, False),
        "batch_size=8": (FaceDetector(device=device, batch_size=8), None, False),
        "max_side=480 (changes output)": (FaceDetector(device=device, max_side=480), None,
                                          False)}
    outs: dict[str, list] = {}
    nchw_backed = faces_mod._nchw_backed

    def make(key):
        det, threads, numpy_batch = variants[key]

        def fn():
            prev = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            if numpy_batch:
                faces_mod._nchw_backed = np.stack
            try:
                outs[key] = [det.detect(c) for c in clips]
            finally:
                torch.set_num_threads(prev)
                faces_mod._nchw_backed = nchw_backed
        return fn

    fns = {k: make(k) for k in variants}
    for f in fns.values():  # warm-up
        f()
    times = interleave(fns, reps, log=log)
    rows, summary = [], []
    n_frames = sum(len(c) for c in clips)
    from benchmarks.extraction import iou

    for k, ts in times.items():
        r = paired_ratios(times["default"], ts)
        a = np.concatenate([f.boxes for f in outs[k]])
        b = np.concatenate([f.boxes for f in outs["default"]])
        both = ~np.isnan(a[:, 0]) & ~np.isnan(b[:, 0])
        diff = float(np.abs(a[both] - b[both]).max()) if both.any() else float("nan")
        ious = iou(a[both], b[both]) if both.any() else np.array([np.nan])
        rows.append({"variant": k, "median s": median(ts), "frames/s": n_frames / median(ts),
                     "speed-up vs default": median(r),
                     "faces found": f"{int((~np.isnan(a[:, 0])).sum())}/{len(a)}",
                     "max |box diff| px": diff, "min IoU vs default": float(ious.min())})
        if k != "default":
            summary.append({"benchmark": NAME, "metric": f"detect {k} / default",
                            "ratio": median(r), "goal": "(evidence)", "met": None,
                            "reps": [round(x, 3) for x in r]})
    micro = _resample_micro(clips, default, reps)
    tables = [table(rows, title=f"FaceDetector.detect variants: {len(clips)} clips, "
                                f"{n_frames} frames, {reps} interleaved reps, {device}"),
              table(micro, title="Per-box crop resampling before R-Net (24x24) / O-Net (48x48): "
                                 "one call per box as facenet-pytorch does vs alternatives")]
    return {"name": NAME, "times_s": times, "rows": rows, "micro": micro,
            "summary": summary, "tables": tables}


def _resample_micro(clips, det, reps: int) -> list[dict]:
    """Time the per-box crop resampling of detect_face against two alternatives."""

    import cv2
    import torch
    from facenet_pytorch.models.utils.detect_face import imresample
    from torchvision.ops import roi_align

    from deepmetric.video.mtcnn import resample_boxes, summed_area_table

    frame = clips[0][0]
    h, w = frame.shape[:2]
    img = torch.as_tensor(frame).permute(2, 0, 1).unsqueeze(0).float()
    rng = np.random.default_rng(0)
    rows = []
    for out, n_boxes in ((24, 400), (48, 60)):
        side = rng.integers(30, 160, n_boxes)
        x0 = rng.integers(0, w - 160, n_boxes)
        y0 = rng.integers(0, h - 160, n_boxes)
        boxes = [(int(x), int(y), int(x + s_), int(y + s_)) for x, y, s_ in zip(x0, y0, side)]

        def per_box_torch():
            return torch.cat([imresample(img[:, :, b[1]:b[3], b[0]:b[2]], (out, out))
                              for b in boxes])

        def per_box_cv2():
            return np.stack([cv2.resize(frame[b[1]:b[3], b[0]:b[2]], (out, out),
                                        interpolation=cv2.INTER_AREA) for b in boxes])

        rois = torch.tensor([[0, *b] for b in boxes], dtype=torch.float32)

        def batched_roi_align():
            return roi_align(img, rois, (out, out), spatial_scale=1.0, sampling_ratio=2,
                             aligned=True)

        frame8 = torch.as_tensor(frame)[None]
        y0 = torch.tensor([b[1] for b in boxes])
        x0 = torch.tensor([b[0] for b in boxes])
        hk = torch.tensor([b[3] - b[1] for b in boxes])
        wk = torch.tensor([b[2] - b[0] for b in boxes])
        inds = torch.zeros(n_boxes, dtype=torch.int64)

        def batched_exact():
            return resample_boxes(summed_area_table(frame8), inds, y0, x0, hk, wk, out)

        fns = {"imresample per box (facenet-pytorch)": per_box_torch,
               "cv2.resize INTER_AREA per box": per_box_cv2,
               "roi_align, one batched call": batched_roi_align,
               "summed-area table + one gather (deepmetric.video.mtcnn)": batched_exact}
        for f in fns.values():
            f()
        t = interleave(fns, max(3, reps))
        ref = per_box_torch()
        cv = torch.as_tensor(per_box_cv2()).permute(0, 3, 1, 2).float()
        ra = batched_roi_align()
        errs = {"imresample per box (facenet-pytorch)": 0.0,
                "cv2.resize INTER_AREA per box": float((cv - ref).abs().mean()),
                "roi_align, one batched call": float((ra - ref).abs().mean()),
                "summed-area table + one gather (deepmetric.video.mtcnn)":
                    float((batched_exact() - ref).abs().mean())}
        base = median(t["imresample per box (facenet-pytorch)"])
        for k, ts in t.items():
            rows.append({"crop": f"{out}x{out}", "boxes": n_boxes, "method": k,
                         "ms per box": median(ts) / n_boxes * 1e3,
                         "speed-up": base / median(ts),
                         "mean |diff| vs imresample (0-255)": errs[k]})
    return rows
