"""Decoding the sampled frames: ``read_frames`` (OpenCV, what deepmetric ships) against a
PyAV reader that tells FFmpeg to skip the frames no other frame references.

Opt-in (``--only decoding``) and needs PyAV, which deepmetric does not depend on::

    pip install av   # 18.1.0 on Python 3.11 (19.x needs 3.12)
    python -m benchmarks.run --only decoding

The PyAV reader (:func:`read_skipping`) sets ``codec_context.skip_frame`` per packet:
``NONREF`` for packets whose frame is not sampled, ``DEFAULT`` for those that are, and stops
after the last sampled frame. A non-reference frame is never needed to decode another, so
the sampled frames should be bit-identical; the benchmark checks that against
``read_frames`` (indices, pixels) on every clip before it times anything. Frame index =
the packet's rank in presentation order (from one demux-only pass that keeps only the
timestamps), sampled from the container's frame count as ``read_frames`` does. Clips where
that mapping cannot be made exactly (no frame count, timestamps missing or repeated) are
reported, not timed. No seek over long gaps and no pixel budget: a measurement, not a
reader for arbitrary files.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import ffpp_manifest, interleave, log, median, shared_dir, table

NAME = "decoding"


def read_skipping(path, n: int) -> tuple[list[np.ndarray], np.ndarray] | None:
    """The sampled RGB frames and their indices, or None when the clip cannot be mapped."""
    import av

    from deepmetric.video.frames import sample_indices

    with av.open(str(path)) as box:
        stream = box.streams.video[0]
        shown = [p.pts for p in box.demux(stream) if p.size and not p.is_discard]
    total = int(stream.frames or 0)
    if total != len(shown) or None in shown or len(set(shown)) != len(shown):
        return None
    order = sorted(shown)
    want = {order[i]: i for i in sample_indices(total, n).tolist()}
    out: dict[int, np.ndarray] = {}
    with av.open(str(path)) as box:
        stream = box.streams.video[0]
        ctx, mode = stream.codec_context, None
        ctx.thread_type = "AUTO"

        def take(frames) -> None:
            for frame in frames:
                i = want.get(frame.pts)
                if i is not None and i not in out:  # BICUBIC: OpenCV's swscale flag
                    out[i] = frame.to_ndarray(format="rgb24", interpolation="BICUBIC")

        for packet in box.demux(stream):
            wanted = "DEFAULT" if packet.pts in want else "NONREF"
            if wanted != mode:
                ctx.skip_frame = mode = wanted
            take(ctx.decode(packet))
            if len(out) == len(want):
                break
        else:
            take(ctx.decode(None))  # flush the reorder buffer
    if len(out) != len(want):
        return None
    idx = sorted(out)
    return [out[i] for i in idx], np.asarray(idx, dtype=np.int64)


def run(cfg: dict) -> dict:
    try:
        import av  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("the decoding benchmark needs PyAV: pip install av") from exc
    from deepmetric.video.frames import read_frames

    n_frames = 25
    clips = list(ffpp_manifest(cfg.get("clips") or (4 if cfg["quick"] else 16))["path"])
    clips += sorted(str(p) for p in (shared_dir() / "data" / "fixtures" / "dfdc-sample"
                                     / "train_sample_videos").glob("*.mp4"))
    reps = cfg.get("reps") or (1 if cfg["quick"] else 3)
    rows, timed = [], []
    for path in clips:
        ref, got = read_frames(path, n_frames), read_skipping(path, n_frames)
        same = got is not None and np.array_equal(got[1], ref.indices) and all(
            np.array_equal(a, b) for a, b in zip(got[0], ref.images, strict=True))
        rows.append({"clip": path.split("/")[-1], "frames": ref.n_total,
                     "mapped": got is not None, "identical": same})
        if same:
            timed.append(path)
    log(f"[decoding] {len(timed)}/{len(clips)} clips identical; timing {reps} rounds")
    times = interleave({
        "read_frames (OpenCV)": lambda: [read_frames(p, n_frames) for p in timed],
        "PyAV, skipping non-reference frames": lambda: [read_skipping(p, n_frames)
                                                        for p in timed]}, reps, log)
    base = median(times["read_frames (OpenCV)"])
    speed = [{"reader": k, "clips": len(timed), "seconds (median)": median(v),
              "speed-up": base / median(v)} for k, v in times.items()]
    ratio = speed[1]["speed-up"]
    return {"name": NAME, "rows": rows, "speed": speed, "times": times,
            "tables": [table(rows, title=f"Sampled frames ({n_frames} per clip): PyAV "
                                         "skipping vs read_frames"),
                       table(speed, title="Decoding the sampled frames of every identical clip "
                                          f"(median of {reps} interleaved rounds)")],
            "summary": [{"benchmark": NAME, "metric": "PyAV skip-NONREF vs read_frames",
                         "ratio": ratio, "goal": "(report)", "met": None},
                        {"benchmark": NAME, "metric": "clips bit-identical",
                         "ratio": len(timed) / len(clips), "goal": "1.0",
                         "met": len(timed) == len(clips)}]}
