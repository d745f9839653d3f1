"""Shared helpers: locations, environment, interleaved timing, tables, RSS, devices."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def setup_env() -> None:
    """Offline weights reused from the repo's git-ignored test cache (like the tests)."""
    os.environ.setdefault("DEEPMETRIC_OFFLINE", "1")
    os.environ.setdefault("DEEPMETRIC_CACHE", str(REPO / ".cache" / "test"))


def shared_dir() -> Path:
    """``$DEEPMETRIC_SHARED`` or ``../shared`` beside the repository."""
    return Path(os.environ.get("DEEPMETRIC_SHARED", REPO.parent / "shared"))


def ffpp_dir() -> Path:
    """The FF++ c23 clips; exits with a clear message when the shared data is absent."""
    d = shared_dir() / "data" / "ffpp-c23"
    if not (d / "labels.csv").is_file():
        sys.exit(f"benchmarks: FF++ clips not found at {d} (labels.csv missing). "
                 f"Put the shared data beside the repository ({REPO.parent / 'shared'}) "
                 f"or set DEEPMETRIC_SHARED=/path/to/shared.")
    return d


def dfdc_faces_manifest(n: int | None = None):
    """The first ``n`` DFDC dev face crops of ``dfdc-faces/labels.csv`` (hash-ordered, so a
    fair sample) as a manifest; a clear error when the shared data is absent."""
    from deepmetric.datasets.manifest import load

    labels = shared_dir() / "data" / "dfdc-faces" / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"{labels}: the DFDC dev face crops are not there")
    return load(labels, head=n)


def ffpp_manifest(n: int | None = None):
    """FF++ clips as a validated manifest; ``n`` clips spread evenly over labels.csv."""
    import numpy as np
    import pandas as pd

    from deepmetric.datasets.items import validate_manifest

    root = ffpp_dir()
    df = pd.read_csv(root / "labels.csv", dtype=str)
    if n is not None and n < len(df):
        pick = np.floor((np.arange(n) + 0.5) * len(df) / n).astype(int)
        df = df.iloc[pick]
    df = df.assign(video_id=df["path"])
    cols = ["path", "label", "video_id", "group", "method", "width", "height"]
    return validate_manifest(df[cols].reset_index(drop=True), root=root)


# ----------------------------------------------------------------------------- devices
def resolve_device(requested: str) -> str | None:
    """``auto`` → cuda when present else cpu; ``cuda`` without a GPU → None (caller skips)."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        return None
    return requested


def precisions(device: str) -> list[str]:
    """fp32 everywhere; bf16 autocast as well on CUDA."""
    return ["fp32", "bf16"] if device.startswith("cuda") else ["fp32"]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- timing
def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def interleave(fns: dict[str, Callable[[], object]], reps: int,
               log: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Run every variant ``reps`` times, rotating the order each round (ABC, BCA, CAB...).

    Returns the wall times (s) per variant; compare their medians (or per-round ratios).
    """
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
            if log:
                log(f"  rep {r + 1}/{reps} {k}: {times[k][-1]:.3f} s")
    return times


def paired_ratios(base: Sequence[float], cand: Sequence[float]) -> list[float]:
    """Per-round speed-ups ``base / cand`` (same round = same machine conditions)."""
    return [b / c for b, c in zip(base, cand)]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- tables
def fmt(v) -> str:
    if isinstance(v, float):
        if v != v:
            return "nan"
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 0.01:
            return f"{v:.3f}"
        return f"{v:.2e}"
    return str(v)


def table(rows: list[dict], cols: Sequence[str] | None = None, title: str = "") -> str:
    if not rows:
        return f"{title}\n(no rows)\n"
    cols = list(cols or rows[0].keys())
    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    line = "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(x.ljust(w) for x, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join(([f"**{title}**", ""] if title else []) + [line, sep, *body]) + "\n"


# ----------------------------------------------------------------------------- memory
def proc_status_kb(field: str, pid: int | str = "self") -> int:
    """A ``VmRSS``/``VmHWM``-style field of /proc/<pid>/status, in kB (-1 if unavailable)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux ``clear_refs``); False if not."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_kb() -> int:
    """VmHWM (resettable) or, without /proc, ``ru_maxrss``."""
    v = proc_status_kb("VmHWM")
    if v < 0:
        import resource

        v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return v


def run_json_subprocess(module: str, payload: dict, timeout: float | None = None) -> dict:
    """Run ``python -m <module>`` with ``payload`` as JSON on stdin.

    Its last stdout line is JSON, returned parsed.
    """
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", module], input=json.dumps(payload),
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------- metadata
def machine_info() -> dict:
    import torch

    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "deepmetric",
                                "experiments/conf"], cwd=REPO, capture_output=True,
                               text=True).stdout.split("\n")
        dirty = [ln.strip() for ln in dirty if ln.strip()]
    except OSError:
        commit, dirty = "", []
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       "")
    except OSError:
        pass
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "host_cpus": os.cpu_count(),
            "cpu": cpu, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "loadavg_at_start": [round(x, 2) for x in load],
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "git_commit": commit, "git_uncommitted_library_files": dirty}
