"""``deepmetric predict`` as a user runs it: the installed console script, real files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the real networks on real media

LEGACY = Path(__file__).parent / "data" / "model-0.1.0.joblib"
SCRIPT = Path(sys.executable).parent / "deepmetric"


def _run(*args: str) -> subprocess.CompletedProcess:
    """The installed ``deepmetric`` command in a process of its own."""
    exe = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "deepmetric.cli"]
    return subprocess.run([*exe, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """The 0.1.0 fixture model saved again as data (model.skops), as a user would."""
    from deepmetric.model import DeepfakeModel

    with pytest.warns(UserWarning, match="loading a pickle"):
        old = DeepfakeModel.load(LEGACY, trust_pickle=True)
    return old.save(tmp_path_factory.mktemp("model") / "model.skops")


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


def test_predict_a_folder_prints_one_line_per_media_file(cli, model, folder):
    proc = cli("predict", str(model), str(folder))
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 2 and all(ln.split()[0] in ("REAL", "FAKE") for ln in lines)
    assert any("photo.jpg" in ln for ln in lines) and not any("notes" in ln for ln in lines)


def test_predict_json_has_score_verdict_and_frames(cli, model, folder):
    proc = cli("predict", str(model), str(folder / "photo.jpg"), "--json")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0 <= rec["score"] <= 1 and rec["verdict"] in ("real", "fake")
    assert rec["n_faces"] >= 1 and rec["path"].endswith("photo.jpg")


def test_predict_names_a_missing_model_and_empty_input(cli, model, tmp_path, folder):
    proc = cli("predict", str(tmp_path / "none.skops"), str(folder))
    assert proc.returncode == 2 and "none.skops: model file not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli("predict", str(model), str(tmp_path))
    assert proc.returncode == 2 and "no media file" in proc.stderr


def test_predict_loads_a_pickle_only_with_trust_pickle(cli, model, folder):
    """Issue #20: a model.joblib of earlier versions is a pickle: refused before it is read, unless
    the user says they trust it; then it scores what the data file scores."""
    proc = _run("predict", str(LEGACY), str(folder / "photo.jpg"))
    assert proc.returncode == 2 and not proc.stdout
    assert "model-0.1.0.joblib: refused: this is a pickle" in proc.stderr
    assert "--trust-pickle" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.warns(UserWarning, match="loading a pickle"):
        trusted = cli("predict", str(LEGACY), str(folder / "photo.jpg"), "--trust-pickle")
    assert trusted.returncode == 0, trusted.stderr
    data = cli("predict", str(model), str(folder / "photo.jpg"))
    assert trusted.stdout.split()[:2] == data.stdout.split()[:2]  # same verdict and score


def test_predict_never_runs_a_malicious_pickle_without_the_flag(cli, tmp_path, folder):
    import joblib

    marker = tmp_path / "marker.txt"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran')",)

    joblib.dump(Payload(), evil := tmp_path / "shared-model.skops")  # a pickle, named .skops
    proc = cli("predict", str(evil), str(folder))
    assert proc.returncode == 2 and "shared-model.skops: refused: this is a pickle" in proc.stderr
    assert not marker.exists()
    with pytest.warns(UserWarning, match="loading a pickle"):
        proc = cli("predict", str(evil), str(folder), "--trust-pickle")
    assert proc.returncode == 2 and "not a deepmetric model" in proc.stderr
    assert marker.read_text() == "ran"  # the flag really is the user's trust


def test_threshold_sets_this_runs_verdicts_and_is_checked(cli, model, folder):
    base = [json.loads(ln) for ln in cli("predict", str(model), str(folder),
                                          "--json").stdout.splitlines()]
    for t in (0.0, min(r["score"] for r in base) + 1e-9, 1.0):
        proc = cli("predict", str(model), str(folder), "--json", "--threshold", str(t))
        recs = [json.loads(ln) for ln in proc.stdout.splitlines()]
        assert proc.returncode == 0 and [r["score"] for r in recs] == [r["score"] for r in base]
        assert [r["verdict"] for r in recs] == ["fake" if r["score"] >= t else "real"
                                                for r in recs]
    assert {r["verdict"] for r in recs} == {"real"} or max(r["score"] for r in recs) >= 1.0
    proc = cli("predict", str(model), str(folder), "--threshold", "1.5")
    assert proc.returncode == 2 and "must be between 0 and 1, got 1.5" in proc.stderr
    proc = cli("predict", str(model), str(folder), "--threshold", "high")
    assert proc.returncode == 2 and "not a number: 'high'" in proc.stderr


def test_help_is_plain_text():
    proc = _run("--help")
    assert proc.returncode == 0 and "deepmetric predict [MODEL] PATH" in proc.stdout
    assert "``" not in proc.stdout and ":meth:" not in proc.stdout
    assert "(predict_many)" in proc.stdout


def test_predict_without_a_model_scores_a_clip_and_a_photo_with_the_packaged_model(
        cli, folder, dfdc_dir):
    """Issue #32: nothing to train first; the packaged model scores and is named."""
    from deepmetric.pretrained import packaged_path

    clip = sorted((dfdc_dir / "train_sample_videos").glob("*.mp4"))[0]
    proc = _run("predict", str(clip), str(folder / "photo.jpg"), "--json")
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert [Path(r["path"]).name for r in recs] == [clip.name, "photo.jpg"]
    assert recs[0]["n_frames"] == 25 and 0 < recs[0]["n_faces"] <= 25 and recs[1]["n_faces"] == 1
    assert all(0 <= r["score"] <= 1 and r["model"].startswith("cross_dataset-") for r in recs)
    assert f"scoring with the packaged model cross_dataset ({packaged_path()})" in proc.stderr
    assert "smoke-test" not in proc.stderr
    # the same model named as a file scores the same
    named = cli("predict", "--model", str(packaged_path()), str(folder / "photo.jpg"),
                 "--json")
    assert json.loads(named.stdout)["score"] == recs[1]["score"]


