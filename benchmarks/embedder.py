"""Embedder: ``FaceEmbedder.embed`` vs the best plain-torch setting for the same model.

Both start from the same uint8 (N, 160, 160, 3) RGB crops and end with L2-normalised
float32 NumPy embeddings (standardisation ``(x - 127.5) / 128`` included on both sides).
Plain torch is swept over batch size, memory format (contiguous / channels_last), grad mode
(``no_grad`` / ``inference_mode``) and intra-op threads (plus bf16 autocast on CUDA); the
fastest configuration is then re-measured against ``FaceEmbedder`` (its default batch
size, library defaults for threads) in interleaved repetitions.

FLOPs per face come from ``torch.utils.flop_counter.FlopCounterMode`` (one forward pass).
"""

from __future__ import annotations

import itertools
import time
from contextlib import nullcontext

import numpy as np

from benchmarks.common import interleave, log, median, paired_ratios, sync, table

NAME = "embedder"
GOAL = 0.9


def _load(device: str, channels_last: bool):
    import torch

    from deepmetric.features.backbones.weights import load_facenet

    m = load_facenet().to(device).eval()
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m


def flops_per_face(model, device: str) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, 160, 160, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(x)
    return float(fc.get_total_flops())


def make_plain(model, crops: np.ndarray, device: str, batch: int, channels_last: bool,
               mode: str, threads: int, bf16: bool):
    """A closure embedding all ``crops`` with plain torch in the given configuration."""
    import torch
    import torch.nn.functional as F

    grad = torch.inference_mode if mode == "inference_mode" else torch.no_grad
    mf = torch.channels_last if channels_last else torch.contiguous_format

    def fn():
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            out = []
            amp = (torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext())
            with grad(), amp:
                for i in range(0, len(crops), batch):
                    x = torch.from_numpy(crops[i:i + batch]).to(device)
                    x = ((x.permute(0, 3, 1, 2).float() - 127.5) / 128.0)
                    x = x.contiguous(memory_format=mf)
                    e = F.normalize(model(x).float(), p=2, dim=1)
                    out.append(e.cpu().numpy())
            sync(device)
            return np.concatenate(out)
        finally:
            torch.set_num_threads(prev)
    return fn


