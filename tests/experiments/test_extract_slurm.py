"""``python -m experiments.extract`` on a live private SLURM cluster (the ``slurm_cluster``
fixture of tests/conftest.py), as a user starts it, over 40 DFDC face crops:

- a sharded extraction (a 2-task job array) leaves the cache an in-process extraction of
  the same manifest leaves: the same files with the same bytes;
- a shard cancelled mid-way (scancel), or whose Python is killed with SIGKILL, is reported
  (exit 1, shard, job id, log), and the same command again extracts only what is missing
  and ends with that same cache;
- a shard job that fails is reported with its SLURM job id and log path;
- the extract.slurm resources are the hydra/launcher=slurm ones (no cluster needed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "experiments" / "conf"
N_ITEMS = 40

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _args(tmp: Path, name: str, *extra: str) -> list[str]:
    # image_batch=4: several image passes per shard, so a cancel can land between them
    return ["data=dfdc_faces", f"data.head={N_ITEMS}", "extract.threads=1",
            "extractor.image_batch=4", "extractor.progress=false",
            f"extractor.cache_dir={tmp / name / 'cache'}",
            f"extract.folder={tmp / name / 'shards'}", f"hydra.run.dir={tmp / name / 'run'}",
            *extra]


def _env(shared_dir: Path, base: dict | None = None) -> dict[str, str]:
    return {**(base or os.environ), "DFDC_FACES_ROOT": str(shared_dir / "dfdc-faces"),
            "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


def _extract(args: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "experiments.extract", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=500)
    if check:
        assert proc.returncode == 0, f"{args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _cache(root: Path) -> dict[str, bytes]:
    """Every cache file (the settings and the per-item .npz files) by relative path; the
    lock files and the per-process fingerprint index are compared by :func:`_index`."""
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
             if p.is_file() and not {"locks", "fingerprints"} & set(p.parts)}
    assert not [f for f in files if f.endswith(".tmp")], "a temp file was left behind"
    return files


def _index(root: Path) -> dict[str, str]:
    """The on-disk fingerprint index (every process's file): media path -> fingerprint,
    checked to agree wherever two processes hashed the same file."""
    out: dict[str, str] = {}
    for f in (root / "fingerprints").glob("*.tsv"):
        for line in f.read_text().splitlines():
            path, *_, fp = line.split("\t")
            assert out.setdefault(path, fp) == fp, f"two fingerprints for {path}"
    return out


def _report(tmp: Path, name: str) -> dict:
    return json.loads((tmp / name / "run" / "extraction.json").read_text())


def _start_until_mid_way(args: list[str], env: dict, run: Path, shard: int):
    """Start ``experiments.extract`` and return (process, progress) once ``shard`` has
    finished 3 items and fewer than half of them."""
    proc = subprocess.Popen([sys.executable, "-m", "experiments.extract", *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = run / "shards" / "data" / f"shard-{shard:04d}.progress"
    deadline, state = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        try:
            state = json.loads(progress.read_text())
        except (OSError, ValueError):
            state = None
        if state and 3 <= state["finished"] < N_ITEMS // 2:
            return proc, state
        time.sleep(0.05)
    raise AssertionError(f"shard {shard} never reported progress mid-way: {state}")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("extract")


@pytest.fixture(scope="module")
def reference(work, shared_dir) -> dict[str, bytes]:
    """One uninterrupted in-process extraction of the manifest (extract.executor=none)."""
    _extract(_args(work, "ref"), _env(shared_dir))
    rep = _report(work, "ref")
    assert rep["executor"] == "none" and rep["jobs"] == 1
    assert rep["n_items"] == rep["n_extracted"] == N_ITEMS and rep["n_failed"] == 0
    files = _cache(work / "ref" / "cache")
    assert sum(f.endswith(".npz") for f in files) == N_ITEMS
    assert len(_index(work / "ref" / "cache")) == N_ITEMS  # every file's fingerprint kept
    return files


@pytest.mark.slurm
def test_sharded_slurm_extraction_equals_one_process(work, reference, slurm_cluster,
                                                     shared_dir):
    proc = _extract(_args(work, "slurm", "extract.jobs=2", "extract.executor=slurm",
                          "extract.poll_s=2"), _env(shared_dir, slurm_cluster.env))
    rep = _report(work, "slurm")
    assert rep["executor"] == "slurm" and rep["jobs"] == 2 and rep["failed_shards"] == []
    assert rep["n_extracted"] == N_ITEMS and rep["n_cached"] == 0
    shards = rep["shards"]
    assert [s["n_items"] for s in shards] == [N_ITEMS // 2] * 2
    array = shards[0]["job_id"].split("_")[0]
    assert [s["job_id"] for s in shards] == [f"{array}_0", f"{array}_1"]
    assert all(s["state"] == "COMPLETED" and s["threads"] == 1 for s in shards)
    assert all(Path(s["stderr"]).is_file() for s in shards)
    assert f"submitted 2 shard job(s) (slurm): {array} array" in proc.stdout
    assert "sacct" not in proc.stdout + proc.stderr  # no accounting storage, no warning
    assert _cache(work / "slurm" / "cache") == reference
    assert _index(work / "slurm" / "cache") == _index(work / "ref" / "cache")


@pytest.mark.slurm
def test_cancelled_shard_then_rerun_extracts_only_the_rest(work, reference, slurm_cluster,
                                                           shared_dir):
    env = _env(shared_dir, slurm_cluster.env)
    args = _args(work, "killed", "extract.jobs=2", "extract.executor=slurm", "extract.poll_s=2")
    proc, state = _start_until_mid_way(args, env, work / "killed", shard=0)
    assert state["job"]
    subprocess.run(["scancel", state["job"]], env=env, check=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out[-2000:] + err[-3000:]
    rep = _report(work, "killed")
    assert rep["failed_shards"] == [0]
    bad = rep["shards"][0]
    assert bad["state"] == "CANCELLED" and bad["job_id"].endswith("_0")
    message = f"shard 0/2 job {bad['job_id']}: CANCELLED"
    assert message in out + err and bad["stderr"] in out + err
    done_before = len(list((work / "killed" / "cache").rglob("*.npz")))
    assert rep["shards"][1]["n_extracted"] == N_ITEMS // 2  # the other shard finished
    assert state["finished"] <= done_before - N_ITEMS // 2 < N_ITEMS // 2, \
        "the cancel did not land mid-way"

    _extract(args, env)  # the same command again
    rep = _report(work, "killed")
    assert rep["failed_shards"] == [] and rep["n_cached"] == done_before
    assert rep["n_extracted"] == N_ITEMS - done_before
    assert rep["shards"][1]["n_extracted"] == 0  # shard 1 had finished: nothing redone
    assert _cache(work / "killed" / "cache") == reference
    assert _index(work / "killed" / "cache") == _index(work / "ref" / "cache")


@pytest.mark.slurm
def test_a_shard_killed_with_sigkill_then_rerun_ends_with_the_same_cache(work, reference,
                                                                        slurm_cluster,
                                                                        shared_dir):
    """SIGKILL runs no handler (unlike scancel's SIGTERM): the shard's Python dies wherever it
    is, maybe inside a cache write. The job is reported as failed, and the rerun leaves no
    temp file and the same cache as one uninterrupted process."""
    env = _env(shared_dir, slurm_cluster.env)
    args = _args(work, "sigkill", "extract.jobs=2", "extract.executor=slurm",
                 "extract.poll_s=2")
    proc, state = _start_until_mid_way(args, env, work / "sigkill", shard=1)
    assert state["pid"]
    os.kill(state["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out[-2000:] + err[-3000:]
    rep = _report(work, "sigkill")
    assert rep["failed_shards"] == [1]
    bad = rep["shards"][1]
    assert bad["job_id"].endswith("_1") and bad["state"] not in ("COMPLETED", None)
    assert f"shard 1/2 job {bad['job_id']}: {bad['state']}" in out + err
    done_before = len(list((work / "sigkill" / "cache").rglob("*.npz")))
    assert done_before < N_ITEMS, "the kill did not land mid-way"

    _extract(args, env)  # the same command again
    rep = _report(work, "sigkill")
    assert rep["failed_shards"] == [] and rep["n_cached"] == done_before
    assert rep["n_extracted"] == N_ITEMS - done_before and rep["shards"][0]["n_extracted"] == 0
    assert _cache(work / "sigkill" / "cache") == reference  # no .tmp left, same bytes
    # the killed shard's unwritten index lines were hashed again by the rerun
    assert _index(work / "sigkill" / "cache") == _index(work / "ref" / "cache")


@pytest.mark.slurm
def test_a_failing_shard_is_reported_with_job_id_and_log(work, slurm_cluster, shared_dir,
                                                         tmp_path):
    missing = tmp_path / "no-such-weights.pt"
    proc = _extract(_args(work, "failing", "extract.jobs=2", "extract.executor=slurm",
                          "extract.poll_s=2", f"embedder.weights_path={missing}"),
                    _env(shared_dir, slurm_cluster.env), check=False)
    assert proc.returncode == 1
    rep = _report(work, "failing")
    assert rep["failed_shards"] == [0, 1] and rep["n_extracted"] == 0
    for s in rep["shards"]:
        assert s["state"] == "FAILED" and str(missing) in s["error"]
        assert Path(s["stderr"]).is_file() and s["job_id"].split("_")[1] == str(s["index"])
        said = proc.stdout + proc.stderr
        assert f"shard {s['index']}/2 job {s['job_id']}: FAILED" in said and s["stderr"] in said


def test_extract_slurm_resources_are_the_launcher_ones(monkeypatch):
    """conf/extract/default.yaml repeats hydra/launcher/slurm.yaml's values: same env
    variables, same defaults (checked with and without the variables set)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    for env in ({}, {"SLURM_PARTITION": "cpu", "SLURM_ACCOUNT": "lab", "DEEPMETRIC_SLURM_GPUS":
                     "null", "DEEPMETRIC_SLURM_CPUS": "3", "DEEPMETRIC_SLURM_MEM_GB": "7",
                     "DEEPMETRIC_SLURM_TIMEOUT_MIN": "9",
                     "DEEPMETRIC_SLURM_ARRAY_PARALLELISM": "4"}):
        for var in [v for v in os.environ if v.startswith(("DEEPMETRIC_SLURM_", "SLURM_"))]:
            monkeypatch.delenv(var)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("extract", overrides=["hydra/launcher=slurm"],
                          return_hydra_config=True)
        ours = cfg.extract.slurm
        launcher = cfg.hydra.launcher
        shared = [k for k in ours if k not in ("name", "max_num_timeout")]
        assert {k: ours[k] for k in shared} == {k: launcher[k] for k in shared}, env
        assert cfg.extract.jobs == 1 and cfg.extract.executor == "none"
