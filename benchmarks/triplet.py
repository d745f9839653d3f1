"""Triplet training: deepmetric's O(B²) semi-hard loss vs PML miner + loss, batch 512.

Each (variant, size, repetition) runs in a fresh subprocess (``python -m
benchmarks.triplet`` reading a JSON payload on stdin) that builds the synthetic data, the
``TripletProjector`` trunk (``hidden=(256, 256, 128)``, ``out_dim=64``), Adam and the
class-balanced sampler exactly as ``TripletProjector._train`` does (same private helpers),
then times training batches: ``SemiHardTripletLoss`` (``miner="semihard"``) or PML's
``TripletMarginMiner("semihard") + TripletMarginLoss`` (``miner="pml"``).

Time per epoch = median batch time x batches per epoch (``ceil(n / 512)``); every batch of
the epoch is timed for 3,550 embeddings, only the first ``cap`` batches for 35,500 (the
epoch time is extrapolated, and labelled so).

Peak memory (CPU): the subprocess resets its ``VmHWM`` (Linux ``/proc/self/clear_refs``)
after setup and reports ``VmHWM - VmRSS(after setup)``, i.e. the extra resident memory the
training batches needed at their peak (``ru_maxrss`` minus the post-setup RSS where
``clear_refs`` is unavailable). On CUDA: ``torch.cuda.max_memory_allocated`` minus the
allocation after setup.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

NAME = "triplet"
GOAL_TIME = 5.0
GOAL_MEM = 10.0
BATCH = 512


def synthetic(n: int, dim: int = 512, seed: int = 0, n_ids: int = 40,
              class_sep: float = 0.35):
    """Two classes of L2-normalised clustered embeddings (float32 (n, dim), int64 (n,)).

    Like FF++ face embeddings: ``n_ids`` identity clusters shared by both classes (a fake
    keeps the identity of its source), a weaker real/fake direction of norm ``class_sep``
    and per-sample noise. Same-identity pairs of opposite classes are close and
    same-class pairs of different identities far, so semi-hard triplets stay plentiful
    during training instead of vanishing after a few steps.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    ident = rng.integers(0, n_ids, n)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    centres = unit(rng.normal(size=(2, dim))) * class_sep / 2
    offsets = unit(rng.normal(size=(n_ids, dim)))
    noise = rng.normal(size=(n, dim)) * 0.6 / math.sqrt(dim)
    x = unit(centres[y] + offsets[ident] + noise)
    return x.astype(np.float32), y.astype(np.int64)


