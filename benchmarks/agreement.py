"""Detector agreement: BlazeFace (``detector=blazeface``) against MTCNN on the same images.

FF++: every clip, 5 evenly spaced frames each; DFDC: the first 400 dev face crops of
``dfdc-faces/labels.csv`` (hash-ordered, a fair sample). Reported per data set: images where
each detector keeps a face, the IoU of the two boxes where both do, and the distance of each
of the 5 landmarks (MTCNN's order: eyes, nose, mouth corners) in units of MTCNN's eye
distance. No timing (``extraction`` times the detectors).
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import dfdc_faces_manifest, ffpp_manifest, log, table
from benchmarks.extraction import iou

NAME = "agreement"
POINTS = ("eye (image left)", "eye (image right)", "nose", "mouth left", "mouth right")


def compare(name: str, batches, mtcnn, blazeface) -> dict:
    """Agreement of the two detectors over an iterable of frame lists."""
    n = found_m = found_b = 0
    ious, kp = [], []
    for images in batches:
        rm, rb = mtcnn.detect(images), blazeface.detect(images)
        n += len(images)
        found_m += int(rm.found.sum())
        found_b += int(rb.found.sum())
        both = rm.found & rb.found
        if both.any():
            ious += iou(rm.boxes[both], rb.boxes[both]).tolist()
            eye = np.linalg.norm(rm.landmarks[both, 1] - rm.landmarks[both, 0], axis=1)
            kp.append(np.linalg.norm(rm.landmarks[both] - rb.landmarks[both], axis=2)
                      / eye[:, None])
    ious = np.asarray(ious)
    kp = np.concatenate(kp) if kp else np.zeros((0, 5))
    row = {"data": name, "images": n, "MTCNN found": found_m, "BlazeFace found": found_b,
           "both": int(ious.size), "IoU median": float(np.median(ious)),
           "IoU 10th pct": float(np.percentile(ious, 10)), "IoU min": float(ious.min()),
           "IoU > 0.5": float(np.mean(ious > 0.5))}
    kp_row = {"data": name, **{p: float(np.median(kp[:, j])) for j, p in enumerate(POINTS)}}
    return {"row": row, "keypoints": kp_row}


def run(cfg: dict) -> dict:
    from deepmetric.video.blazeface import BlazeFaceDetector
    from deepmetric.video.faces import FaceDetector
    from deepmetric.video.frames import read_frames, read_image

    quick = cfg["quick"]
    clips = ffpp_manifest(cfg.get("clips") or (20 if quick else None))
    crops = dfdc_faces_manifest(80 if quick else 400)
    mtcnn, blazeface = FaceDetector(device=cfg["device"]), BlazeFaceDetector()
    log(f"[agreement] {len(clips)} FF++ clips x 5 frames, {len(crops)} DFDC crops")
    out = [compare(f"FF++ c23, {len(clips)} clips x 5 frames",
                   (read_frames(p, 5).images for p in clips["path"]), mtcnn, blazeface),
           compare(f"DFDC dev crops, first {len(crops)}",
                   ([read_image(p)] for p in crops["path"]), mtcnn, blazeface)]
    rows, kps = [o["row"] for o in out], [o["keypoints"] for o in out]
    tables = [table(rows, title="BlazeFace vs MTCNN: faces kept and box IoU on the same images"),
              table(kps, title="Landmark distance BlazeFace - MTCNN, median, in MTCNN eye "
                               "distances")]
    summary = [{"benchmark": NAME, "metric": f"median box IoU BlazeFace vs MTCNN ({r['data']})",
                "ratio": r["IoU median"], "goal": "(report)", "met": None} for r in rows]
    return {"name": NAME, "rows": rows, "keypoints": kps, "tables": tables,
            "summary": summary}
