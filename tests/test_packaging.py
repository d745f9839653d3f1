"""The wheel and sdist that ``python -m build`` makes: one version, the licence, the configs.

The wheel is installed (not editable, no dependencies: they are this venv's) into a folder
of its own, and the Hydra entry point runs from there, in a directory away from the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import deepmetric

pytestmark = pytest.mark.slow  # builds, installs and runs the wheel

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Built from a copy of the files git knows (tracked or not ignored), as in a fresh clone:
    a stale ``build/`` folder of the checkout cannot slip old modules into the wheel."""
    import shutil

    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, check=True, capture_output=True)
    for rel in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out),
                    str(src)], check=True, capture_output=True, text=True, timeout=600)
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_one_version_and_the_licence(dists: dict[str, Path]) -> None:
    version = deepmetric.__version__
    assert dists["wheel"].name.startswith(f"deepmetric-{version}-py3")
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = whl.namelist()
        meta = whl.read(f"deepmetric-{version}.dist-info/METADATA").decode()
    assert f"\nVersion: {version}\n" in meta
    assert "\nLicense-Expression: MIT\n" in meta
    assert "\nRequires-Python: <3.13,>=3.11\n" in meta
    assert "Requires-Dist: facenet-pytorch<2.6,>=2.5.3" in meta
    assert f"deepmetric-{version}.dist-info/licenses/LICENSE" in names
    with tarfile.open(dists["sdist"]) as sdist:
        members = {m.split("/", 1)[1] for m in sdist.getnames() if "/" in m}
    assert {"LICENSE", "pyproject.toml", "README.md",
            "experiments/conf/config.yaml"} <= members


def test_the_wheel_carries_every_config_and_runs_from_anywhere(dists: dict[str, Path],
                                                               tmp_path: Path) -> None:
    with zipfile.ZipFile(dists["wheel"]) as whl:
        in_wheel = {n for n in whl.namelist() if n.startswith("experiments/conf/")}
    in_repo = {p.relative_to(REPO).as_posix() for p in (REPO / "experiments" / "conf").rglob("*")
               if p.is_file() and p.suffix == ".yaml"}
    assert in_repo and in_repo == in_wheel

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                    "--target", str(site), str(dists["wheel"])], check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import deepmetric, experiments; print(deepmetric.__file__); "
            "print(experiments.__file__); print(deepmetric.__version__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    assert out[0].startswith(str(site)) and out[1].startswith(str(site))
    assert out[2] == deepmetric.__version__
    cli = subprocess.run([sys.executable, "-m", "deepmetric.cli", "--version"], cwd=tmp_path,
                         env=env, check=True, capture_output=True, text=True).stdout
    assert cli.strip() == f"deepmetric {deepmetric.__version__}"
    cfg = subprocess.run([sys.executable, "-m", "experiments.run", "--cfg", "job",
                          "exp=cross_dataset", "data=ffpp"], cwd=tmp_path, env=env,
                         check=True, capture_output=True, text=True, timeout=300).stdout
    assert "name: cross_dataset" in cfg and "deepmetric.datasets.ffpp" in cfg


def test_the_wheel_carries_the_packaged_model_and_its_card(dists: dict[str, Path],
                                                           tmp_path: Path) -> None:
    """Issue #32: `deepmetric info` (and predict) work from the installed wheel alone."""
    from deepmetric.pretrained import PACKAGED

    with zipfile.ZipFile(dists["wheel"]) as whl:
        sizes = {i.filename: i.file_size for i in whl.infolist()}
    for rel in PACKAGED.values():
        assert 10_000 < sizes[f"deepmetric/{rel}"] < 2_000_000  # a head, no network weights
    assert dists["wheel"].stat().st_size < 3_000_000
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                    "--target", str(site), str(dists["wheel"])], check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site)}
    card = subprocess.run([sys.executable, "-m", "deepmetric.cli", "info"], cwd=tmp_path,
                          env=env, check=True, capture_output=True, text=True).stdout
    assert card.startswith("Model card: cross_dataset") and str(site) in card
    assert "research" in card and "Threshold:" in card and "DFDC" in card
