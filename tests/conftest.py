"""Shared fixtures: the ../shared data beside the repository (see ../shared/README.md)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEEPMETRIC_SHARED", REPO.parent / "shared"))
# Tests never touch the network, and every session starts from a fresh, empty cache
# (converted weights, features, demo data) in a temporary folder removed at the end: a
# cache left by an earlier run cannot hide a regression, and nothing is written into the
# repository. DEEPMETRIC_CACHE set by the caller wins (and is kept). Under pytest-xdist
# (`make test` runs two workers) each worker has its own: the folder the controller made
# (marked in _DEEPMETRIC_TEST_CACHE) is not the caller's.
_MADE, _PREVIOUS = "_DEEPMETRIC_TEST_CACHE", os.environ.get("_DEEPMETRIC_TEST_CACHE")
_OWN_CACHE = None
if not os.environ.get("DEEPMETRIC_CACHE") or (
        os.environ.get("PYTEST_XDIST_WORKER")
        and os.environ.get("DEEPMETRIC_CACHE") == _PREVIOUS):
    _OWN_CACHE = os.environ["DEEPMETRIC_CACHE"] = os.environ[_MADE] = tempfile.mkdtemp(
        prefix="deepmetric-test-cache-")
_DATA = os.environ.get("DEEPMETRIC_DATA")
if _DATA is None or (_OWN_CACHE and _PREVIOUS and _DATA.startswith(_PREVIOUS)):
    os.environ["DEEPMETRIC_DATA"] = str(Path(os.environ["DEEPMETRIC_CACHE"]) / "data")
os.environ.setdefault("DEEPMETRIC_OFFLINE", "1")
# Two threads (the CI machine's cores), or the cores shared out between xdist workers.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
if "OMP_NUM_THREADS" not in os.environ or os.environ.get("_DEEPMETRIC_TEST_OMP"):
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // _WORKERS)
                                        if _WORKERS > 1 else 2)
    os.environ["_DEEPMETRIC_TEST_OMP"] = "1"  # ours, not the caller's: a worker may reset it


def pytest_collection_modifyitems(config, items):
    """Groups for pytest-xdist's ``--dist loadgroup``: the tests of a module stay in one
    worker (its module fixtures are built once), and every module with a ``slurm`` test in
    one worker (one private SLURM cluster per session)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    slurm = {item.path for item in items if item.get_closest_marker("slurm")}
    for item in items:
        group = "slurm" if item.path in slurm else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"{path} is missing: CI must run with ../shared beside "
                                    "the repo")
        pytest.skip(f"{path} not found (../shared is absent on this machine)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED / "data")


@pytest.fixture(scope="session")
def faces_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "fixtures" / "faces")


@pytest.fixture(scope="session")
def ffpp_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "ffpp-c23")


@pytest.fixture(scope="session")
def dfdc_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "fixtures" / "dfdc-sample")


@pytest.fixture(scope="session")
def embedder():
    """The real CASIA-WebFace FaceNet (converted offline on first use)."""
    from deepmetric.features.backbones.facenet import FaceEmbedder

    return FaceEmbedder(batch_size=32, device="cpu")


@pytest.fixture(scope="session")
def detector():
    from deepmetric.video.faces import FaceDetector

    return FaceDetector(device="cpu")


@pytest.fixture(scope="session")
def ffpp_manifest(ffpp_dir: Path):
    """The FF++ clips as a manifest built from labels.csv (independent of the adapter)."""
    import pandas as pd

    from deepmetric.datasets.items import validate_manifest

    df = pd.read_csv(ffpp_dir / "labels.csv", dtype=str)
    df["video_id"] = df["path"]
    df["method"] = df["method"].replace({"original": "real"})
    return validate_manifest(df[["path", "label", "video_id", "group", "method"]],
                             root=ffpp_dir)


# -- a private one-node SLURM cluster (marker `slurm`) ---------------------------------------
@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running private SLURM cluster; its ``env`` points SLURM_CONF at it and sets this
    project's job resources for it (partition ``debug``, 1 CPU, 2 GB, no GPU)."""
    import shutil

    missing = [d for d in ("munged", "slurmctld", "slurmd", "sbatch", "squeue")
               if shutil.which(d) is None]
    if missing:
        msg = (f"SLURM not installed ({', '.join(missing)} missing): apt-get install -y "
               "slurm-wlm munge (make venv does it as root)")
        if os.environ.get("CI"):
            raise RuntimeError(msg)
        pytest.skip(msg)
    from benchmarks.slurm_cluster import SlurmCluster

    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of small-tensor tests: faster than several on a busy
    machine (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture
def cli(capsys):
    """``deepmetric ARGS...`` run in this process by ``deepmetric.cli.main``: a
    ``subprocess.CompletedProcess`` (``returncode``, ``stdout``, ``stderr``). No interpreter
    or torch start-up per call; tests of the command's own process start it themselves."""
    import subprocess

    from deepmetric.cli import main

    def call(*args: object) -> subprocess.CompletedProcess:
        argv = [str(a) for a in args]
        capsys.readouterr()
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            rc = exc.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(argv, rc, out, err)
    return call
