"""The generalisation study as a Hydra app: the ``blocks`` rows in one run, then one job per
row group (with those rows as ``study.previous``) through the local and the SLURM launchers,
the jobs' rows merged into the sweep folder; a bad row group and a missing ``blocks`` choice
are refused by name. The jobs run ``python -m experiments.generalization`` on the tiny demo
(in-dataset and cross-dataset data alike: it tests the machinery, not a result)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GROUPS = ("identity", "adapt")  # both use the dev-set best of the blocks rows

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _study(args: list[str], env: dict[str, str], tiny_demo, check: bool = True):
    eval_data = [o.replace("data.", "eval_data.", 1) for o in tiny_demo.overrides]
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.generalization", *args, "data=demo",
         "eval_data=demo", *tiny_demo.overrides, *eval_data, "extractor.n_frames=3",
         "extractor.progress=false"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=800)
    if check:
        assert proc.returncode == 0, f"{args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _sweep(env: dict[str, str], name: str) -> Path:
    (sweep,) = [p for p in (Path(env["DEEPMETRIC_OUTPUTS"]) / name).iterdir() if p.is_dir()]
    return sweep


def _check_merged(sweep: Path, previous: list[dict]) -> list[dict]:
    """Each job kept the previous rows and ran its own group; the sweep folder holds all the
    rows once, in job order."""
    jobs = [json.loads((sweep / str(i) / "generalization.json").read_text())
            for i in range(len(GROUPS))]
    for group, rows in zip(GROUPS, jobs, strict=True):
        assert rows[:len(previous)] == previous
        mine = rows[len(previous):]
        assert mine and {r["group"] for r in mine} == {group}
        assert all("error" not in r and 0 <= r["dfdc_image_auc"] <= 1 for r in mine)
    merged = json.loads((sweep / "generalization.json").read_text())
    assert merged == previous + jobs[0][len(previous):] + jobs[1][len(previous):]
    md = (sweep / "generalization.md").read_text()
    assert "data=demo" in md  # says it is not the study's FF++/DFDC data
    groups = ("| blocks |",) + tuple(f"| {g} |" for g in GROUPS)
    assert sum(line.startswith(groups) for line in md.splitlines()) == len(merged)
    return merged


@pytest.fixture(scope="module")
def blocks_rows(sweep_env, tiny_demo) -> Path:
    """The ``blocks`` rows of one plain run: its generalization.json."""
    _study(["study.rows=blocks", "name=study_blocks"], sweep_env, tiny_demo)
    path = _sweep(sweep_env, "study_blocks") / "generalization.json"
    rows = json.loads(path.read_text())
    assert {r["group"] for r in rows} == {"blocks"} and len(rows) > 10
    return path


@pytest.fixture(scope="module")
def local_rows(sweep_env, tiny_demo, blocks_rows) -> list[dict]:
    _study(["-m", f"study.rows={','.join(GROUPS)}", f"study.previous={blocks_rows}",
            "name=study_local"], sweep_env, tiny_demo)
    return _check_merged(_sweep(sweep_env, "study_local"), json.loads(blocks_rows.read_text()))


def test_local_multirun_runs_a_job_per_row_group_and_merges_them(local_rows):
    names = [r["name"] for r in local_rows]
    assert "embedding" in names and len(names) == len(set(names))
    # identity and adapt used the dev-set best of the previous blocks rows
    best = max((r for r in local_rows if r["group"] == "blocks"),
               key=lambda r: r["dfdc_image_auc"])["blocks"]
    adapt = [r["blocks"] for r in local_rows if r["group"] == "adapt"]
    assert best in adapt


def test_a_group_needing_the_blocks_rows_fails_without_them(sweep_env, tiny_demo):
    proc = _study(["study.rows=identity", "name=study_noblocks"], sweep_env, tiny_demo,
                  check=False)
    assert proc.returncode != 0
    assert "use the dev-set best blocks of the `blocks` rows" in proc.stderr


def test_an_unknown_row_group_fails_by_name(sweep_env, tiny_demo):
    proc = _study(["study.rows=[blocks,nope]", "name=study_bad"], sweep_env, tiny_demo,
                  check=False)
    assert proc.returncode != 0
    assert "study.rows: unknown row group(s) ['nope']" in proc.stderr


@pytest.mark.slurm
def test_the_study_runs_on_the_slurm_test_cluster(sweep_env, tiny_demo, slurm_cluster,
                                                  blocks_rows, local_rows):
    """The same multirun through hydra/launcher=slurm: one array of a task per row group,
    the same rows (same cached features, same seeds) as the local launcher's."""
    env = {**slurm_cluster.env, **{k: v for k, v in sweep_env.items() if k.startswith(
        ("DEEPMETRIC_", "OMP_", "HYDRA_"))}, "OMP_NUM_THREADS": "1"}
    _study(["-m", "hydra/launcher=slurm", f"study.rows={','.join(GROUPS)}",
            f"study.previous={blocks_rows}", "name=study_slurm"], env, tiny_demo)
    sweep = _sweep(env, "study_slurm")
    rows = _check_merged(sweep, json.loads(blocks_rows.read_text()))
    assert [r["name"] for r in rows] == [r["name"] for r in local_rows]
    for mine, local in zip(rows, local_rows, strict=True):
        assert mine["dfdc_image_auc"] == pytest.approx(local["dfdc_image_auc"], abs=1e-6)
        assert mine["ffpp_video_auc"] == pytest.approx(local["ffpp_video_auc"], abs=1e-6)
    tasks = [p.name for p in (sweep / ".submitit").iterdir() if p.is_dir() and "_" in p.name]
    assert len(tasks) == len(GROUPS) and len({t.split("_")[0] for t in tasks}) == 1
