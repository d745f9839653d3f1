"""Sharded extraction: one manifest, N disjoint shards, one job each, one merged report.

>>> from deepmetric.features.shard import extract_sharded
>>> out = extract_sharded(extractor, manifest, jobs=8, executor="slurm", folder="run/.extract",
...                       slurm={"partition": "gpu", "cpus_per_task": 8, "mem_gb": 32})
>>> out.report["n_extracted"], out.failed          # merged counts; failed shards
>>> out.raise_for_failures()                       # ShardError naming shard, job id, log

- :func:`shard_rows` splits a manifest deterministically: the distinct media files in
  manifest order are dealt round-robin to the shards, and every row of a file (its
  self-blended copies) goes with it, so the shards are disjoint and cover the manifest.
- Each shard is :meth:`Extractor.run <deepmetric.features.extract.Extractor.run>` over its
  rows (:func:`run_shard`): cached items are skipped, every finished item is written
  atomically to the per-clip cache, and a clip another job holds locked is skipped and
  revisited, never waited on. A shard that dies (cancelled, killed, timed out, node lost)
  loses only the item it was on; the same call again extracts only what is missing, and
  the cache ends with the same files, byte for byte, as one uninterrupted process.
- ``executor="none"`` runs the shards one after another in this process; ``"local"`` as
  child processes and ``"slurm"`` as one SLURM job array, both through submitit
  (:func:`deepmetric.cluster.run_array`; ``pip install 'deepmetric[sweep]'``). Progress
  comes from a small file each shard rewrites after every item
  (``folder/shard-<i>.progress``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from deepmetric.cluster import EXECUTORS, run_array
from deepmetric.features.extract import Extractor
from deepmetric.features.results import ExtractionReport
from deepmetric.storage import atomic_write

__all__ = ["ShardError", "ShardedExtraction", "shard_rows", "shard_manifest", "run_shard",
           "merge_reports", "extract_sharded", "progress_path", "report_path",
           "failure_message"]


class ShardError(RuntimeError):
    """Some shards did not finish; the message names each with its job id, state and log."""


@dataclass
class ShardedExtraction:
    """What :func:`extract_sharded` did.

    Attributes
    ----------
    report : dict
        The merged report (``n_items``, ``n_extracted``, ``n_cached``, ``n_failed``,
        ``failures``, ..., as :meth:`ExtractionReport.to_dict`), plus ``executor``, ``jobs``,
        ``seconds`` (wall time of the whole call), ``items_per_second`` (extracted items over
        that time), ``shards`` (one dict per shard: ``index``, ``n_items``, ``job_id``,
        ``state``, ``stdout``, ``stderr``, ``error`` and its own counts) and
        ``failed_shards`` (their indices).
    failed : list of dict
        The shards that did not finish (the entries of ``report["shards"]``).
    """

    report: dict
    failed: list[dict] = field(default_factory=list)

    def raise_for_failures(self) -> None:
        """Raise :class:`ShardError` when a shard did not finish."""
        if self.failed:
            raise ShardError(failure_message(self.report))


def failure_message(report: Mapping) -> str:
    """A human message naming every failed shard of a merged report, or ``""``."""
    failed = [s for s in report.get("shards", []) if s.get("error")]
    if not failed:
        return ""
    lines = [f"{len(failed)} of {report['jobs']} extraction shard(s) failed "
             f"(executor {report['executor']}); the items they finished are cached, and the "
             "same command again extracts only what is missing:"]
    for s in failed:
        job = f" job {s['job_id']}" if s.get("job_id") else ""
        logs = f"; log {s['stderr']}" if s.get("stderr") else ""
        lines.append(f"  shard {s['index']}/{report['jobs']}{job}: {s['state']}: "
                     f"{s['error']}{logs}")
    return "\n".join(lines)


# -- splitting ---------------------------------------------------------------------------------
def shard_rows(manifest: pd.DataFrame, n_shards: int) -> list[np.ndarray]:
    """Row positions of each shard: disjoint, covering the manifest, the same on every call.

    Parameters
    ----------
    manifest : pandas.DataFrame
        A validated manifest (``path`` column).
    n_shards : int
        Number of shards (>= 1). Shards beyond the number of distinct files are empty.

    Returns
    -------
    list of numpy.ndarray
        ``n_shards`` int64 arrays of row positions (``manifest.iloc``), each ascending. The
        k-th distinct path (in first-appearance order) goes to shard ``k % n_shards``, with
        all its rows.
    """
    if isinstance(n_shards, bool) or not isinstance(n_shards, (int, np.integer)) \
            or n_shards < 1:
        raise ValueError(f"the number of shards must be an integer >= 1, got {n_shards!r}")
    codes, _ = pd.factorize(manifest["path"].astype(str), sort=False)
    shard_of_row = codes % int(n_shards)
    return [np.flatnonzero(shard_of_row == i).astype(np.int64) for i in range(int(n_shards))]


def shard_manifest(manifest: pd.DataFrame, n_shards: int) -> list[pd.DataFrame]:
    """The manifest's rows of each shard (see :func:`shard_rows`), index reset."""
    return [manifest.iloc[rows].reset_index(drop=True)
            for rows in shard_rows(manifest, n_shards)]


