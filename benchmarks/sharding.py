"""Sharded extraction on a SLURM cluster: items/s with 1 and 2 single-threaded jobs, and the
SLURM path's overhead against one in-process extraction of the same items.

    python -m benchmarks.run --only sharding [--clips 300]

Workload: the first ``--clips`` (default 300) DFDC face crops of ``../shared/data/dfdc-faces``
(one image each: MTCNN + FaceNet with the default blocks). Every variant is the user's command,
``python -m experiments.extract data=dfdc_faces data.head=N extract.threads=1 ...``, into
its own fresh cache:

- ``none``: ``extract.executor=none`` (one process, the baseline);
- ``slurm x1`` / ``slurm x2``: ``extract.executor=slurm extract.jobs=1|2`` (a job array, one
  CPU per job: ``DEEPMETRIC_SLURM_CPUS=1``).

Throughput is extracted items over the driver's wall time (submission, queueing, each job's
Python start-up and model loading included: what a user waits for). The per-shard
extraction time inside the jobs is reported as well, and the bytes per cached item (for
sizing a cache). Uses the cluster ``$SLURM_CONF`` points at when ``sinfo`` answers, else
starts a private one-node cluster (:mod:`benchmarks.slurm_cluster`, needs root and
``slurm-wlm``/``munge``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, log, shared_dir, table

NAME = "sharding"
GOAL = 1.7  # 2 jobs vs 1 job on 2 cores


def _cluster(tmp: Path):
    """(env, cluster or None): an answering cluster from $SLURM_CONF, or a private one."""
    if os.environ.get("SLURM_CONF") and subprocess.run(
            ["sinfo", "-h"], capture_output=True).returncode == 0:
        return dict(os.environ), None
    from benchmarks.slurm_cluster import SlurmCluster

    cluster = SlurmCluster(tmp / "slurm").start()
    return dict(cluster.env), cluster


def _variant(name: str, n: int, tmp: Path, env: dict, *extra: str) -> dict:
    run = tmp / name.replace(" ", "_")
    args = [sys.executable, "-m", "experiments.extract", "data=dfdc_faces", f"data.head={n}",
            "extract.threads=1", "extractor.progress=false", "extract.poll_s=2",
            f"extractor.cache_dir={run / 'cache'}", f"extract.folder={run / 'shards'}",
            f"hydra.run.dir={run / 'run'}", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    rep = json.loads((run / "run" / "extraction.json").read_text())
    files = list((run / "cache").rglob("*.npz"))
    nbytes = sum(p.stat().st_size for p in files)
    shard_s = [s.get("seconds") for s in rep["shards"]]
    log(f"[sharding] {name}: {rep['n_extracted']} items in {rep['seconds']:.1f} s "
        f"(command {wall:.1f} s), shards {shard_s}")
    return {"variant": name, "jobs": rep["jobs"], "n_extracted": rep["n_extracted"],
            "driver_s": rep["seconds"], "command_s": round(wall, 2),
            "items_per_s": rep["n_extracted"] / rep["seconds"],
            "shard_extract_s": shard_s,
            "shard_items_per_s": [s["n_extracted"] / s["seconds"] for s in rep["shards"]
                                  if s.get("seconds")],
            "cache_bytes": nbytes, "bytes_per_item": nbytes / max(len(files), 1),
            "n_files": len(files)}


def run(cfg: dict) -> dict:
    n = int(cfg.get("clips") or (40 if cfg.get("quick") else 300))
    root = shared_dir() / "data" / "dfdc-faces"
    if not (root / "labels.csv").is_file():
        sys.exit(f"benchmarks: DFDC crops not found at {root}")
    tmp = Path(tempfile.mkdtemp(prefix="dm-sharding-"))
    env_base, cluster = _cluster(tmp)
    try:
        env = {**env_base, "DFDC_FACES_ROOT": str(root), "OMP_NUM_THREADS": "1",
               "DEEPMETRIC_SLURM_CPUS": "1", "DEEPMETRIC_OFFLINE": "1",
               "DEEPMETRIC_CACHE": os.environ.get("DEEPMETRIC_CACHE",
                                                  str(REPO / ".cache" / "test"))}
        env.setdefault("DEEPMETRIC_SLURM_GPUS", "null")
        env.setdefault("DEEPMETRIC_SLURM_MEM_GB", "2")
        rows = [_variant("none", n, tmp, env),
                _variant("slurm x1", n, tmp, env, "extract.executor=slurm", "extract.jobs=1"),
                _variant("slurm x2", n, tmp, env, "extract.executor=slurm", "extract.jobs=2")]
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    by = {r["variant"]: r for r in rows}
    speedup = by["slurm x2"]["items_per_s"] / by["slurm x1"]["items_per_s"]
    overhead = by["slurm x1"]["driver_s"] / by["none"]["driver_s"]
    summary = [
        {"benchmark": NAME, "metric": "items/s, 2 SLURM jobs vs 1 (1 thread each)",
         "ratio": speedup, "goal": f">= {GOAL}", "met": speedup >= GOAL},
        {"benchmark": NAME, "metric": "wall time, 1 SLURM job vs in-process (same items)",
         "ratio": overhead, "goal": "reported", "met": True},
    ]
    cols = ["variant", "jobs", "n_extracted", "driver_s", "items_per_s", "shard_extract_s",
            "bytes_per_item"]
    tables = [table([{c: r[c] for c in cols} for r in rows],
                    title=f"Sharded extraction of {n} DFDC crops (1 torch thread per job)"),
              table(summary)]
    return {"name": NAME, "n_items": n, "rows": rows, "speedup_2_vs_1": speedup,
            "slurm_overhead_ratio": overhead,
            "slurm_overhead_s": by["slurm x1"]["driver_s"] - by["none"]["driver_s"],
            "private_cluster": cluster is not None, "summary": summary, "tables": tables}
