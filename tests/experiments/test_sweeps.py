"""Sweeps end to end on a tiny demo set: a local grid multirun, a short Optuna study in
SQLite, the SLURM launcher config (no cluster), and two jobs sharing one feature cache.

The jobs run as ``python -m experiments.run`` subprocesses, exactly as a user starts them,
with outputs in a temporary folder. They share the tests' cache (``$DEEPMETRIC_CACHE``, set
by ``tests/conftest.py``): converted weights, the tiny demo clips (built once, by the
session fixture) and their features (extracted by the first job, reused by the others).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from experiments.summarize import summarize

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "experiments" / "conf"
# A quick pipeline (the tiny demo and its overrides: tests/experiments/conftest.py).
TINY = ["extractor.n_frames=3", "projector.epochs=5", "cv.n_splits=2", "plots=false",
        "save_model=false", "extractor.progress=false"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _run(args: list[str], env: dict[str, str], timeout: int = 600):
    proc = subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _sweep_dir(env: dict[str, str], name: str) -> Path:
    dirs = [p for p in (Path(env["DEEPMETRIC_OUTPUTS"]) / name).iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_local_grid_multirun_and_summary(sweep_env, tiny_demo):
    _run(["-m", "projector.margin=0.2,0.5", "classifier=rf,sgd", *TINY, *tiny_demo.overrides],
         sweep_env)
    sweep = _sweep_dir(sweep_env, "triplet_rf")

    df = summarize(sweep)
    assert len(df) == 4 and (df["status"] == "ok").all()
    assert set(zip(df["projector.margin"], df["classifier"], strict=True)) == {
        (0.2, "rf"), (0.2, "sgd"), (0.5, "rf"), (0.5, "sgd")}
    assert df["video_auc"].between(0, 1).all() and df["frame_auc"].between(0, 1).all()
    assert df["video_auc"].is_monotonic_decreasing
    for _, row in df.iterrows():  # each row is its own job's metrics.json
        m = json.loads((Path(row["path"]) / "metrics.json").read_text())
        assert row["video_auc"] == pytest.approx(m["test"]["video"]["auc"])
        assert m["data"]["n_videos"] == len(tiny_demo.items)

    # the CLI writes summary.csv / summary.md into the multirun folder and prints the table
    cli = subprocess.run([sys.executable, "-m", "experiments.summarize", str(sweep)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "4 jobs: 4 ok, 0 failed" in cli.stdout
    table = pd.read_csv(sweep / "summary.csv")
    assert len(table) == 4 and table["video_auc"].tolist() == df["video_auc"].tolist()
    assert "| projector.margin | classifier |" in (sweep / "summary.md").read_text()


def test_submitit_local_launcher_runs_a_job(sweep_env, tiny_demo):
    """hydra-submitit-launcher 1.2.0 with this hydra-core and submitit: the job is pickled,
    run in a fresh process and its result comes back (the SLURM code path, no scheduler)."""
    _run(["-m", "hydra/launcher=local", "name=submitit_local", "projector.margin=0.3", *TINY,
          *tiny_demo.overrides], sweep_env)
    sweep = _sweep_dir(sweep_env, "submitit_local")
    df = summarize(sweep)
    assert len(df) == 1 and df["status"].iloc[0] == "ok" and 0 <= df["video_auc"].iloc[0] <= 1
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 1


@pytest.mark.filterwarnings("ignore:Deprecated API features detected")  # optuna 2.10 + SQLA 1.4
def test_optuna_sweep_in_sqlite(sweep_env, tiny_demo):
    import optuna

    # hydra.mode is MULTIRUN in the config: no -m
    _run(["+hparams_search=triplet_rf", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
          *TINY, *tiny_demo.overrides], sweep_env)
    name = "triplet_rf_optuna"
    db = Path(sweep_env["DEEPMETRIC_OUTPUTS"]) / name / "optuna.db"
    assert db.is_file()  # its folder was made by SummaryCallback before the study opened
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == len(done) == 2
    assert all(set(t.params) == {"projector.margin", "projector.out_dim", "projector.lr",
                                 "classifier.n_estimators"} for t in done)
    assert all(0 <= t.value <= 1 for t in done)

    # trial values are the jobs' video AUCs; the callback wrote the summary
    sweep = _sweep_dir(sweep_env, name)
    df = pd.read_csv(sweep / "summary.csv")
    assert len(df) == 2 and (df["status"] == "ok").all()
    assert sorted(t.value for t in done) == pytest.approx(sorted(df["video_auc"]))
    assert study.best_value == pytest.approx(df["video_auc"].iloc[0])
    assert (sweep / "optimization_results.yaml").is_file()


SLURM_DEFAULTS = {"partition": "gpu", "account": "lab42", "qos": None, "gpus_per_task": 1,
                  "cpus_per_task": 6, "mem_gb": 32, "timeout_min": 120,
                  "array_parallelism": 16, "max_num_timeout": 0, "nodes": 1,
                  "tasks_per_node": 1, "setup": None, "additional_parameters": {}}
# The command lines of docs/sweeps.md → the launcher parameters they must give (with
# SLURM_ACCOUNT=lab42 and DEEPMETRIC_SLURM_CPUS=6 in the environment).
DOCUMENTED = [
    (["hydra/launcher=slurm", "data=ffpp", "data.root=/data/ffpp"], SLURM_DEFAULTS),
    (["hydra/launcher=slurm", "data=ffpp", "data.root=/data/ffpp",
      "projector.margin=0.1,0.2,0.5", "classifier=rf,sgd,knn"], SLURM_DEFAULTS),
    (["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=30",
      "hydra.launcher.gpus_per_task=null", 'hydra.launcher.setup=["module load cuda/12.4"]',
      "+hydra.launcher.additional_parameters.mail-type=END"],
     {**SLURM_DEFAULTS, "partition": "debug", "timeout_min": 30, "gpus_per_task": None,
      "setup": ["module load cuda/12.4"], "additional_parameters": {"mail-type": "END"}}),
    (["+hparams_search=triplet_rf", "hydra/launcher=slurm", "hydra.sweeper.n_jobs=8",
      "data=ffpp", "data.root=/data/ffpp"], SLURM_DEFAULTS),
    (["hydra/launcher=local", "projector.margin=0.2,0.5"], {"gpus_per_node": 0,
                                                            "timeout_min": 60}),
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "projector.margin=0.2,0.5",
      "classifier=rf,sgd"], {"n_jobs": 2}),
]


def _clean_env(monkeypatch) -> None:
    """Drop the launcher variables of the developer's shell: the defaults are under test."""
    for var in [v for v in os.environ if v.startswith(("DEEPMETRIC_SLURM_", "DEEPMETRIC_LOCAL_",
                                                        "DEEPMETRIC_OPTUNA_"))]:
        monkeypatch.delenv(var)
    for var in ("SLURM_PARTITION", "SLURM_ACCOUNT", "SLURM_QOS"):
        monkeypatch.delenv(var, raising=False)