# -- one shard ---------------------------------------------------------------------------------
def progress_path(folder: str | os.PathLike, index: int) -> Path:
    """The progress file of shard ``index``: JSON ``{"n_items", "finished", "job", "pid"}``
    (``job``: its SLURM id, ``<array id>_<task>`` in an array; None outside SLURM)."""
    return Path(folder) / f"shard-{index:04d}.progress"


def report_path(folder: str | os.PathLike, index: int) -> Path:
    """The report of shard ``index`` (:meth:`ExtractionReport.to_dict` as JSON)."""
    return Path(folder) / f"shard-{index:04d}.json"


def run_shard(extractor: Extractor, rows: pd.DataFrame, index: int,
              folder: str | os.PathLike, threads: int | None = None,
              on_progress: Callable[[int], None] | None = None) -> dict:
    """Extract one shard: the body of each job (also run in-process by ``executor="none"``).

    Parameters
    ----------
    extractor : Extractor
        The extraction settings and cache (its own progress bar is turned off).
    rows : pandas.DataFrame
        This shard's rows of the manifest.
    index : int
        The shard's number (names its progress and report files).
    folder : path-like
        Where the progress and report files go (a folder every job sees).
    threads : int, optional
        torch intra-op threads; default ``$SLURM_CPUS_PER_TASK`` inside a SLURM job (so
        jobs sharing a node do not oversubscribe it), else torch's default.
    on_progress : callable, optional
        Called with the shard's finished items (cached ones included) after each item.

    Returns
    -------
    dict
        The shard's :meth:`ExtractionReport.to_dict`, also written to
        ``folder/shard-<index>.json``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if os.environ.get("SLURM_JOB_ID"):
        _stop_on_sigterm()
    if threads is None and os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        threads = int(os.environ["SLURM_CPUS_PER_TASK"])
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    ex = copy.copy(extractor)
    ex.progress = False
    prog = progress_path(folder, index)
    n_items = len(rows)
    last = [0.0]

    env = os.environ
    job = (f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
           if env.get("SLURM_ARRAY_TASK_ID") else env.get("SLURM_JOB_ID"))
    who = {"job": job, "pid": os.getpid()}

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= 0.2:  # at most 5 writes a second, and the end
            last[0] = now
            with contextlib.suppress(OSError):  # progress only: a full disk stops no item
                atomic_write(prog, json.dumps({"n_items": n_items,
                                               "finished": n_items - total + done, **who}))
        if on_progress is not None:
            on_progress(n_items - total + done)

    report = ex.run(rows, on_progress=progress) if n_items else ExtractionReport()
    out = report.to_dict()
    out["threads"] = int(threads) if threads else None
    atomic_write(report_path(folder, index), json.dumps(out, indent=1, default=str))
    atomic_write(prog, json.dumps({"n_items": n_items, "finished": n_items, **who}))
    return out


def _stop_on_sigterm() -> None:
    """Let ``scancel`` (SIGTERM, then SIGKILL after ``KillWait``) stop a shard job.

    submitit's job wrapper ignores SIGTERM ("Bypassing signal SIGTERM": it waits for the
    preemption or timeout that usually follows); a cancelled extraction shard should stop
    at once instead. Items already written stay in the cache (writes are atomic) and a rerun
    extracts the rest. Only in the main thread (signal handlers can only be set there).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):  # noqa: ARG001 — signal handler signature
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, stop)


