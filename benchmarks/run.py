"""Entry point: ``python -m benchmarks.run [--only NAME[,NAME]] [--quick] [--out PATH]``.

Benchmarks (in this order): extraction, embedder, triplet, heads, memory. Each prints its
tables and ratios against a baseline measured in the same run; the JSON written to
``--out`` (default ``benchmarks/results/latest.json``) holds every number, and is rewritten
after each benchmark so that a long run keeps what it finished.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import (RESULTS, ffpp_dir, machine_info, resolve_device, setup_env,
                               table)

BENCHMARKS = ("extraction", "embedder", "triplet", "heads", "memory")
QUICK_SKIPS = ("memory",)
# only with --only (sharding: needs SLURM; decoding: needs PyAV)
OPT_IN = ("detector", "agreement", "sharding", "image_batch", "decoding", "quantize")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHMARKS)} "
                                  f"(or the opt-in {', '.join(OPT_IN)})")
    p.add_argument("--quick", action="store_true",
                   help="fewer clips / reps / sizes (about 2 minutes); skips 'memory'")
    p.add_argument("--out", type=Path, default=RESULTS / "latest.json",
                   help="JSON results file (default: benchmarks/results/latest.json)")
    p.add_argument("--merge", action="store_true",
                   help="keep the other benchmarks already in --out (update only those run)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present, else CPU), cpu or cuda[:i]; on CUDA the "
                        "comparisons run in fp32 and with bf16 autocast")
    p.add_argument("--clips", type=int, default=None,
                   help="override the number of FF++ clips (extraction: 20, memory: 142)")
    p.add_argument("--reps", type=int, default=None,
                   help="override the number of interleaved repetitions (memory: passes "
                        "over the same clips, default 1)")
    p.add_argument("--crops", type=int, default=None,
                   help="memory: DFDC dev crops spread between the clips (default 400 with "
                        "the full 142 clips, else 0)")
    p.add_argument("--detector", choices=("mtcnn", "blazeface"), default=None,
                   help="memory: the detector of the extraction (default mtcnn)")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="memory: FaceNet's convolutional blocks in int8 "
                        "(FaceEmbedder(quantize='int8'); default float32)")
    p.add_argument("--extras", action="store_true",
                   help="extraction: also the extra rows (1 torch thread, per-box MTCNN "
                        "cascade, OMP_WAIT_POLICY=PASSIVE child)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads for every benchmark and its subprocesses "
                        "(default: torch's default, i.e. the core count)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_env()
    if args.threads:
        import os

        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS + OPT_IN]
        if unknown:
            print(f"unknown benchmark(s) {unknown}; choose from "
                  f"{', '.join(BENCHMARKS + OPT_IN)}", file=sys.stderr)
            return 2
    else:
        names = [n for n in BENCHMARKS if not (args.quick and n in QUICK_SKIPS)]

    if set(names) & {"extraction", "memory", "detector", "agreement"}:
        ffpp_dir()  # exits with a clear message when ../shared (or $DEEPMETRIC_SHARED) is absent
    device = resolve_device(args.device)
    meta = machine_info()
    meta.update({"argv": sys.argv[1:] if argv is None else list(argv), "quick": args.quick,
                 "device_requested": args.device, "device": device})
    out: dict = {"meta": meta, "benchmarks": {}}
    if args.merge and args.out.is_file():
        old = json.loads(args.out.read_text())
        out["benchmarks"] = old.get("benchmarks", {})
        out["meta_previous"] = old.get("meta")
    if device is None:
        print("no GPU available")
        out["meta"]["skipped"] = "no GPU available"
        _write(args.out, out)
        return 0
    if not device.startswith("cuda"):
        print("no GPU available: running on CPU (fp32)" if args.device == "auto"
              else f"device: {device} (fp32)")

    t_start = time.perf_counter()
    failed: list[str] = []
    cfg = {"device": device, "quick": args.quick, "clips": args.clips, "reps": args.reps,
           "crops": args.crops, "detector": args.detector, "extras": args.extras,
           "quantize": args.quantize}
    for name in names:
        mod = importlib.import_module(f"benchmarks.{name}")
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        load0 = _loadavg()
        try:
            res = mod.run(dict(cfg))
        except Exception as exc:  # noqa: BLE001 — report, keep the other benchmarks
            traceback.print_exc()
            print(f"{name}: FAILED ({type(exc).__name__}: {exc})", flush=True)
            failed.append(name)
            res = {"name": name, "error": f"{type(exc).__name__}: {exc}", "summary": [
                {"benchmark": name, "metric": "run", "ratio": float("nan"),
                 "goal": "completes", "met": False}]}
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        res["loadavg_1min_start_end"] = [load0, _loadavg()]
        res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
        res["argv"] = meta["argv"]
        for t in res.get("tables", []):
            print(t, flush=True)
        out["benchmarks"][name] = res
        _write(args.out, out)
    rows = [{k: s[k] for k in ("benchmark", "metric", "ratio", "goal", "met")}
            for name in BENCHMARKS + OPT_IN if name in out["benchmarks"]
            for s in out["benchmarks"][name].get("summary", [])]
    summary = table(rows, title="Summary (ratios vs the baseline measured in the same run)")
    out["summary_table"] = summary
    out["meta"]["wall_s"] = round(time.perf_counter() - t_start, 1)
    _write(args.out, out)
    print("\n" + summary)
    print(f"wall time: {out['meta']['wall_s']:.0f} s")
    print(f"results: {args.out}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _loadavg() -> float:
    import os

    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_jsonable) + "\n")
    tmp.replace(path)


def _jsonable(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