# ----------------------------------------------------------------------------- worker
def worker(p: dict) -> dict:
    import gc
    import time
    from contextlib import nullcontext

    import torch

    from benchmarks.common import peak_rss_kb, proc_status_kb, reset_peak_rss
    from deepmetric.learn.mining import make_loss
    from deepmetric.learn.network import BalancedBatches, build_trunk, embed_normalized

    device = torch.device(p["device"])
    cuda = device.type == "cuda"
    X, y = synthetic(p["n"], seed=p["seed"])
    X = (X - X.mean(0)) / X.std(0)  # TripletProjector(standardize=True)
    torch.manual_seed(p["seed"])
    rng = np.random.default_rng(p["seed"])
    xt = torch.tensor(X, device=device)
    yt = torch.tensor(y, device=device)
    net = build_trunk(X.shape[1], [256, 256, 128], 64, 0.0, False).to(device)
    loss_fn = make_loss(p["miner"], 0.2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sampler = BalancedBatches(y, BATCH // 2, BATCH, rng)
    per_epoch = max(1, math.ceil(p["n"] / sampler.batch_len))
    n_batches = min(per_epoch, p["cap"] or per_epoch)
    batches = [torch.as_tensor(sampler.batch(), device=device) for _ in range(n_batches)]
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if p["precision"] == "bf16"
           else nullcontext())
    del X
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = proc_status_kb("VmRSS")
    hwm_reset = reset_peak_rss()
    if not hwm_reset:
        import resource

        base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # conservative
    times, first_loss, n_trip = [], None, []
    for idx in batches:
        t0 = time.perf_counter()
        with amp:
            emb = embed_normalized(net, xt[idx])
            loss = loss_fn(emb, yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lv = float(loss.detach())  # syncs on CUDA
        times.append(time.perf_counter() - t0)
        if first_loss is None:
            first_loss = lv
        n_trip.append(int(loss_fn.last_n_triplets))
    peak = ((torch.cuda.max_memory_allocated() - base) / 2**20 if cuda
            else (peak_rss_kb() - base_rss) / 1024)
    return {"miner": p["miner"], "n": p["n"], "precision": p["precision"],
            "batches_per_epoch": per_epoch, "batches_timed": n_batches,
            "batch_times_s": times, "first_loss": first_loss, "n_triplets": n_trip,
            "peak_extra_mib": peak, "base_rss_mib": base_rss / 1024,
            "hwm_reset": hwm_reset}


# ----------------------------------------------------------------------------- main
def run(cfg: dict) -> dict:
    from benchmarks.common import log, median, precisions, run_json_subprocess, table

    device = cfg["device"]
    quick = cfg["quick"]
    reps = cfg.get("reps") or (1 if quick else 3)
    sizes = [(3550, 1 if quick else None)] + ([] if quick else [(35500, 5)])
    miners = ["semihard", "pml"]
    out: dict = {}
    for n, cap in sizes:
        for prec in precisions(device):
            res = {m: [] for m in miners}
            for r in range(reps):
                order = miners if r % 2 == 0 else miners[::-1]
                for m in order:
                    payload = {"n": n, "miner": m, "cap": cap, "seed": 0, "device": device,
                               "precision": prec}
                    o = run_json_subprocess("benchmarks.triplet", payload)
                    res[m].append(o)
                    log(f"[triplet] n={n} {prec} rep {r + 1}/{reps} {m}: median batch "
                        f"{median(o['batch_times_s']):.3f} s, peak +{o['peak_extra_mib']:.1f}"
                        f" MiB, first loss {o['first_loss']:.7f}")
            out[(n, prec)] = res

    rows, summary, detail = [], [], []
    for (n, prec), res in out.items():
        epoch, peak, loss = {}, {}, {}
        for m in miners:
            runs = res[m]
            per_b = [median(o["batch_times_s"]) for o in runs]
            epoch[m] = [pb * runs[0]["batches_per_epoch"] for pb in per_b]
            peak[m] = [o["peak_extra_mib"] for o in runs]
            loss[m] = runs[0]["first_loss"]
            timed = runs[0]["batches_timed"]
            per_epoch = runs[0]["batches_per_epoch"]
            rows.append({"n": n, "precision": prec, "loss": m,
                         "epoch s": median(epoch[m]),
                         "how": ("measured" if timed == per_epoch
                                 else f"extrapolated {timed}->{per_epoch} batches"),
                         "batch s": median(per_b), "peak extra MiB": median(peak[m]),
                         "first-batch loss": f"{loss[m]:.7f}",
                         "triplets/batch": int(median(runs[0]["n_triplets"]))})
        t_ratio = [p / s for p, s in zip(epoch["pml"], epoch["semihard"])]
        m_ratio = median(peak["pml"]) / max(median(peak["semihard"]), 1e-9)
        dloss = abs(loss["pml"] - loss["semihard"])
        detail.append({"n": n, "precision": prec, "speed-up": median(t_ratio),
                       "memory ratio": m_ratio, "|first loss diff|": dloss})
        summary.append({"benchmark": NAME, "metric": f"epoch time PML / ours (n={n}, {prec})",
                        "ratio": median(t_ratio), "goal": f">= {GOAL_TIME}x",
                        "met": median(t_ratio) >= GOAL_TIME,
                        "reps": [round(x, 2) for x in t_ratio]})
        summary.append({"benchmark": NAME, "metric": f"peak memory PML / ours (n={n}, {prec})",
                        "ratio": m_ratio, "goal": f">= {GOAL_MEM}x", "met": m_ratio >= GOAL_MEM})
        summary.append({"benchmark": NAME, "metric": f"first-batch loss equal (n={n}, {prec})",
                        "ratio": dloss, "goal": "|diff| < 1e-5", "met": dloss < 1e-5})
    mem_how = ("CUDA max_memory_allocated" if device.startswith("cuda")
               else "VmHWM after reset - VmRSS after setup, fresh subprocess each")
    tables = [
        table(rows, title=f"Triplet training, batch {BATCH}, synthetic 512-d, {reps} "
                          f"interleaved reps/variant, {device}; peak = {mem_how}"),
        table(detail, title="PML / ours"),
    ]
    return {"name": NAME, "device": device, "reps": reps,
            "runs": {f"{n}-{prec}": res for (n, prec), res in out.items()}, "rows": rows,
            "ratios": detail, "summary": summary, "tables": tables}


if __name__ == "__main__":
    from benchmarks.common import setup_env

    setup_env()
    print(json.dumps(worker(json.loads(sys.stdin.read()))))
