"""One table for a multirun: every job's overrides and test metrics, best video AUC first.

    python -m experiments.summarize multirun/triplet_rf/2026-11-22_10-00-00
    python -m experiments.summarize multirun/triplet_rf_optuna      # every sweep below it

A job is a folder with ``.hydra/overrides.yaml`` (found at any depth, ``.submitit`` folders
skipped). A job with a readable ``metrics.json`` (written by :func:`experiments.run.run`)
is ``ok``; any other job is ``failed`` (crashed, killed, or still running) and keeps its row
with its overrides and the tail of its log. Writes ``summary.csv`` and ``summary.md`` into
the given folder and prints the markdown.

:class:`SummaryCallback` is a Hydra callback (``hydra.callbacks``, used by
``conf/hparams_search/*.yaml``) that writes the same table when a multirun ends.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

log = logging.getLogger(__name__)

__all__ = ["METRICS", "SummaryCallback", "find_jobs", "summarize", "to_markdown",
           "write_summary"]

#: Metric columns: name → path in ``metrics.json``.
METRICS: dict[str, tuple[str, ...]] = {
    "video_auc": ("test", "video", "auc"),
    "video_auc_std": ("test_std", "video", "auc"),
    "video_f1": ("test", "video", "f1"),
    "video_accuracy": ("test", "video", "accuracy"),
    "frame_auc": ("test", "frame", "auc"),
    "cross_video_auc": ("cross", "video", "auc"),
}
LOG_TAIL_LINES = 15
_FIXED = ("job", "status")
_TRAILING = ("seconds", "log_tail", "path")


def find_jobs(path: str | os.PathLike) -> list[Path]:
    """Job folders under ``path`` (or ``path`` itself): those with ``.hydra/overrides.yaml``.

    Sorted by folder, numerically where the names are job numbers (``2`` before ``10``).
    """
    root = Path(path)
    jobs = [p.parent.parent for p in root.rglob(".hydra/overrides.yaml")
            if ".submitit" not in p.relative_to(root).parts]
    return sorted(jobs, key=lambda p: [(0, int(s), "") if s.isdigit() else (1, 0, s)
                                       for s in p.relative_to(root).parts])


def summarize(path: str | os.PathLike) -> pd.DataFrame:
    """Collect every job of a multirun folder into one table.

    Parameters
    ----------
    path : path-like
        A sweep folder (``hydra.sweep.dir``) or any folder above several of them.

    Returns
    -------
    pandas.DataFrame
        One row per job, sorted by ``video_auc`` descending (failed jobs last, in job
        order). Columns: ``job`` (folder relative to ``path``), ``status`` (``"ok"`` /
        ``"failed"``), one column per override key (``"classifier"``,
        ``"projector.margin"``; values parsed as YAML scalars, ``~key`` → ``"<deleted>"``,
        not overridden in that job → NA), the
        :data:`METRICS` columns that any job has (float, NaN where absent),
        ``seconds``, ``log_tail`` (last lines of the job's log for failed jobs, ``""``
        for ok ones) and ``path`` (the job folder).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist or holds no job folder.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    jobs = find_jobs(root)
    if not jobs:
        raise FileNotFoundError(f"{root}: no Hydra job folder (no .hydra/overrides.yaml) in it")
    rows, keys = [], []
    for job in jobs:
        overrides = _overrides(job)
        for k in overrides:
            if k not in keys:
                keys.append(k)
        metrics, problem = _metrics(job)
        row: dict[str, Any] = {"job": job.relative_to(root).as_posix() or ".",
                               "status": "ok" if problem is None else "failed", **overrides}
        for col, where in METRICS.items():
            row[col] = _get(metrics, where)
        for method, m in ((metrics or {}).get("per_method") or {}).items():
            row[f"auc_{method}"] = _float(m.get("auc"))
        row["seconds"] = _float(metrics.get("seconds")) if metrics else math.nan
        row["log_tail"] = "" if problem is None else _failure_text(job, problem)
        row["path"] = str(job)
        rows.append(row)
    df = pd.DataFrame(rows)
    metric_cols = [c for c in METRICS if df[c].notna().any() or c in
                   ("video_auc", "video_f1", "video_accuracy", "frame_auc")]
    method_cols = sorted(c for c in df.columns if c.startswith("auc_"))
    metric_cols += method_cols
    df = df[[*_FIXED, *keys, *metric_cols, *_TRAILING]]
    for c in [*metric_cols, "seconds"]:
        df[c] = df[c].astype(float)
    df["_order"] = range(len(df))
    df = df.sort_values(["video_auc", "_order"], ascending=[False, True], na_position="last",
                        kind="stable")
    return df.drop(columns="_order").reset_index(drop=True)


