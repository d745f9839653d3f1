"""deepmetric.pretrained and deepmetric.card: the packaged model, its card, smoke tests.

The packaged model is the real file in ``deepmetric/models/``; its card must hold the
figures of the results file it was made from (``benchmarks/results/runs/cross_dataset.json``,
the file the README's table is rendered from).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from deepmetric.card import card_text, model_card
from deepmetric.model import DeepfakeModel, SmokeTestWarning
from deepmetric.pretrained import (DEFAULT, PACKAGED, is_model_path, load_model, load_packaged,
                                   packaged_path)
from experiments.package_model import build_card
from experiments.tables import card_figures
from experiments.tables import load_result

LEGACY = Path(__file__).parent / "data" / "model-0.1.0.joblib"


@pytest.fixture(scope="module")
def packaged() -> DeepfakeModel:
    return load_packaged()


def _strings(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def test_the_packaged_model_is_the_cross_dataset_run_with_its_card(packaged):
    result = load_result("cross_dataset")
    card = packaged.info["card"]
    assert card["name"] == DEFAULT == "cross_dataset"
    assert card["figures"] == card_figures(result)  # the README's numbers, exactly
    assert card == build_card(result, packaged.extractor.n_frames)
    assert card["threshold"]["value"] == packaged.threshold == result["threshold"]
    assert packaged.version == f"cross_dataset-{result['run']}"
    assert packaged.info["test"]["video"]["auc"] == pytest.approx(result["test"]["video"]["auc"])
    # what the run's config says it is
    cfg = packaged.info["config"]
    assert cfg["name"] == "cross_dataset" and cfg["self_blend"]["copies"] == 3
    assert packaged.extractor.detector.margin == 0 and packaged.temporal == []
    assert packaged.blocks == ["repeat_2@2x2", "repeat_3", "spectrum"]
    # no path of the machine that made it
    assert packaged.extractor.cache_dir is None
    assert not [s for s in _strings(packaged.info) if s.startswith(("/", "~"))]
    assert packaged.smoke_test is None


def test_the_card_says_what_every_figure_is(packaged):
    for f in packaged.info["card"]["figures"]:
        assert f["command"].startswith("python -m experiments.run exp=cross_dataset")
        assert ("in-dataset" in f["what"]) != ("cross-dataset" in f["what"])
        assert ("video-level" in f["what"] or "frame-level" in f["what"]
                or "image-level" in f["what"] or "accuracy" in f["what"])
        assert "mean ± std over 5" in f["what"] or "pooled" in f["what"]
        assert 0 < f["value"] < 1 and not math.isnan(f["value"])
    text = card_text(packaged)
    for needle in ("Terms:", "research", "Threshold: ", "Intended use:", "Limits:",
                   "FaceForensics++", "DFDC"):
        assert needle in text, needle


def test_paths_and_names():
    assert packaged_path() == Path(__import__("deepmetric").__file__).parent / PACKAGED[DEFAULT]
    with pytest.raises(KeyError, match="no packaged model 'nope'; packaged: \\['cross_dataset'\\]"):
        packaged_path("nope")
    assert is_model_path("m.skops") and is_model_path("OLD.JOBLIB")
    assert not is_model_path("clip.mp4") and not is_model_path("folder")
    model, described = load_model()
    assert described == f"the packaged model cross_dataset ({packaged_path()})"
    with pytest.raises(FileNotFoundError, match="none.skops: model file not found"):
        load_model("none.skops")


def _legacy() -> DeepfakeModel:
    with pytest.warns(UserWarning, match="loading a pickle"):
        return DeepfakeModel.load(LEGACY, trust_pickle=True)


def test_a_model_without_a_card_gets_one_from_its_info():
    model = _legacy()  # deepmetric 0.1.0: a version, nothing else
    card = model_card(model)
    assert card["name"] == "legacy-0.1.0-fixture" and card["threshold"]["value"] == 0.5
    assert "not tuned" in card["threshold"]["how"] and "figures" not in card
    assert "pipeline: TripletProjector → LogisticRegression" in card_text(model)
    model.info.update(data="ffpp: ffpp-c23", protocol="identity-grouped 5-fold CV (mean over "
                      "folds)", test={"video": {"auc": 0.75}, "frame": {"auc": math.nan}})
    figures = model_card(model)["figures"]
    assert [f["what"] for f in figures] == [
        "ffpp: ffpp-c23, in-dataset, video level AUC: identity-grouped 5-fold CV (mean over "
        "folds)"]


def test_a_demo_model_is_a_smoke_test_and_warns_once():
    model = _legacy()
    assert model.smoke_test is None
    model.info["config"] = {"data": {"_target_": "deepmetric.datasets.demo.load"}}
    assert "built-in demo data" in model.smoke_test
    assert "WARNING: a smoke-test model" in card_text(model)
    with pytest.warns(SmokeTestWarning, match="legacy-0.1.0-fixture is a smoke-test model"):
        assert list(model.predict_many([])) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmokeTestWarning)
        list(model.predict_many([]))  # once per model: no second warning
    model.info["card"] = {"smoke_test": "a card can say so too"}
    assert model.smoke_test == "a card can say so too"


@pytest.mark.slow
def test_the_packaged_model_scores_photos_and_face_crops(packaged, faces_dir, dfdc_dir):
    """The real networks: a photo (MTCNN at the tight box) and the DFDC fixture crops."""
    photos = sorted((faces_dir / "test_images").rglob("*.jpg"))[:2]
    crops = sorted((dfdc_dir / "prepared_dataset").rglob("*.png"))[:4]
    results = dict(packaged.predict_many([*photos, *crops]))
    assert len(results) == 6
    for path, r in results.items():
        assert not isinstance(r, Exception), (path, r)
        assert 0 <= r["score"] <= 1 and r["scored_by"] == "frame" and r["n_faces"] == 1
        assert r["verdict"] == ("fake" if r["score"] >= packaged.threshold else "real")
        fs = r["frame_scores"]
        assert list(fs.columns) == ["frame_index", "fake_score", "face_prob"]
        assert np.isclose(fs["fake_score"].mean(), r["score"])
