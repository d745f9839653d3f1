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
  child processes and ``"slurm"`` as one SLURM job array, both through submitit (imported
  only then; ``pip install 'deepmetric[sweep]'``). Progress comes from a small file each
  shard rewrites after every item (``folder/shard-<i>.progress``); the job states from
  ``sacct`` where the cluster keeps accounting, else from ``squeue --states=all``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from deepmetric.features.extract import ExtractionReport, Extractor

__all__ = ["EXECUTORS", "ShardError", "ShardedExtraction", "shard_rows", "shard_manifest",
           "run_shard", "merge_reports", "extract_sharded", "slurm_states"]

EXECUTORS = ("none", "local", "slurm")
#: submitit's keys common to every executor (the rest are SLURM's, prefixed ``slurm_``).
_BASE_KEYS = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb",
              "nodes", "name", "stderr_to_stdout"}
#: squeue/sacct states of a job that has not finished.
_ACTIVE = {"PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "REQUEUED",
           "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
           "RESV_DEL_HOLD", "READY", "UNKNOWN"}


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
def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
            _write_atomic(prog, json.dumps({"n_items": n_items,
                                            "finished": n_items - total + done, **who}))
        if on_progress is not None:
            on_progress(n_items - total + done)

    report = ex.run(rows, on_progress=progress) if n_items else ExtractionReport()
    out = report.to_dict()
    out["threads"] = int(threads) if threads else None
    _write_atomic(report_path(folder, index), json.dumps(out, indent=1, default=str))
    _write_atomic(prog, json.dumps({"n_items": n_items, "finished": n_items, **who}))
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


def _executor(kind: str, folder: Path, params: dict):
    try:
        import submitit
    except ImportError as exc:  # the sweep extra
        raise ImportError(f"extract executor {kind!r} needs submitit: "
                          "pip install 'deepmetric[sweep]'") from exc
    params = {k: v for k, v in params.items() if v is not None}
    params.pop("submitit_folder", None)
    params.pop("_target_", None)
    if kind == "local":
        ex = submitit.AutoExecutor(folder=folder / "submitit" / "%j", cluster="local")
        keep = {k: params[k] for k in ("timeout_min",) if k in params}
        ex.update_parameters(**keep)
        return ex
    init = {}
    if "max_num_timeout" in params:
        init["slurm_max_num_timeout"] = params.pop("max_num_timeout")
    ex = submitit.AutoExecutor(folder=folder / "submitit" / "%j", cluster="slurm", **init)
    ex.update_parameters(**{k if k in _BASE_KEYS else f"slurm_{k}": v
                            for k, v in params.items()})
    return ex


def _run_jobs(extractor: Extractor, parts: list[pd.DataFrame], folder: Path, kind: str,
              params: dict, threads: int | None, poll_s: float, bar) -> list[dict]:
    params.setdefault("name", "deepmetric-extract")
    ex = _executor(kind, folder, params)
    idx = list(range(len(parts)))
    jobs = ex.map_array(run_shard, [extractor] * len(parts), parts, idx,
                        [str(folder)] * len(parts), [threads] * len(parts))
    ids = [str(j.job_id) for j in jobs]
    print(f"extract: submitted {len(jobs)} shard job(s) ({kind}): "
          f"{ids[0] if len(ids) == 1 else ids[0].split('_')[0] + ' array'}; logs in "
          f"{folder / 'submitit'}", flush=True)
    out: dict[int, dict] = {}
    gone_since: dict[int, float] = {}
    next_poll = time.monotonic() + min(poll_s, 2.0)
    while len(out) < len(jobs):
        for i, job in enumerate(jobs):
            if i not in out and job.paths.result_pickle.exists():
                out[i] = _collect(i, parts[i], job)
        if len(out) < len(jobs) and time.monotonic() >= next_poll:
            next_poll = time.monotonic() + poll_s
            states = (slurm_states([j.job_id for j in jobs]) if kind == "slurm"
                      else {j.job_id: ("EXITED" if j.done() else "RUNNING") for j in jobs})
            for i, job in enumerate(jobs):
                if i in out:
                    continue
                state = states.get(job.job_id, "GONE")
                if state.split()[0] in _ACTIVE:
                    gone_since.pop(i, None)
                    continue
                # finished without a result (yet): allow a shared file system to catch up
                first = gone_since.setdefault(i, time.monotonic())
                if job.paths.result_pickle.exists():
                    out[i] = _collect(i, parts[i], job)
                elif time.monotonic() - first >= min(30.0, 3 * poll_s):
                    out[i] = _entry(i, parts[i], **_job_files(job), state=state,
                                    error=_why(state, job))
        _bar_to(bar, folder, len(parts),
                {i: len(parts[i]) for i in out})
        if len(out) < len(jobs):
            time.sleep(0.5)
    return [out[i] for i in idx]


