"""Cluster scheduling: submitit executors, job arrays and SLURM job states.

The scheduling side of sharded extraction (:mod:`deepmetric.features.shard` holds the pure
shard logic) and of sweeps on SLURM: :func:`run_array` runs one function over a job array
and waits for every job, seeing a job that ended without a result from its scheduler
state; :func:`slurm_states` reads those states from ``squeue`` (and ``sacct`` where the
cluster keeps accounting); :class:`SqueueWatcher` lets submitit's own SLURM jobs read them
the same way on a cluster without accounting. submitit is imported only when a job is
submitted (``pip install 'deepmetric[sweep]'``); only its public API is used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

__all__ = ["EXECUTORS", "ACTIVE_STATES", "make_executor", "run_array", "slurm_states",
           "sacct_works", "install_squeue_watcher"]

#: Where jobs run: ``none`` in this process (no scheduler), ``local`` as child processes,
#: ``slurm`` as SLURM jobs.
EXECUTORS = ("none", "local", "slurm")
#: submitit's keys common to every executor (the rest are SLURM's, prefixed ``slurm_``).
_BASE_KEYS = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb",
              "nodes", "name", "stderr_to_stdout"}
#: squeue/sacct states of a job that has not finished.
ACTIVE_STATES = frozenset({
    "PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "REQUEUED",
    "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
    "RESV_DEL_HOLD", "READY", "UNKNOWN"})


def make_executor(kind: str, folder: str | os.PathLike, params: Mapping[str, Any]) -> Any:
    """A submitit executor for ``kind`` with the job resources of ``params``.

    Parameters
    ----------
    kind : {"local", "slurm"}
        Child processes (submitit's local executor) or SLURM jobs.
    folder : path-like
        submitit's pickles and logs go to ``folder/<job id>/``.
    params : mapping
        The keys of ``experiments/conf/hydra/launcher/slurm.yaml`` (``partition``,
        ``cpus_per_task``, ``mem_gb``, ``timeout_min``, ``max_num_timeout``, ...); ``local``
        uses ``timeout_min`` alone. None values are left out.

    Returns
    -------
    submitit.AutoExecutor

    Raises
    ------
    ImportError
        submitit is not installed (the ``sweep`` extra).
    """
    try:
        import submitit
    except ImportError as exc:  # the sweep extra
        raise ImportError(f"extract executor {kind!r} needs submitit: "
                          "pip install 'deepmetric[sweep]'") from exc
    params = {k: v for k, v in params.items() if v is not None}
    params.pop("submitit_folder", None)
    params.pop("_target_", None)
    if kind == "local":
        ex = submitit.AutoExecutor(folder=Path(folder) / "%j", cluster="local")
        keep = {k: params[k] for k in ("timeout_min",) if k in params}
        ex.update_parameters(**keep)
        return ex
    init = {}
    if "max_num_timeout" in params:
        init["slurm_max_num_timeout"] = params.pop("max_num_timeout")
    ex = submitit.AutoExecutor(folder=Path(folder) / "%j", cluster="slurm", **init)
    ex.update_parameters(**{k if k in _BASE_KEYS else f"slurm_{k}": v
                            for k, v in params.items()})
    return ex


def run_array(fn: Callable, args: Sequence[Sequence], folder: str | os.PathLike, kind: str,
              params: Mapping[str, Any], poll_s: float = 10.0,
              on_poll: Callable[[set[int]], None] | None = None,
              prefix: str = "deepmetric", noun: str = "") -> list[dict]:
    """Run ``fn`` over argument lists as one job array and wait for every job.

    A job that ends without a result (cancelled, killed, timed out, node lost) is seen from
    its scheduler state (:func:`slurm_states` for SLURM) and reported, not waited on.

    Parameters
    ----------
    fn : callable
        Pickled once per job.
    args : sequence of sequences
        ``fn``'s positional arguments, one list per parameter, one element per job (as
        ``submitit``'s ``map_array``).
    folder : path-like
        submitit's pickles and logs (``folder/<job id>/``); one the compute nodes see.
    kind : {"local", "slurm"}
        See :func:`make_executor`.
    params : mapping
        Job resources (see :func:`make_executor`).
    poll_s : float
        Seconds between two state queries; result files are looked at every half second.
    on_poll : callable, optional
        Called with the indices of the finished jobs every half second.
    prefix, noun : str
        The line printed on submission reads ``"<prefix>: submitted <n> <noun> job(s)
        (<kind>): <job or array id>; logs in <folder>"``.

    Returns
    -------
    list of dict
        Per job, in order: ``job_id``, ``stdout``, ``stderr`` (log paths), ``state``,
        ``error`` (None when the job returned), ``result`` (what ``fn`` returned, or None)
        and, for a job that raised, ``traceback``.
    """
    ex = make_executor(kind, folder, params)
    jobs = ex.map_array(fn, *args)
    ids = [str(j.job_id) for j in jobs]
    print(f"{prefix}: submitted {len(jobs)} {noun + ' ' if noun else ''}job(s) ({kind}): "
          f"{ids[0] if len(ids) == 1 else ids[0].split('_')[0] + ' array'}; logs in "
          f"{folder}", flush=True)
    out: dict[int, dict] = {}
    gone_since: dict[int, float] = {}
    next_poll = time.monotonic() + min(poll_s, 2.0)
    while len(out) < len(jobs):
        for i, job in enumerate(jobs):
            if i not in out and job.paths.result_pickle.exists():
                out[i] = _collect(job)
        if len(out) < len(jobs) and time.monotonic() >= next_poll:
            next_poll = time.monotonic() + poll_s
            states = (slurm_states([j.job_id for j in jobs]) if kind == "slurm"
                      else {j.job_id: ("EXITED" if j.done() else "RUNNING") for j in jobs})
            for i, job in enumerate(jobs):
                if i in out:
                    continue
                state = states.get(job.job_id, "GONE")
                if state.split()[0] in ACTIVE_STATES:
                    gone_since.pop(i, None)
                    continue
                # finished without a result (yet): allow a shared file system to catch up
                first = gone_since.setdefault(i, time.monotonic())
                if job.paths.result_pickle.exists():
                    out[i] = _collect(job)
                elif time.monotonic() - first >= min(30.0, 3 * poll_s):
                    out[i] = {**_job_files(job), "state": state, "error": _why(state, job),
                              "result": None}
        if on_poll is not None:
            on_poll(set(out))
        if len(out) < len(jobs):
            time.sleep(0.5)
    return [out[i] for i in range(len(jobs))]


def _job_files(job) -> dict:
    return {"job_id": str(job.job_id), "stdout": str(job.paths.stdout),
            "stderr": str(job.paths.stderr)}


def _collect(job) -> dict:
    """A job with a result pickle: its result, or its exception's last line."""
    try:
        result = job.result()
    except Exception as exc:  # noqa: BLE001 — submitit's FailedJobError carries the traceback
        return {**_job_files(job), "state": "FAILED", "error": _last_error(exc),
                "traceback": str(exc)[-4000:], "result": None}
    return {**_job_files(job), "state": "COMPLETED", "error": None, "result": result}


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


def sacct_works() -> bool:
    """Whether this cluster keeps job accounting (``sacct`` answers), checked once.

    Returns
    -------
    bool
    """
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
    if missing and sacct_works():
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


def install_squeue_watcher(delay_s: float = 60.0) -> None:
    """Make submitit's SLURM jobs read their states through :func:`slurm_states`.

    submitit asks ``sacct`` for job states; on a cluster without accounting storage every
    poll warns ("Bypassing sacct error") and a job killed before writing its result is
    never seen as finished (a sweep waits forever). This sets submitit's public
    ``SlurmJob.watcher`` to a watcher that reads squeue first, then sacct. Idempotent.

    Parameters
    ----------
    delay_s : float
        Longest time between two state queries (they start every 2 s after a job is
        registered and back off to this).
    """
    from submitit.slurm import slurm

    if getattr(slurm.SlurmJob.watcher, "deepmetric_squeue", False):
        return

    class SqueueWatcher(slurm.SlurmInfoWatcher):
        """submitit's watcher interface (``register_job``, ``get_info``, ``get_state``,
        ``is_done``, ``update``) answered from :func:`slurm_states`, on its own state."""

        deepmetric_squeue = True

        def __init__(self, delay_s: float) -> None:
            super().__init__(delay_s=int(delay_s))
            self.max_delay_s = float(delay_s)
            self.jobs: dict[str, float] = {}  # job id -> when it was registered
            self.states: dict[str, str] = {}
            self.checked = float("-inf")

        def register_job(self, job_id: str) -> None:
            self.jobs.setdefault(str(job_id), time.time())

        def update(self) -> None:
            todo = [j for j in self.jobs if not self.finished(j)]
            if todo:
                self.states.update(slurm_states(todo))
            self.checked = time.time()

        def finished(self, job_id: str) -> bool:
            return self.states.get(job_id, "UNKNOWN").split()[0] not in ACTIVE_STATES

        def get_info(self, job_id: str, mode: str = "standard") -> dict[str, str]:
            if job_id is None:
                raise RuntimeError("Cannot ask SLURM for the state of a job without an id")
            self.register_job(job_id)
            now = time.time()
            youngest = now - max(self.jobs.values())
            delay = min(self.max_delay_s, max(2.0, youngest / 2))
            if mode == "force" or (mode == "standard" and now - self.checked > delay):
                self.update()
            state = self.states.get(str(job_id))
            return {"JobID": str(job_id), "State": state} if state else {}

    slurm.SlurmJob.watcher = SqueueWatcher(delay_s)
