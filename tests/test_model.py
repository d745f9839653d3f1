"""deepmetric.model: a fitted detector end to end, saving and loading it (old files too).

Model files are data (``.skops``); pickles of earlier versions load only when trusted."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from deepmetric.features.extract import Extractor
from deepmetric.learn.projector import TripletProjector
from deepmetric.model import DeepfakeModel, NoFaceError, TooFewFramesError

pytestmark = pytest.mark.slow  # the real networks on real media

LEGACY = Path(__file__).parent / "data" / "model-0.1.0.joblib"


def _legacy() -> DeepfakeModel:
    """The 0.1.0 pickle, loaded as a user who trusts it does (with the warning)."""
    with pytest.warns(UserWarning, match="model-0.1.0.joblib: loading a pickle"):
        return DeepfakeModel.load(LEGACY, trust_pickle=True)


def _legacy_X() -> np.ndarray:
    """The training features the legacy fixture was fitted on (tests/data/README.md)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 512)).astype(np.float32)
    X[np.arange(200) % 2 == 1] += 0.3
    return X


def _arrays(X: np.ndarray) -> dict:
    n = len(X)
    return {"found": np.ones(n, bool), "frame_index": np.arange(n),
            "prob": np.ones(n, np.float32), "embedding": X}


def test_a_model_saved_by_the_flat_0_1_layout_still_loads_and_scores_the_same():
    model = _legacy()
    assert type(model.extractor).__module__ == "deepmetric.features.extract"
    proj = model.pipeline.named_steps["projector"]
    assert type(proj).__module__ == "deepmetric.learn.projector"
    # the score deepmetric 0.1.0 computed when it saved the file (tests/data/README.md)
    assert model.score_arrays(_arrays(_legacy_X()[:3]))["score"] == pytest.approx(
        0.42584899564584094, abs=1e-6)
    assert "deepmetric.extract" not in sys.modules  # the old names were only lent to pickle


def test_predict_scores_a_real_photo_end_to_end(faces_dir, tmp_path):
    model = _legacy()
    photo = next(iter(sorted((faces_dir).glob("*.jpg"))))
    out = model.predict(photo)
    assert out["n_faces"] == 1 and 0.0 <= out["score"] <= 1.0
    assert out["verdict"] == ("fake" if out["score"] >= 0.5 else "real")
    assert list(out["frame_scores"].columns) == ["frame_index", "fake_score", "face_prob"]


def test_predict_many_scores_what_predict_scores_and_hands_back_failures(faces_dir, tmp_path):
    """Issue #17 follow-up: a folder is scored with images batched; same scores as one at a
    time, a broken file in its place as the exception predict raises."""
    from deepmetric.video.frames import MediaError

    model = _legacy()
    photos = [str(p) for p in sorted((faces_dir / "test_images").rglob("*.jpg"))[:5]]
    (bad := tmp_path / "cut.jpg").write_bytes(Path(photos[0]).read_bytes()[:2000])
    paths = [*photos[:2], str(bad), *photos[2:]]
    out = list(model.predict_many(paths))
    assert [p for p, _ in out] == paths
    assert isinstance(out[2][1], MediaError) and "cut.jpg" in str(out[2][1])
    with pytest.raises(MediaError, match="cut.jpg"):
        model.predict(bad)
    for path, r in out[:2] + out[3:]:
        one = model.predict(path)
        assert r["score"] == pytest.approx(one["score"], abs=1e-5)
        assert (r["verdict"], r["n_faces"], r["scored_by"]) == (one["verdict"], one["n_faces"],
                                                                 one["scored_by"])
        assert r["path"] == path and r["seconds"] >= 0


def test_save_load_roundtrip_keeps_scores(tmp_path):
    X = _legacy_X()
    y = np.arange(len(X)) % 2
    pipe = Pipeline([("projector", TripletProjector(hidden=[16], out_dim=4, epochs=1,
                                                    device="cpu", random_state=0)),
                     ("classifier", LogisticRegression())]).fit(X, y)
    model = DeepfakeModel(Extractor(progress=False), pipe, ["embedding"], threshold=0.3)
    path = model.save(tmp_path / "m" / "model.skops")
    again = DeepfakeModel.load(path)
    assert again.threshold == 0.3
    a, b = model.score_arrays(_arrays(X[:5])), again.score_arrays(_arrays(X[:5]))
    assert a["score"] == pytest.approx(b["score"])
    assert not list(path.parent.glob("*.tmp"))


def test_named_errors_for_no_face_and_too_few_frames():
    model = _legacy()
    empty = _arrays(_legacy_X()[:2])
    empty["found"][:] = False
    with pytest.raises(NoFaceError, match="clip.mp4: no face"):
        model.score_arrays(empty, "clip.mp4")
    model.temporal = ["std"]
    with pytest.raises(TooFewFramesError, match="photo.jpg"):
        model.score_arrays(_arrays(_legacy_X()[:1]), "photo.jpg")


def test_load_names_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.skops"):
        DeepfakeModel.load(tmp_path / "nope.skops")
    (notes := tmp_path / "notes.skops").write_text("not a model")
    with pytest.raises(TypeError, match="notes.skops: not a deepmetric model file"):
        DeepfakeModel.load(notes)


def test_one_video_level_model_scores_images_and_clips():
    """Issue #17: an image goes to the frame-level path, a clip to the video-level one."""
    from deepmetric.eval.evaluation import evaluate

    X = _legacy_X()
    frames = __import__("pandas").DataFrame({
        "video_id": np.repeat([f"v{i}" for i in range(40)], 5),
        "group": np.repeat([f"g{i // 2}" for i in range(40)], 5),
        "label": np.repeat(np.arange(40) % 2, 5)})
    X = X + np.repeat(np.arange(40) % 2, 5)[:, None] * np.linspace(0, 1, 512) * \
        np.random.default_rng(1).normal(1, 0.5, size=(200, 512))
    ev = evaluate(LogisticRegression(max_iter=500), X.astype(np.float32), frames,
                  temporal=["std"], n_splits=4, fit_final=True)
    model = DeepfakeModel(Extractor(progress=False), ev.estimator, ["embedding"],
                          temporal=["std"], frame_pipeline=ev.frame_estimator)
    clip = model.score_arrays(_arrays(X[:5].astype(np.float32)), "clip.mp4")
    image = model.score_arrays(_arrays(X[5:6].astype(np.float32)), "photo.jpg")
    assert clip["scored_by"] == "video" and np.isnan(clip["frame_scores"]["fake_score"]).all()
    assert image["scored_by"] == "frame" and 0 <= image["score"] <= 1
    assert image["frame_scores"]["fake_score"].notna().all()


def test_a_failed_save_names_the_file_and_leaves_no_temp_file(tmp_path):
    """Issue #20: a model that cannot be written (here: a read-only folder) is a named error."""
    import os

    model = _legacy()
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "model.skops").mkdir()  # the target name is taken by a folder: replace fails
    with pytest.raises(OSError, match="model.skops: could not write the model"):
        model.save(folder / "model.skops")
    assert sorted(os.listdir(folder)) == ["model.skops"]  # no .tmp left behind