def to_markdown(df: pd.DataFrame, title: str | None = None) -> str:
    """Markdown: the ranked table (override columns that vary), then the failed jobs' logs.

    Override columns with one value in every job are listed once above the table.
    """
    override_cols = [c for c in df.columns if c not in (*_FIXED, *METRICS, *_TRAILING)]
    cells = {c: df[c].map(_cell) for c in override_cols}
    constant = [c for c in override_cols
                if len(df) > 1 and cells[c].nunique() == 1 and cells[c].iloc[0] != ""]
    shown = [*_FIXED, *[c for c in override_cols if c not in constant],
             *[c for c in METRICS if c in df.columns], "seconds"]
    n_failed = int((df["status"] != "ok").sum())
    counts = (f"{len(df)} job{'s' * (len(df) != 1)}: {len(df) - n_failed} ok, {n_failed} "
              "failed; sorted by video AUC. In-dataset columns (`video_*`, `frame_*`) are "
              "means over the identity-grouped folds (`*_std`: their std; the split "
              "column's test part when the data has one); `cross_video_auc` pools all the "
              "cross-dataset items.")
    lines = [f"# {title}" if title else "# Sweep summary", "", counts, ""]
    if constant:
        lines += ["Same in every job: " + ", ".join(
            f"`{c}={_cell(df[c].iloc[0])}`" for c in constant) + ".", ""]
    lines += ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_cell(r[c], c in METRICS) for c in shown) + " |")
    lines.append("")
    for _, r in df[df["status"] != "ok"].iterrows():
        ov = " ".join(f"{c}={_cell(r[c])}" for c in override_cols if not _missing(r[c]))
        lines += [f"## failed: job {r['job']}", "", f"Overrides: `{ov or '(none)'}`",
                  f"Folder: `{r['path']}`", "", "```", r["log_tail"].rstrip(), "```", ""]
    return "\n".join(lines)


def write_summary(df: pd.DataFrame, folder: str | os.PathLike,
                  title: str | None = None) -> tuple[Path, Path]:
    """Write ``summary.csv`` and ``summary.md`` into ``folder``; returns both paths."""
    folder = Path(folder)
    from deepmetric.storage import atomic_file, atomic_write
    from deepmetric.text import spreadsheet_safe

    csv, md = folder / "summary.csv", folder / "summary.md"
    with atomic_file(csv) as tmp:
        spreadsheet_safe(df).to_csv(tmp, index=False)
    atomic_write(md, to_markdown(df, title))
    return csv, md


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m experiments.summarize <multirun dir>``."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.summarize",
        description="Tabulate a Hydra multirun (overrides and metrics of every job, failed "
                    "jobs with their log tail); writes summary.csv and summary.md into it.")
    parser.add_argument("path", type=Path, help="sweep folder, or a folder above sweeps")
    parser.add_argument("--no-write", action="store_true", help="only print the table")
    args = parser.parse_args(argv)
    try:
        df = summarize(args.path)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.no_write:
        print(to_markdown(df, str(args.path)))
    else:
        csv, md = write_summary(df, args.path, str(args.path))
        print(md.read_text())
        print(f"written: {csv}, {md}")
    return 0


try:  # the callback needs Hydra (the experiments extra); summarize() itself does not
    from hydra.experimental.callback import Callback as _Callback
except ImportError:  # pragma: no cover
    _Callback = object  # type: ignore[assignment,misc]