def run(cfg: dict) -> dict:
    import os

    import torch

    from deepmetric.features.backbones.facenet import FaceEmbedder

    device = cfg["device"]
    quick = cfg["quick"]
    cuda = device.startswith("cuda")
    reps = cfg.get("reps") or (3 if quick else 5)
    n_faces = (8 if quick else 128) * (8 if cuda else 1)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(n_faces, 160, 160, 3), dtype=np.uint8)
    default_threads = torch.get_num_threads()

    models = {False: _load(device, False), True: _load(device, True)}
    gflop = flops_per_face(models[False], device) / 1e9
    log(f"[embedder] FlopCounterMode: {gflop:.3f} GFLOP per 160x160 face "
        f"({gflop / 2:.3f} GMAC)")

    # -------------------------------------------------------------- sweep (plain torch)
    def measure(conf, faces: int) -> float:
        """Best of two timed passes over ``faces`` crops, after a one-batch warm-up."""
        sub = crops[:faces]
        args = (models[conf["channels_last"]], device, conf["batch"], conf["channels_last"],
                conf["mode"], conf["threads"], conf["bf16"])
        make_plain(args[0], sub[:conf["batch"]], *args[1:])()  # oneDNN primitives, caches
        fn = make_plain(args[0], sub, *args[1:])
        best = float("inf")
        for _ in range(1 if quick else 2):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return len(sub) / best

    sweep_faces = 8 if quick else 64
    sweep_rows = []
    base = {"batch": 64, "channels_last": True, "mode": "inference_mode",
            "threads": default_threads, "bf16": False}
    batches = ([8] if quick else [1, 8, 16, 32, 64, 128]) + ([256] if cuda else [])
    log(f"[embedder] sweep A: batch sizes {batches}")
    for b in batches:
        conf = dict(base, batch=b)
        faces = min(8, sweep_faces) if (b == 1 and not cuda) else max(b, sweep_faces)
        fps = measure(conf, faces)
        sweep_rows.append({**conf, "faces/s": fps})
        log(f"  {conf} -> {fps:.2f} faces/s")
    best_batch = max(sweep_rows, key=lambda r: r["faces/s"])["batch"]
    thread_opts = (sorted({1, default_threads, os.cpu_count() or 1}) if not cuda
                   else [default_threads])
    log(f"[embedder] sweep B at batch {best_batch}: memory format x grad mode x threads "
        f"{thread_opts}" + (" x bf16" if cuda else ""))
    modes = ["inference_mode"] if quick else ["no_grad", "inference_mode"]
    for cl, mode, th, bf in itertools.product([False, True], modes, thread_opts,
                                              [False, True] if cuda else [False]):
        conf = {"batch": best_batch, "channels_last": cl, "mode": mode, "threads": th,
                "bf16": bf}
        if any(all(r[k] == conf[k] for k in conf) for r in sweep_rows):
            continue
        fps = measure(conf, max(best_batch, sweep_faces))
        sweep_rows.append({**conf, "faces/s": fps})
        log(f"  {conf} -> {fps:.2f} faces/s")

    # -------------------------------------------------------------- ours vs best, interleaved
    keys = ("batch", "channels_last", "mode", "threads", "bf16")
    variants = {}
    for bf16 in ([False, True] if cuda else [False]):
        emb = FaceEmbedder(device=device, autocast=bf16)
        emb.embed(crops[:emb.batch_size])  # load + warm-up
        variants[bf16] = emb
    plain_best = {}
    for bf16 in variants:
        cands = [r for r in sweep_rows if r["bf16"] == bf16] or sweep_rows
        c = max(cands, key=lambda r: r["faces/s"])
        plain_best[bf16] = {k: c[k] for k in keys}
        log(f"[embedder] best plain torch ({'bf16' if bf16 else 'fp32'}): {plain_best[bf16]}")

    def ours_fn(emb, threads):
        def fn():
            prev = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                emb.embed(crops)
                sync(device)
            finally:
                torch.set_num_threads(prev)
        return fn

    fns = {}
    for bf16, emb in variants.items():
        tag = "bf16" if bf16 else "fp32"
        pb = plain_best[bf16]
        fns[f"plain_{tag}"] = make_plain(models[pb["channels_last"]], crops, device,
                                         pb["batch"], pb["channels_last"], pb["mode"],
                                         pb["threads"], pb["bf16"])
        fns[f"ours_{tag}"] = ours_fn(emb, default_threads)
        if pb["threads"] != default_threads:
            fns[f"ours_{tag}_threads{pb['threads']}"] = ours_fn(emb, pb["threads"])
    for f in fns.values():
        f()
    times = interleave(fns, reps, log=log)

    # same numbers?
    ref = fns["plain_fp32"]()
    mine = variants[False].embed(crops)["embedding"]
    maxdiff = float(np.abs(ref - mine).max())

    rows, summary = [], []
    for bf16, emb in variants.items():
        tag = "bf16" if bf16 else "fp32"
        pb = plain_best[bf16]
        tp = times[f"plain_{tag}"]
        entries = [("plain torch (best of sweep)", f"plain_{tag}", pb)]
        entries.append(("FaceEmbedder.embed (library default threads)", f"ours_{tag}",
                        dict(pb, batch=emb.batch_size, channels_last=emb.channels_last,
                             mode="inference_mode", threads=default_threads)))
        if f"ours_{tag}_threads{pb['threads']}" in times:
            entries.append((f"FaceEmbedder.embed, torch.set_num_threads({pb['threads']})",
                            f"ours_{tag}_threads{pb['threads']}",
                            dict(pb, batch=emb.batch_size, channels_last=emb.channels_last,
                                 mode="inference_mode")))
        for label, key, conf in entries:
            ratios = paired_ratios(tp, times[key])
            fps = n_faces / median(times[key])
            rows.append({"precision": tag, "variant": label,
                         "setting": f"b={conf['batch']} "
                                    f"{'channels_last' if conf['channels_last'] else 'contig'} "
                                    f"{conf['mode']} threads={conf['threads']}",
                         "faces/s": fps, "GFLOP/s": fps * gflop,
                         "ratio vs plain (median of reps)": median(ratios)})
            if key != f"plain_{tag}":
                summary.append({"benchmark": NAME,
                                "metric": f"faces/s {label} / best plain ({tag})",
                                "ratio": median(ratios), "goal": f">= {GOAL}x",
                                "met": median(ratios) >= GOAL,
                                "reps": [round(x, 3) for x in ratios]})
    sweep_tbl = [{"batch": r["batch"], "memory": "channels_last" if r["channels_last"]
                  else "contig", "mode": r["mode"], "threads": r["threads"],
                  "bf16": r["bf16"], "faces/s": r["faces/s"], "GFLOP/s": r["faces/s"] * gflop}
                 for r in sweep_rows]
    tables = [
        f"FlopCounterMode: {gflop:.3f} GFLOP per face ({gflop / 2:.3f} GMAC), "
        f"Inception-ResNet-v1 at 160x160\n",
        table(sweep_tbl, title=f"Plain-torch sweep ({sweep_faces} faces, best of "
                               f"{1 if quick else 2} timed pass(es) after a warm-up batch; "
                               f"batch 1: 8 faces)"),
        table(rows, title=f"FaceEmbedder vs best plain torch: {n_faces} faces, {reps} "
                          f"interleaved reps, {device}; max |diff| of embeddings = "
                          f"{maxdiff:.2e}"),
    ]
    return {"name": NAME, "device": device, "gflop_per_face": gflop, "n_faces": n_faces,
            "reps": reps, "sweep": sweep_rows, "best_plain": plain_best, "times_s": times,
            "rows": rows, "embedding_maxdiff_vs_plain": maxdiff, "summary": summary,
            "tables": tables}