def merge_reports(shards: Sequence[dict], executor: str, seconds: float) -> dict:
    """One report from the shards' entries (see :class:`ShardedExtraction`).

    Parameters
    ----------
    shards : sequence of dict
        Per shard: ``index``, ``n_items``, ``job_id``, ``state``, ``stdout``, ``stderr``,
        ``error`` (None when it finished) and ``report`` (its :meth:`ExtractionReport.to_dict`,
        None when it did not finish).
    executor : str
        ``"none"``, ``"local"`` or ``"slurm"``.
    seconds : float
        Wall time of the whole extraction.

    Returns
    -------
    dict
        Summed counts and concatenated lists of the finished shards, with ``n_items`` the
        whole manifest's, ``n_unfinished`` the items of the failed shards, ``seconds``,
        ``items_per_second`` and the ``shards`` entries.
    """
    merged: dict[str, Any] = {"n_items": 0, "n_extracted": 0, "n_cached": 0, "n_failed": 0,
                              "n_frames": 0, "n_faces": 0, "failures": [], "no_face": [],
                              "short": [], "n_unfinished": 0}
    entries = []
    for s in sorted(shards, key=lambda s: s["index"]):
        rep = s.get("report")
        merged["n_items"] += int(s["n_items"])
        if rep is None:
            merged["n_unfinished"] += int(s["n_items"])
        else:
            for k in ("n_extracted", "n_cached", "n_failed", "n_frames", "n_faces"):
                merged[k] += int(rep.get(k, 0))
            for k in ("failures", "no_face", "short"):
                merged[k] += list(rep.get(k, []))
        entry = {k: v for k, v in s.items() if k != "report"}
        if rep is not None:
            entry.update({k: rep.get(k) for k in ("n_extracted", "n_cached", "n_failed",
                                                  "seconds", "threads")})
        entries.append(entry)
    merged.update(executor=executor, jobs=len(entries), seconds=round(float(seconds), 3),
                  items_per_second=round(merged["n_extracted"] / seconds, 3) if seconds > 0
                  else 0.0,
                  faces_per_second=round(merged["n_faces"] / seconds, 3) if seconds > 0
                  else 0.0,
                  shards=entries, failed_shards=[e["index"] for e in entries if e["error"]])
    return merged


