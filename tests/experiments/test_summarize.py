"""experiments.summarize: one table per multirun, failed jobs kept with their log tail.

Job folders here are laid out as Hydra writes them (``.hydra/overrides.yaml``, the job log,
``metrics.json`` shaped like experiments.run's); a real failed job comes from a real
multirun (``test_real_failed_job_is_listed_with_its_traceback``). The real 2x2 sweep is
summarised in test_sweeps.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from experiments.summarize import main, summarize, to_markdown, write_summary

pytestmark = pytest.mark.slow  # real sweeps on the demo

REPO = Path(__file__).resolve().parents[2]


def _metrics(video_auc: float | None, frame_auc: float = 0.7, f1: float = 0.6,
             acc: float = 0.65) -> dict:
    level = {"auc": video_auc, "f1": f1, "accuracy": acc, "precision": 0.6, "recall": 0.6}
    return {"name": "triplet_rf", "pipeline": "triplet_rf", "protocol": "cv",
            "test": {"video": level, "frame": {**level, "auc": frame_auc}},
            "test_std": {"video": {"auc": 0.05}, "frame": {"auc": 0.04}}, "seconds": 12.5}


def _job(sweep: Path, num: int | str, overrides: list[str], metrics: dict | None,
         log: str = "[INFO] - starting\n", job_id: str | None = None) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"job": {"name": "run", "id": job_id or f"job_id_{num}"}}}))
    (job / "run.log").write_text(log)
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    return job


@pytest.fixture
def sweep(tmp_path) -> Path:
    s = tmp_path / "multirun" / "triplet_rf" / "2026-01-01_00-00-00"
    _job(s, 0, ["projector.margin=0.2", "classifier=rf", "seed=0"], _metrics(0.71))
    _job(s, 1, ["projector.margin=0.5", "classifier=rf", "seed=0"], _metrics(0.93))
    _job(s, 2, ["projector.margin=0.2", "classifier=sgd", "seed=0"], None,
         log="\n".join(f"[INFO] - line {i}" for i in range(40))
         + "\n[ERROR] - job failed: ValueError: bad margin\nValueError: bad margin\n")
    _job(s, 3, ["projector.margin=0.5", "classifier=sgd", "seed=0"], _metrics(0.80))
    _job(s, 10, ["projector.margin=1e-3", "exp=raw_rf", "~eval_data", "seed=0"],
         _metrics(None))  # AUC undefined (one class) → NaN, after the numbers
    return s


def test_table_sorted_by_video_auc_with_failed_jobs_kept(sweep):
    df = summarize(sweep)
    assert df["job"].tolist() == ["1", "3", "0", "2", "10"]
    assert df["status"].tolist() == ["ok", "ok", "ok", "failed", "ok"]
    assert df["video_auc"].iloc[:3].tolist() == [0.93, 0.80, 0.71]
    assert math.isnan(df["video_auc"].iloc[3]) and math.isnan(df["video_auc"].iloc[4])
    # overrides as columns, values parsed (+/~ prefixes dropped; ~key → None)
    assert list(df.columns[2:8]) == ["projector.margin", "classifier", "seed", "exp",
                                     "eval_data", "video_auc"]
    assert df.set_index("job").loc["10", "projector.margin"] == pytest.approx(0.001)
    assert df.set_index("job").loc["10", "exp"] == "raw_rf"
    assert df.set_index("job").loc["10", "eval_data"] == "<deleted>"
    assert pd.isna(df.set_index("job").loc["1", "exp"])
    for col in ("video_f1", "video_accuracy", "frame_auc", "video_auc_std", "seconds"):
        assert df[col].dtype == float
    assert "cross_video_auc" not in df  # no job has a cross-dataset result
    failed = df[df["status"] == "failed"].iloc[0]
    assert (failed["projector.margin"], failed["classifier"]) == (0.2, "sgd")
    assert "no metrics.json" in failed["log_tail"] and "ValueError: bad margin" in \
        failed["log_tail"] and "line 39" in failed["log_tail"]
    assert "line 10\n" not in failed["log_tail"]  # only the tail
    assert df[df["status"] == "ok"]["log_tail"].eq("").all()


def test_markdown_and_files(sweep):
    df = summarize(sweep)
    csv, md = write_summary(df, sweep, "demo sweep")
    assert (csv, md) == (sweep / "summary.csv", sweep / "summary.md")
    back = pd.read_csv(csv)
    assert len(back) == 5 and back["job"].astype(str).tolist() == df["job"].tolist()
    text = md.read_text()
    assert text == to_markdown(df, "demo sweep")
    assert "5 jobs: 4 ok, 1 failed" in text
    assert "Same in every job: `seed=0`." in text  # exp/eval_data are set in one job only
    assert "| job | status | projector.margin | classifier | exp | eval_data |" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| 1 |")]
    assert rows and "| 0.930 |" in rows[0]
    assert "## failed: job 2" in text and "Overrides: `projector.margin=0.2 classifier=sgd " \
        "seed=0`" in text and "ValueError: bad margin" in text


def test_nested_sweeps_and_submitit_logs(tmp_path, sweep):
    # a second sweep of the same study beside the first; .submitit folders are not jobs
    other = sweep.parent / "2026-01-02_00-00-00"
    _job(other, 0, ["projector.margin=0.3"], _metrics(0.99))
    _job(other, 1, ["projector.margin=0.4"], None, job_id="4242_1")
    err = other / ".submitit" / "4242_1" / "4242_1_0_log.err"
    err.parent.mkdir(parents=True)
    err.write_text("slurmstepd: error: *** JOB 4242 CANCELLED DUE TO TIME LIMIT ***\n")
    (other / ".submitit" / "4242_1" / ".hydra").mkdir()
    (other / ".submitit" / "4242_1" / ".hydra" / "overrides.yaml").write_text("[]")
    df = summarize(sweep.parent)
    assert len(df) == 7 and df["job"].iloc[0] == "2026-01-02_00-00-00/0"
    tail = df.set_index("job").loc["2026-01-02_00-00-00/1", "log_tail"]
    assert "CANCELLED DUE TO TIME LIMIT" in tail and ".submitit/4242_1/4242_1_0_log.err" in tail


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Hydra job folder"):
        summarize(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        summarize(tmp_path / "nowhere")
    assert main([str(tmp_path)]) == 2


def test_cli(sweep):
    proc = subprocess.run([sys.executable, "-m", "experiments.summarize", str(sweep)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| job | status | projector.margin | classifier |" in proc.stdout
    assert (sweep / "summary.csv").is_file() and (sweep / "summary.md").is_file()
    proc = subprocess.run([sys.executable, "-m", "experiments.summarize", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "multirun" in proc.stdout


def test_real_failed_job_is_listed_with_its_traceback(tmp_path):
    """A job that raises (here: an invalid demo size) in a real multirun: no metrics.json,
    Hydra's sweep exits non-zero, the summary keeps the job with the error from its log
    (logged there by SummaryCallback)."""
    env = {**os.environ, "DEEPMETRIC_OUTPUTS": str(tmp_path), "DEEPMETRIC_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.run", "-m", "data.n_clips=0", "plots=false",
         "extractor.progress=false",
         "+hydra.callbacks.summary._target_=experiments.summarize.SummaryCallback"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "n_clips >= 1" in proc.stderr
    (sweep,) = (tmp_path / "triplet_rf").iterdir()
    df = summarize(sweep)
    assert len(df) == 1 and df["status"].iloc[0] == "failed"
    assert df["data.n_clips"].iloc[0] == 0
    tail = df["log_tail"].iloc[0]
    assert tail.startswith("[no metrics.json]\nerror: ValueError: data (deepmetric.datasets.")
    assert "n_clips >= 1" in tail.splitlines()[-1]
    assert "Traceback (most recent call last)" in (sweep / "0" / "run.log").read_text()