class SummaryCallback(_Callback):  # type: ignore[misc,valid-type]
    """Hydra callback for sweeps (``hydra.callbacks.summary._target_=`` this class).

    - multirun start: creates the folder of a ``sqlite:///`` Optuna storage (SQLite does
      not create folders, and the sweeper opens the study before any job folder exists);
    - job end: logs a failed job's traceback, so that it lands in the job's ``run.log``
      (Hydra itself only reports it in the sweeping process);
    - multirun end: writes ``summary.csv``/``summary.md`` into the sweep folder and logs
      the table. (Not reached when the sweep stops on a failed job: run the CLI then.)
    """

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        storage = _select(config, "hydra.sweeper.storage")
        if isinstance(storage, str) and storage.startswith("sqlite:///"):
            db = storage[len("sqlite:///"):].split("?", 1)[0]
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        if getattr(job_return, "status", None) == JobStatus.FAILED:
            exc = job_return._return_value
            log.error("job failed: %s: %s", type(exc).__name__, exc,
                      exc_info=(type(exc), exc, exc.__traceback__))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = _select(config, "hydra.sweep.dir")
        if not sweep_dir or not Path(sweep_dir).is_dir():
            return
        try:
            df = summarize(sweep_dir)
        except FileNotFoundError as exc:
            log.warning("no summary: %s", exc)
            return
        csv, md = write_summary(df, sweep_dir, str(sweep_dir))
        log.info("sweep summary (%s, %s):\n%s", csv, md.name, md.read_text())


# -- helpers ----------------------------------------------------------------------------------

def _overrides(job: Path) -> dict[str, Any]:
    """``.hydra/overrides.yaml`` → {key: value}; ``+key``/``++key`` → key, ``~key`` →
    ``"<deleted>"``."""
    path = job / ".hydra" / "overrides.yaml"
    try:
        items = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: unreadable overrides ({exc})") from exc
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.lstrip("+")
        if key.startswith("~"):
            out[key[1:]] = "<deleted>"
            continue
        out[key] = _scalar(value) if sep else None
    return out


def _scalar(text: str) -> Any:
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(v, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            return float(v) if any(ch.isdigit() for ch in v) else v
        except ValueError:
            return v
    return v if isinstance(v, (int, float, bool)) or v is None else text


def _metrics(job: Path) -> tuple[dict, str | None]:
    path = job / "metrics.json"
    if not path.is_file():
        return {}, "no metrics.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {}, f"metrics.json unreadable ({exc})"
    return (data, None) if isinstance(data, dict) else ({}, "metrics.json is not an object")


def _get(d: Any, where: tuple[str, ...]) -> float:
    for k in where:
        if not isinstance(d, dict) or k not in d:
            return math.nan
        d = d[k]
    return _float(d)


def _float(v: Any) -> float:
    try:
        return math.nan if v is None else float(v)
    except (TypeError, ValueError):
        return math.nan


def _tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _failure_text(job: Path, problem: str) -> str:
    """Why a job has no metrics: the tail of its Hydra log and of its submitit logs."""
    parts = [f"[{problem}]"]
    logs = sorted(job.glob("*.log"), key=lambda p: p.stat().st_mtime)
    if logs:
        errors = [ln for ln in _tail(logs[-1], 10_000).splitlines() if "job failed: " in ln]
        if errors:  # logged by SummaryCallback.on_job_end, above the traceback
            parts.append("error: " + errors[-1].split("job failed: ", 1)[1])
        parts += [f"--- {logs[-1].name} (last {LOG_TAIL_LINES} lines)", _tail(logs[-1]) or
                  "(empty)"]
    else:
        parts.append("(no log file in the job folder: the job did not start)")
    job_id = _select_yaml(job / ".hydra" / "hydra.yaml", ("hydra", "job", "id"))
    if job_id:
        sub = job.parent / ".submitit" / str(job_id)
        for f in sorted(sub.glob("*_log.err")) + sorted(sub.glob("*_log.out")):
            text = _tail(f)
            if text.strip():
                parts += [f"--- .submitit/{job_id}/{f.name}", text]
    return "\n".join(parts)


def _select_yaml(path: Path, where: tuple[str, ...]) -> Any:
    try:
        d = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    for k in where:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _select(config: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(config, key)
    except Exception:  # noqa: BLE001 — an unresolvable value means "not configured"
        return None


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _cell(v: Any, metric: bool = False) -> str:
    if _missing(v):
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" if metric else f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


if __name__ == "__main__":
    raise SystemExit(main())