# -- the driver --------------------------------------------------------------------------------
def extract_sharded(extractor: Extractor, manifest: pd.DataFrame, jobs: int = 1,
                    executor: str = "none", folder: str | os.PathLike = ".extract",
                    slurm: Mapping[str, Any] | None = None, threads: int | None = None,
                    poll_s: float = 10.0, progress: bool = True) -> ShardedExtraction:
    """Fill the feature cache of a manifest with ``jobs`` shards and merge their reports.

    Parameters
    ----------
    extractor : Extractor
        Settings and cache; it is pickled once per job, so pass one whose models were not
        loaded yet (as built from a config).
    manifest : pandas.DataFrame
        A validated manifest.
    jobs : int
        Number of shards (one job each).
    executor : {"none", "local", "slurm"}
        ``none``: the shards one after another in this process; ``local``: all at once as
        child processes (submitit's LocalExecutor); ``slurm``: one SLURM job array.
    folder : path-like
        Progress files, shard reports and submitit's pickles and logs (``submitit/<job id>/``);
        for SLURM, a folder the compute nodes see.
    slurm : mapping, optional
        Job resources with the keys of ``experiments/conf/hydra/launcher/slurm.yaml``
        (``partition``, ``cpus_per_task``, ``mem_gb``, ``timeout_min``,
        ``array_parallelism``, ``setup``, ``additional_parameters``, ...); ``local`` uses
        its ``timeout_min``. None values are left out.
    threads : int, optional
        torch threads per shard (see :func:`run_shard`).
    poll_s : float
        Seconds between two job-state queries (squeue/sacct); result and progress files
        are looked at every half second.
    progress : bool
        A tqdm bar over the manifest's finished items (cached ones count at once).

    Returns
    -------
    ShardedExtraction
        The merged report and the failed shards; call
        :meth:`ShardedExtraction.raise_for_failures` to stop on them.

    Raises
    ------
    ValueError
        On an unknown executor or a bad number of jobs.
    ImportError
        When ``local``/``slurm`` is asked for and submitit is not installed.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"extract executor must be one of {EXECUTORS}, got {executor!r}")
    parts = shard_manifest(manifest, jobs)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(len(parts)):  # a previous call's files in the same folder
        for p in (progress_path(folder, i), report_path(folder, i)):
            p.unlink(missing_ok=True)
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(manifest), desc=f"extract ({len(parts)} shards, {executor})",
               unit="item", disable=not progress)
    try:
        if executor == "none":
            shards = _run_in_process(extractor, parts, folder, threads, bar)
        else:
            shards = _run_jobs(extractor, parts, folder, executor, dict(slurm or {}), threads,
                               poll_s, bar)
    finally:
        bar.close()
    report = merge_reports(shards, executor, time.perf_counter() - t0)
    return ShardedExtraction(report, [s for s in report["shards"] if s["error"]])


def _bar_to(bar, folder: Path, n_shards: int, done: dict[int, int]) -> None:
    """Move the bar to the sum of the shards' progress files (and ``done`` overrides)."""
    total = 0
    for i in range(n_shards):
        if i in done:
            total += done[i]
            continue
        try:
            total += int(json.loads(progress_path(folder, i).read_text())["finished"])
        except (OSError, ValueError, KeyError):
            pass
    if total > bar.n:
        bar.update(total - bar.n)


def _entry(i: int, rows: pd.DataFrame, **kw) -> dict:
    base = {"index": i, "n_items": len(rows), "job_id": None, "state": None, "stdout": None,
            "stderr": None, "error": None, "report": None}
    base.update(kw)
    return base


def _run_in_process(extractor: Extractor, parts: list[pd.DataFrame], folder: Path,
                    threads: int | None, bar) -> list[dict]:
    shards = []
    finished: dict[int, int] = {}
    for i, rows in enumerate(parts):
        def moved(n: int, i: int = i) -> None:
            _bar_to(bar, folder, len(parts), {**finished, i: n})

        try:
            rep = run_shard(extractor, rows, i, folder, threads, moved)
            shards.append(_entry(i, rows, state="COMPLETED", report=rep))
        except Exception as exc:  # noqa: BLE001 — recorded per shard, the others still run
            shards.append(_entry(i, rows, state="FAILED",
                                 error=f"{type(exc).__name__}: {exc}",
                                 traceback=traceback.format_exc()))
        finished[i] = len(rows)
        _bar_to(bar, folder, len(parts), finished)
    return shards


def _run_jobs(extractor: Extractor, parts: list[pd.DataFrame], folder: Path, kind: str,
              params: dict, threads: int | None, poll_s: float, bar) -> list[dict]:
    params.setdefault("name", "deepmetric-extract")
    n = len(parts)
    outcomes = run_array(run_shard, [[extractor] * n, parts, list(range(n)), [str(folder)] * n,
                                     [threads] * n],
                         folder / "submitit", kind, params, poll_s,
                         on_poll=lambda done: _bar_to(bar, folder, n,
                                                      {i: len(parts[i]) for i in done}),
                         prefix="extract", noun="shard")
    return [_entry(i, parts[i], report=o.pop("result"), **o) for i, o in enumerate(outcomes)]