def test_info_prints_the_packaged_card_and_any_models_card(cli, model):
    proc = cli("info")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("Model card: cross_dataset\n")
    for needle in ("Training data:", "FaceForensics++", "research", "Measured:",
                   "image-level AUC, all crops pooled", "$ python -m experiments.run "
                   "exp=cross_dataset", "Threshold:", "Intended use:", "Limits:"):
        assert needle in out, needle
    own = cli("info", str(model))
    assert own.returncode == 0 and own.stdout.startswith("Model card: legacy-0.1.0-fixture")
    assert "Threshold: 0.500" in own.stdout and "not tuned" in own.stdout
    missing = cli("info", "none.skops")
    assert missing.returncode == 2 and "none.skops: model file not found" in missing.stderr


def test_a_smoke_test_model_warns(cli, model, folder, tmp_path):
    """A model trained on the built-in demo data says so before its scores."""
    from deepmetric.model import DeepfakeModel, SmokeTestWarning

    demo = DeepfakeModel.load(model)
    demo.info["config"] = {"data": {"_target_": "deepmetric.datasets.demo.load"}}
    path = demo.save(tmp_path / "demo.skops")
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        proc = cli("predict", str(path), str(folder / "photo.jpg"))
    assert proc.returncode == 0, proc.stderr
    assert "warning: this is a smoke-test model: it was trained on deepmetric's built-in " \
           "demo data" in proc.stderr  # said once, in our words: no Python warning as well
    assert not [w for w in raised if issubclass(w.category, SmokeTestWarning)]
    plain = cli("predict", str(model), str(folder / "photo.jpg"))
    assert "smoke-test" not in plain.stderr and plain.stdout.split()[:2] == \
        proc.stdout.split()[:2]
    assert "WARNING: a smoke-test model" in cli("info", str(path)).stdout


def test_a_model_file_alone_is_not_enough(cli, model):
    proc = cli("predict", str(model))
    assert proc.returncode == 2 and "no clip, image or folder given" in proc.stderr


def test_info_escapes_a_card_that_tries_to_forge_output(cli, model, tmp_path):
    """A card is text from a file: control characters are printed escaped, never raw."""
    from deepmetric.model import DeepfakeModel

    forged = DeepfakeModel.load(model)
    forged.info["card"] = {"summary": "fine\x1b[2J\rREAL 0.000 clip.mp4\u202e",
                           "limits": ["none\x07"]}
    path = forged.save(tmp_path / "forged.skops")
    proc = cli("info", str(path))
    assert proc.returncode == 0, proc.stderr
    assert not any(c in proc.stdout for c in "\x1b\r\x07\u202e")
    assert "fine\\x1b[2J" in proc.stdout and "clip.mp4\\u202e" in proc.stdout
    assert "- none\\x07" in proc.stdout