def _jobs(overrides: list[str]) -> list[list[str]]:
    """The override lists of every job of a grid sweep (``key=a,b`` expanded)."""
    choices = [[f"{o.split('=', 1)[0]}={v}" for v in o.split("=", 1)[1].split(",")]
               if "," in o else [o] for o in overrides]
    return [list(combo) for combo in itertools.product(*choices)]


@pytest.mark.parametrize("sweep,expected", DOCUMENTED,
                         ids=[f"{i}:{o[0]}" for i, (o, _) in enumerate(DOCUMENTED)])
def test_documented_launcher_overrides_compose(sweep, expected, monkeypatch):
    """Every job of the documented sweeps composes, and the launcher instantiates from it
    (every value resolved and type-checked against the plugin's schema)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    _clean_env(monkeypatch)
    monkeypatch.setenv("SLURM_ACCOUNT", "lab42")
    monkeypatch.setenv("DEEPMETRIC_SLURM_CPUS", "6")
    for overrides in _jobs(sweep):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
        launcher = instantiate(cfg.hydra.launcher)
        params = getattr(launcher, "params", None) or launcher.joblib
        assert {k: params[k] for k in expected} == expected, overrides
        if "hydra/launcher=slurm" in overrides:
            assert type(launcher).__name__ == "SlurmLauncher"
            assert params["name"] == cfg.name
            assert params["submitit_folder"].endswith("/.submitit/%j")
        if "+hparams_search=triplet_rf" in overrides:
            assert cfg.hydra.sweeper.n_jobs == 8 and cfg.hydra.mode.name == "MULTIRUN"
            assert cfg.hydra.sweeper.storage.endswith("/triplet_rf_optuna/optuna.db")


def test_slurm_launcher_params_make_a_valid_sbatch_script(tmp_path, monkeypatch):
    """submitit itself renders the launcher's parameters (as hydra-submitit-launcher 1.2.0's
    ``launch`` passes them), so a key or value submitit rejects fails here, not on a cluster."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import _make_sbatch_string

    # SlurmExecutor only checks that `srun` exists; nothing is submitted or run.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    _clean_env(monkeypatch)
    monkeypatch.setenv("SLURM_PARTITION", "gpu-long")
    monkeypatch.setenv("SLURM_ACCOUNT", "lab42")
    monkeypatch.setenv("DEEPMETRIC_SLURM_MEM_GB", "48")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm",
                                           "hydra.launcher.array_parallelism=2",
                                           f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                      return_hydra_config=True)
    params = dict(instantiate(cfg.hydra.launcher).params)
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v
                                  for k, v in params.items()})
    script = _make_sbatch_string(command="python -u -m submitit.core._submit x",
                                 folder=executor.folder, map_count=4,
                                 **executor._executor.parameters)
    for line in ("--partition=gpu-long", "--account=lab42", "--gpus-per-task=1",
                 "--cpus-per-task=8", "--mem=48GB", "--time=120", "--array=0-3%2",
                 "--job-name=triplet_rf"):
        assert f"#SBATCH {line}" in script, (line, script)
    assert "@120" in next(x for x in script.splitlines() if x.startswith("#SBATCH --signal="))