def _job_files(job) -> dict:
    return {"job_id": str(job.job_id), "stdout": str(job.paths.stdout),
            "stderr": str(job.paths.stderr)}


def _collect(i: int, rows: pd.DataFrame, job) -> dict:
    """A job with a result pickle: its report, or its exception's last line."""
    try:
        rep = job.result()
    except Exception as exc:  # noqa: BLE001 — submitit's FailedJobError carries the traceback
        return _entry(i, rows, **_job_files(job), state="FAILED", error=_last_error(exc),
                      traceback=str(exc)[-4000:])
    return _entry(i, rows, **_job_files(job), state="COMPLETED", report=rep)


def _last_error(exc: BaseException) -> str:
    """The exception line of a job's traceback (submitit appends log paths after it)."""
    text = str(exc).split("You can check full logs")[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and set(ln.strip()) != {"-"}]
    return lines[-1] if lines else f"{type(exc).__name__}: {exc}"


def _why(state: str, job) -> str:
    if state == "GONE":
        return "left the queue without a result (killed, or purged before it was seen)"
    tail = ""
    try:
        lines = [ln for ln in Path(job.paths.stderr).read_text(errors="replace").splitlines()
                 if ln.strip()]
        tail = f" (log ends: {lines[-1].strip()[:300]})" if lines else ""
    except OSError:
        pass
    return f"ended {state} without a result{tail}"


_HAS_SACCT: bool | None = None


def _sacct_works() -> bool:
    """Whether this cluster keeps job accounting (``sacct`` answers), checked once."""
    global _HAS_SACCT
    if _HAS_SACCT is None:
        _HAS_SACCT = shutil.which("sacct") is not None and subprocess.run(
            ["sacct", "-n", "-X", "-o", "JobID", "-S", "now"], capture_output=True,
            timeout=60).returncode == 0
    return _HAS_SACCT


def slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """The SLURM state of each job (``"1234"`` or array task ``"1234_5"``).

    From ``squeue --states=all`` (the queue, and terminal states such as CANCELLED,
    TIMEOUT or FAILED for ``MinJobAge`` after the end, 300 s by default); for jobs no longer
    there, from ``sacct`` when the cluster keeps accounting. A job found in neither is left
    out. No call here warns when the cluster has no accounting storage.

    Parameters
    ----------
    job_ids : sequence of str
        Job ids as submitit gives them.

    Returns
    -------
    dict of str to str
        Job id to state name (``PENDING``, ``RUNNING``, ``COMPLETED``, ``CANCELLED``, ...).
    """
    wanted = {str(j) for j in job_ids}
    arrays = sorted({j.split("_")[0] for j in wanted})
    if not arrays:
        return {}
    fmt = ["-o", "%i|%T"]
    proc = _call(["squeue", "-h", "-r", "-t", "all", *fmt, "-j", ",".join(arrays)])
    if proc is None:  # "Invalid job id specified" once every job is purged: the user's jobs
        proc = _call(["squeue", "-h", "-r", "-t", "all", *fmt, "--me"])
    states = _parse_states(proc.stdout if proc is not None else "")
    missing = sorted({j.split("_")[0] for j in wanted if j not in states})
    if missing and _sacct_works():
        proc = _call(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(missing)])
        if proc is not None:
            states = {**_parse_states(proc.stdout), **states}
    return {j: states[j] for j in wanted if j in states}


def _call(cmd: list[str]) -> subprocess.CompletedProcess | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc if proc.returncode == 0 else None


def _parse_states(text: str) -> dict[str, str]:
    """``id|STATE`` lines (array ranges such as ``12_[3-5%2]`` expanded) to a dict."""
    states: dict[str, str] = {}
    for line in text.splitlines():
        jid, _, state = line.strip().partition("|")
        if not (jid and state):
            continue
        state = state.split()[0]  # "CANCELLED by 0" -> "CANCELLED"
        main, _, rest = jid.partition("_")
        if rest.startswith("["):
            for part in rest.strip("[]").split("%")[0].split(","):
                lo, _, hi = part.partition("-")
                if lo.isdigit():
                    for t in range(int(lo), int(hi or lo) + 1):
                        states[f"{main}_{t}"] = state
        else:
            states[jid] = state
    return states
