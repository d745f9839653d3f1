"""Where extraction time goes: the stages of each pipeline run one after the other on the
same clips, and MTCNN's parts under cProfile (the extraction benchmark's breakdown)."""

from __future__ import annotations

import cProfile
import pstats
import time

import numpy as np

from benchmarks.common import sync
from benchmarks.naive import Naive, read_every_frame

__all__ = ["breakdown"]


def _cum(stats: pstats.Stats, file_part: str, func: str, line=None) -> tuple[float, int]:
    """Cumulative seconds and primitive call count of matching functions."""
    tot, calls = 0.0, 0
    for (fname, ln, name), (cc, nc, tt, ct, callers) in stats.stats.items():
        if fname.endswith(file_part) and name == func and (line is None or ln == line):
            tot += ct
            calls += cc
    return tot, calls


def _mtcnn_split(stats: pstats.Stats) -> dict[str, tuple[float, int]]:
    """(seconds, calls) in MTCNN's parts (P/R/O-net forwards, resampling, NMS)."""
    import inspect

    from facenet_pytorch.models import mtcnn as m

    out = {}
    for cls in ("PNet", "RNet", "ONet"):
        line = inspect.getsourcelines(getattr(m, cls).forward)[1]
        out[f"{cls}.forward"] = _cum(stats, "mtcnn.py", "forward", line)
    out["imresample (pyramid levels; facenet-pytorch: + one call per 24/48 box)"] = _cum(
        stats, "detect_face.py", "imresample")
    sat = _cum(stats, "deepmetric/video/mtcnn.py", "summed_area_table")
    boxes = _cum(stats, "deepmetric/video/mtcnn.py", "resample_boxes")
    out["24/48 boxes batched (deepmetric.video.mtcnn: summed-area table + gathers)"] = (
        sat[0] + boxes[0], sat[1] + boxes[1])
    out["batched_nms (torchvision)"] = _cum(stats, "boxes.py", "batched_nms")
    out["batched_nms_numpy (O-net)"] = _cum(stats, "detect_face.py", "batched_nms_numpy")
    out["generateBoundingBox"] = _cum(stats, "detect_face.py", "generateBoundingBox")
    fp_total = _cum(stats, "detect_face.py", "detect_face")
    ours_total = _cum(stats, "deepmetric/video/mtcnn.py", "detect_faces")
    out["cascade total (detect_face / deepmetric.video.mtcnn.detect_faces)"] = (
        fp_total[0] + ours_total[0], fp_total[1] + ours_total[1])
    return out


def breakdown(manifest, n_frames: int, detector, embedder, naive: Naive,
              blazeface=None, embedder_int8=None) -> dict:
    """Stage times (s) of the pipelines on the same clips, sequential, with an MTCNN split."""
    from deepmetric.video.frames import read_frames

    ours = {"decode (grab/seek)": 0.0, "detect (batched MTCNN, max_side)": 0.0,
            "embed (batched)": 0.0}
    blaze = {"decode (grab/seek)": 0.0, "detect (BlazeFace, LiteRT)": 0.0,
             "embed (batched)": 0.0}
    embed_int8 = 0.0  # the int8 row shares the float row's decode and detect
    base = {"decode (read every frame)": 0.0, "detect (MTCNN per frame, full res)": 0.0,
            "crop+embed (one face at a time)": 0.0}
    prof_ours, prof_naive = cProfile.Profile(), cProfile.Profile()
    n_faces = [0, 0]
    for path in manifest["path"]:
        t0 = time.perf_counter()
        fr = read_frames(path, n_frames)
        t1 = time.perf_counter()
        prof_ours.enable()
        faces = detector.detect(fr.images)
        prof_ours.disable()
        t2 = time.perf_counter()
        embedder.embed(faces.crops[faces.found])
        sync(naive.device)
        t3 = time.perf_counter()
        ours["decode (grab/seek)"] += t1 - t0
        ours["detect (batched MTCNN, max_side)"] += t2 - t1
        ours["embed (batched)"] += t3 - t2
        n_faces[0] += int(faces.found.sum())
        if blazeface is not None:
            t0 = time.perf_counter()
            fr = read_frames(path, n_frames)
            t1 = time.perf_counter()
            faces = blazeface.detect(fr.images)
            t2 = time.perf_counter()
            embedder.embed(faces.crops[faces.found])
            sync(naive.device)
            t3 = time.perf_counter()
            for k, dt in zip(blaze, (t1 - t0, t2 - t1, t3 - t2)):
                blaze[k] += dt
            if embedder_int8 is not None:
                t4 = time.perf_counter()
                embedder_int8.embed(faces.crops[faces.found])
                embed_int8 += time.perf_counter() - t4
        # naive, stage by stage (same code as Naive.clip, split for timing)
        import torch
        from facenet_pytorch.models.mtcnn import fixed_image_standardization
        from facenet_pytorch.models.utils.detect_face import extract_face

        t0 = time.perf_counter()
        frames = read_every_frame(path, n_frames)
        base["decode (read every frame)"] += time.perf_counter() - t0
        for frame in frames:
            t0 = time.perf_counter()
            prof_naive.enable()
            b, p = naive.mtcnn.detect(frame)
            prof_naive.disable()
            t1 = time.perf_counter()
            base["detect (MTCNN per frame, full res)"] += t1 - t0
            if b is None or not (p >= naive.min_prob).any():
                continue
            b = b[p >= naive.min_prob]
            k = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
            face = extract_face(frame, b[k], naive.image_size, naive.margin)
            with torch.no_grad(), naive.amp():
                naive.model(fixed_image_standardization(face).unsqueeze(0).to(naive.device))
            sync(naive.device)
            base["crop+embed (one face at a time)"] += time.perf_counter() - t1
            n_faces[1] += 1
    split_ours = _mtcnn_split(pstats.Stats(prof_ours))
    split_naive = _mtcnn_split(pstats.Stats(prof_naive))
    return {"ours": ours, "naive": base, "blazeface": blaze if blazeface else None,
            "blazeface_int8": ({**blaze, "embed (batched)": embed_int8}
                               if blazeface and embedder_int8 else None),
            "mtcnn_split_ours": split_ours,
            "mtcnn_split_naive": split_naive, "n_faces": n_faces,
            "clips": list(manifest["video_id"])}