EXTRACT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import pandas as pd
    from deepmetric.features.extract import Extractor

    items, cache, me, reverse = pd.read_pickle(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    if reverse == "1":  # walk the clips from the other end: the two jobs meet in the middle
        items = items.iloc[::-1].reset_index(drop=True)
    ex = Extractor(n_frames=2, cache_dir=cache, progress=False)
    sync = Path(cache).parent
    (sync / f"ready-{me}").touch()
    deadline = time.time() + 300
    while len(list(sync.glob("ready-*"))) < 2 and time.time() < deadline:
        time.sleep(0.01)
    print(json.dumps(ex.run(items).to_dict()))
""")


def test_two_jobs_extract_each_clip_once(tmp_path, tiny_demo, sweep_env):
    """Two concurrent jobs on one cache: both finish, every clip is extracted once, files
    are whole (per-clip lock + atomic writes in deepmetric.features.cache)."""
    from deepmetric.features.cache import read_npz
    from deepmetric.features.extract import Extractor

    items = tiny_demo.items.iloc[:4].reset_index(drop=True)
    items.to_pickle(tmp_path / "items.pkl")
    (tmp_path / "extract.py").write_text(EXTRACT)
    cache = tmp_path / "sync" / "features"
    cache.parent.mkdir()
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "extract.py"),
                               str(tmp_path / "items.pkl"), str(cache), str(i), str(i)],
                              cwd=REPO, env=sweep_env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))

    n = len(items)
    assert [r["n_failed"] for r in reports] == [0, 0]
    assert all(r["n_extracted"] + r["n_cached"] == n for r in reports)
    assert sum(r["n_extracted"] for r in reports) == n, reports
    ex = Extractor(n_frames=2, cache_dir=cache, progress=False)
    files = sorted(ex.cache.dir.glob("*.npz"))
    assert len(files) == n and {ex.cache.path_for(p) for p in items["path"]} == set(files)
    for f in files:
        arrays = read_npz(f, ("frame_index", "found", "embedding"))
        assert arrays["found"].shape == (2,) and arrays["embedding"].shape == (2, 512)
    assert not list(ex.cache.dir.glob("*.tmp")) and not list(ex.cache.dir.glob("*.corrupt"))
    assert len(ex.features(items).frames) == sum(read_npz(f)["found"].sum() for f in files)


@pytest.mark.slurm
def test_grid_sweep_on_the_slurm_test_cluster(sweep_env, tiny_demo, slurm_cluster):
    """A grid of two jobs through hydra/launcher=slurm on a live (private) SLURM cluster
    (the grid's expansion is tested locally above): one job array of 2 tasks, summarised; no
    sacct warning although the cluster has no accounting storage (the job states come from
    squeue, experiments.callbacks.SlurmStatesCallback)."""
    env = {**slurm_cluster.env, **{k: v for k, v in sweep_env.items() if k.startswith(
        ("DEEPMETRIC_", "OMP_", "HYDRA_"))}, "OMP_NUM_THREADS": "1"}
    proc = _run(["-m", "hydra/launcher=slurm", "name=slurm_grid", "projector.margin=0.2,0.5",
                 "classifier=sgd", *TINY, *tiny_demo.overrides], env)
    assert "sacct" not in proc.stdout + proc.stderr
    sweep = _sweep_dir(env, "slurm_grid")
    df = summarize(sweep)
    assert len(df) == 2 and (df["status"] == "ok").all()
    assert set(zip(df["projector.margin"], df["classifier"], strict=True)) == {
        (0.2, "sgd"), (0.5, "sgd")}
    assert df["video_auc"].between(0, 1).all()
    # one array: every task's sbatch logs under .submitit/<array id>_<task>/ (submitit also
    # writes the array's submission script under .submitit/<array id>/)
    tasks = sorted(p.name for p in (sweep / ".submitit").iterdir()
                   if p.is_dir() and "_" in p.name)
    assert len(tasks) == 2 and len({t.split("_")[0] for t in tasks}) == 1
