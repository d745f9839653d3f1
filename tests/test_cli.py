"""``deepmetric predict`` as a user runs it: the installed console script, real files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LEGACY = Path(__file__).parent / "data" / "model-0.1.0.joblib"
SCRIPT = Path(sys.executable).parent / "deepmetric"


def _run(*args: str) -> subprocess.CompletedProcess:
    exe = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "deepmetric.cli"]
    return subprocess.run([*exe, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, faces_dir, dfdc_dir):
    d = tmp_path_factory.mktemp("inputs")
    photo = next(iter(sorted((faces_dir / "test_images").rglob("*.jpg"))))
    shutil.copy(photo, d / "photo.jpg")
    crop = next(iter(sorted((dfdc_dir).rglob("*.png")))) if list(dfdc_dir.rglob("*.png")) \
        else next(iter(sorted(dfdc_dir.rglob("*.jpg"))))
    shutil.copy(crop, d / f"crop{crop.suffix}")
    (d / "notes.txt").write_text("not media")  # ignored: not a media file
    return d


def test_predict_a_folder_prints_one_line_per_media_file(folder):
    proc = _run("predict", str(LEGACY), str(folder))
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 2 and all(ln.split()[0] in ("REAL", "FAKE") for ln in lines)
    assert any("photo.jpg" in ln for ln in lines) and not any("notes" in ln for ln in lines)


def test_predict_json_has_score_verdict_and_frames(folder):
    proc = _run("predict", str(LEGACY), str(folder / "photo.jpg"), "--json")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0 <= rec["score"] <= 1 and rec["verdict"] in ("real", "fake")
    assert rec["n_faces"] >= 1 and rec["path"].endswith("photo.jpg")


def test_predict_names_a_missing_model_and_empty_input(tmp_path, folder):
    proc = _run("predict", str(tmp_path / "none.joblib"), str(folder))
    assert proc.returncode != 0 and "none.joblib" in proc.stderr + proc.stdout
    proc = _run("predict", str(LEGACY), str(tmp_path))
    assert proc.returncode == 2 and "no media file" in proc.stderr
