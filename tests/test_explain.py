"""Explanations: the torch reproduction of fitted pipelines, Grad-CAM/Grad-CAM++/IG maps,
and two sanity checks of the maps (model randomisation; face centre vs background corners).

The models are fitted here on the built-in demo clips (4 real + 4 self-blended, 8 frames,
extracted with the default embedder taps and spectrum into the test cache, shared with the
app tests) and explained on the face fixtures, which the model never saw.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from deepmetric import explain
from deepmetric.storage import cache_root
from deepmetric.model import DeepfakeModel
from deepmetric.scorer import fake_scorer
from deepmetric.learn.projector import TripletProjector
from deepmetric.eval.scoring import frame_scores

pytestmark = pytest.mark.slow  # the real networks on real media

LAYERS = ["avgpool_1a", "repeat_1", "repeat_2", "repeat_3"]   # conf/embedder/facenet.yaml


@pytest.fixture(scope="session")
def demo_features(detector, embedder):
    """(extractor, FrameFeatures) of a small demo set, with every block the config caches."""
    from deepmetric.datasets import demo
    from deepmetric.features.backbones.facenet import FaceEmbedder
    from deepmetric.features.extract import Extractor

    cache = cache_root()
    items = demo.load(root=cache / "demo", n_clips=4, frames=8)
    emb = FaceEmbedder(layers=LAYERS, batch_size=32, device="cpu")
    ex = Extractor(detector, emb, n_frames=8, cache_dir=cache / "features", spectrum_bins=32,
                   progress=False)
    report = ex.run(items)
    assert not report.failures, report.summary()
    feats = ex.features(items, ["embedding", "repeat_3", "spectrum"])
    return ex, feats, items


def _fit(demo_features, blocks, steps) -> DeepfakeModel:
    ex, feats, _ = demo_features
    X = np.concatenate([feats.X[:, feats.blocks[b]] for b in blocks], axis=1)
    pipe = Pipeline(steps).fit(X, feats.y)
    return DeepfakeModel(ex, pipe, blocks)


def _projector(seed=0):
    return TripletProjector(epochs=20, validation_fraction=0, device="cpu", random_state=seed)


@pytest.fixture(scope="session")
def linear_model(demo_features):
    """The differentiable recipe: triplet projector + logistic regression."""
    return _fit(demo_features, ["embedding"],
                [("projector", _projector()), ("classifier", LogisticRegression())])


@pytest.fixture(scope="session")
def forest_model(demo_features):
    """The poster's recipe: triplet projector + random forest (not differentiable)."""
    return _fit(demo_features, ["embedding"],
                [("projector", _projector()),
                 ("classifier", RandomForestClassifier(50, random_state=0, n_jobs=1))])


@pytest.fixture(scope="session")
def aligned_crops(faces_dir):
    from PIL import Image

    paths = sorted((faces_dir / "test_images_aligned").glob("*/1.png"))
    assert len(paths) == 5
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


@pytest.fixture(scope="session")
def photo_crops(faces_dir, demo_features):
    """The extractor's own 160-px crops (margin 32) of the four fixture photographs."""
    import copy

    ex = copy.copy(demo_features[0])
    ex.save_crops = True
    crops = []
    for p in sorted((faces_dir / "test_images").glob("*/1.jpg")):
        a = ex.extract_item(p)
        assert a["found"].all()
        crops.append(a["crops"][0])
    return np.stack(crops)


def _features(model, crops):
    """The model's feature matrix of crops, as the extractor computes it."""
    from deepmetric.features.spectrum import radial_spectrum

    arrays = model.extractor.embedder.embed(crops)
    arrays["spectrum"] = radial_spectrum(crops, model.extractor.spectrum_bins)
    arrays["found"] = np.ones(len(crops), bool)
    arrays["frame_index"] = np.arange(len(crops))
    return model.features_of(arrays)[0]


# ----------------------------------------------------------- (c) the torch reproduction
@pytest.mark.parametrize("case", ["projector+logreg", "scaler+sgd(log) on taps+spectrum",
                                  "projector+scaler+sgd(modified_huber)", "projector+linearsvc"])
def test_reproduction_matches_the_pipeline(case, demo_features, linear_model, aligned_crops,
                                           photo_crops):
    if case == "projector+logreg":
        model = linear_model
    elif case.startswith("scaler+sgd(log)"):
        model = _fit(demo_features, ["embedding", "repeat_3", "spectrum"],
                     [("scaler", StandardScaler()),
                      ("classifier", SGDClassifier(loss="log_loss", alpha=0.5,
                                                   random_state=0))])
    elif "modified_huber" in case:
        model = _fit(demo_features, ["embedding"],
                     [("projector", _projector()), ("scaler", StandardScaler()),
                      ("classifier", SGDClassifier(loss="modified_huber", alpha=5.0,
                                                   random_state=0))])
    else:
        model = _fit(demo_features, ["embedding"],
                     [("projector", _projector()), ("classifier", LinearSVC(C=0.1))])
    crops = np.concatenate([aligned_crops, photo_crops])
    scorer = fake_scorer(model)
    assert scorer.target == "pipeline"
    assert scorer.constant_blocks == (["spectrum"] if "spectrum" in model.blocks else [])
    expected = frame_scores(model.pipeline, _features(model, crops))
    got = scorer.proba(crops)
    assert got.shape == (len(crops),)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert 0.02 < expected.std(), "degenerate check: every crop has the same score"
    if hasattr(model.pipeline, "predict_proba"):
        np.testing.assert_allclose(
            got, model.pipeline.predict_proba(_features(model, crops))[:, 1], atol=1e-4)


@pytest.fixture(scope="session")
def flip_grid_model(demo_features, detector):
    """``exp=deepmetric``'s kind of model: flip-averaged embedder, grid-pooled taps."""
    from deepmetric.features.backbones.facenet import FaceEmbedder
    from deepmetric.features.extract import Extractor

    _, _, items = demo_features
    emb = FaceEmbedder(layers=["repeat_2@2x2", "repeat_3"], flip_average=True, device="cpu")
    ex = Extractor(detector, emb, n_frames=8, cache_dir=cache_root() / "features",
                   spectrum_bins=32, progress=False)
    assert not ex.run(items).failures
    blocks = ["repeat_2@2x2", "repeat_3", "spectrum"]
    feats = ex.features(items, blocks)
    pipe = Pipeline([("scaler", StandardScaler()),
                     ("classifier", LogisticRegression(C=0.1, max_iter=1000))])
    return DeepfakeModel(ex, pipe.fit(feats.X, feats.y), blocks)


def test_flip_averaged_grid_model_is_reproduced_and_its_maps_are_mirror_consistent(
        flip_grid_model, aligned_crops, photo_crops):
    crops = np.concatenate([aligned_crops, photo_crops])
    scorer = fake_scorer(flip_grid_model)
    assert scorer.flip_average and scorer.target == "pipeline"
    expected = frame_scores(flip_grid_model.pipeline, _features(flip_grid_model, crops))
    np.testing.assert_allclose(scorer.proba(crops), expected, atol=1e-4)
    assert 0.02 < expected.std()
    mirrored = np.ascontiguousarray(crops[:, :, ::-1])
    a = explain.explain_crops(flip_grid_model, crops, "gradcam")
    b = explain.explain_crops(flip_grid_model, mirrored, "gradcam")
    np.testing.assert_allclose(b["decision"], a["decision"], atol=1e-4)
    np.testing.assert_allclose(b["heatmaps"], a["heatmaps"][:, :, ::-1], atol=1e-3)
    assert np.abs(a["heatmaps"] - a["heatmaps"][:, :, ::-1]).max() > 0.05  # not symmetric


def test_non_differentiable_heads_explain_a_named_surrogate(demo_features, forest_model,
                                                           photo_crops):
    ex, feats, _ = demo_features
    X = feats.X[:, feats.blocks["embedding"]]
    with pytest.raises(ValueError, match="reference"):
        fake_scorer(forest_model)
    s = fake_scorer(forest_model, reference=(X, feats.y))
    assert (s.target, s.prototypes_from) == ("prototype-surrogate", "reference")
    # prototypes = class means of the projected training features
    Z = forest_model.pipeline[:-1].transform(X)
    np.testing.assert_allclose(s.head.prototypes["fake"].numpy(), Z[feats.y == 1].mean(0),
                               atol=1e-5)
    # the surrogate ranks the training frames like the forest does
    dec = s.decision_of(s.head_input(_t(X))).numpy()
    rf = frame_scores(forest_model.pipeline, X)
    assert spearmanr(dec, rf)[0] > 0.5
    probe = fake_scorer(forest_model, probe_features=_features(forest_model,
                                                                       photo_crops))
    assert probe.prototypes_from == "head-labelled probes"
    knn = _fit(demo_features, ["embedding"], [("scaler", StandardScaler()),
                                              ("classifier", KNeighborsClassifier(5))])
    assert fake_scorer(knn).prototypes_from == "head training set"
    out = explain.explain_crops(knn, photo_crops[:2], "gradcam")
    assert out["target"] == "prototype-surrogate" and out["heatmaps"].shape == (2, 160, 160)


def _t(X):
    import torch

    return torch.as_tensor(np.asarray(X, np.float64))


def test_unsupported_pieces_are_clear_errors(demo_features):
    pca = _fit(demo_features, ["embedding"],
               [("pca", PCA(8)), ("classifier", LogisticRegression())])
    with pytest.raises(NotImplementedError, match="'pca' .*PCA"):
        fake_scorer(pca)
    odd = DeepfakeModel(pca.extractor, pca.pipeline, ["not_a_block"])
    with pytest.raises(NotImplementedError, match="not_a_block"):
        fake_scorer(odd)


# ----------------------------------------------------------- maps
@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_maps_are_normalised_and_follow_the_requested_class(method, linear_model,
                                                            aligned_crops):
    fake = explain.explain_crops(linear_model, aligned_crops, method, target_class="fake")
    real = explain.explain_crops(linear_model, aligned_crops, method, target_class="real")
    for out in (fake, real):
        h = out["heatmaps"]
        assert h.shape == (5, 160, 160) and h.dtype == np.float32
        assert h.min() >= 0 and h.max() <= 1 and np.isfinite(h).all()
        assert out["target"] == "pipeline" and out["layer"] == "repeat_3"
    np.testing.assert_allclose(fake["decision"], real["decision"])
    rhos = [_rho(a, b) for a, b in zip(fake["heatmaps"], real["heatmaps"])]
    if method == "gradcam":  # relu(-cam) vs relu(cam): the evidence for each class differs
        assert np.mean(rhos) < 0.5, rhos
    else:                    # Grad-CAM++ weights by g^2 and relu(±g): different, not opposite
        assert np.abs(fake["heatmaps"] - real["heatmaps"]).max() > 0.1
    with pytest.raises(ValueError, match="method"):
        explain.explain_crops(linear_model, aligned_crops, "lime")


def test_integrated_gradients_smoke(linear_model, aligned_crops):
    out = explain.explain_crops(linear_model, aligned_crops[:1], "ig", ig_steps=4, ig_batch=4)
    h = out["heatmaps"]
    assert h.shape == (1, 160, 160) and 0 <= h.min() and h.max() == pytest.approx(1.0)
    assert out["layer"] is None


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps; 0 when either is constant (no ranking)."""
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel())[0])


def _centre_minus_corners(h: np.ndarray) -> np.ndarray:
    centre = h[:, 40:120, 40:120].mean((1, 2))
    k = 32
    corners = np.stack([h[:, :k, :k], h[:, :k, -k:], h[:, -k:, :k],
                        h[:, -k:, -k:]]).mean((0, 2, 3))
    return centre - corners


# ----------------------------------------------------------- (a) model randomisation
@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
@pytest.mark.parametrize("which", ["linear", "forest"])
def test_maps_depend_on_the_learned_weights(which, method, linear_model, forest_model,
                                            photo_crops):
    """Adebayo et al. 2018: re-drawing FaceNet's weights must change the maps."""
    model = linear_model if which == "linear" else forest_model
    rnd = explain.randomized_copy(model, seed=0)
    assert rnd.extractor.embedder.model is not model.extractor.embedder.model
    a = explain.explain_crops(model, photo_crops, method)["heatmaps"]
    b = explain.explain_crops(rnd, photo_crops, method)["heatmaps"]
    if which == "linear" and method == "gradcam":        # deterministic, model untouched
        again = explain.explain_crops(model, photo_crops, method)["heatmaps"]
        np.testing.assert_allclose(a, again, atol=1e-5)
    rhos = [_rho(x, y) for x, y in zip(a, b)]
    assert np.mean(rhos) < 0.5, rhos


# ----------------------------------------------------------- (b) face centre vs corners
@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
@pytest.mark.parametrize("which", ["linear", "forest"])
def test_face_centre_outranks_background_corners(which, method, linear_model, forest_model,
                                                 photo_crops):
    """The fake score's evidence lies on the face, not in the crop's background corners."""
    model = linear_model if which == "linear" else forest_model
    h = explain.explain_crops(model, photo_crops, method, target_class="fake")["heatmaps"]
    diff = _centre_minus_corners(h)
    assert diff.mean() > 0.05, diff


# ----------------------------------------------------------- explain_item
def test_explain_item_on_a_clip_and_an_image(tmp_path, forest_model, linear_model,
                                             demo_features, faces_dir):
    _, _, items = demo_features
    clip = items[items["label"] == 1]["path"].iloc[0]
    out = explain.explain_item(forest_model, clip, n_frames=2, method="gradcam",
                               out_dir=tmp_path / "why")
    assert out["target"] == "prototype-surrogate"
    assert out["prototypes_from"] == "head-labelled probes"
    assert 0 <= out["surrogate_agreement"] <= 1
    pred = forest_model.predict(clip)
    assert out["score"] == pytest.approx(pred["score"])
    s = pred["frame_scores"]["fake_score"].to_numpy()
    top = np.argsort(-s if pred["verdict"] == "fake" else s, kind="stable")[:2]
    assert [f["frame_index"] for f in out["frames"]] \
        == pred["frame_scores"]["frame_index"].to_numpy()[top].tolist()
    np.testing.assert_allclose([f["score"] for f in out["frames"]], s[top])
    assert out["explained_class"] == "fake"
    for f in out["frames"]:
        assert f["crop"].shape == (160, 160, 3) and f["crop"].dtype == np.uint8
        assert f["heatmap"].shape == (160, 160) and f["heatmap"].dtype == np.float32
        assert 0 <= f["heatmap"].min() and f["heatmap"].max() <= 1
        assert f["overlay"].shape == (160, 160, 3) and f["overlay"].dtype == np.uint8
    assert len(out["files"]) == 6 and all((tmp_path / "why").joinpath(p).exists()
                                          for p in out["files"])
    img = faces_dir / "test_images" / "paul_rudd" / "1.jpg"
    one = explain.explain_item(linear_model, img, n_frames=3, method="gradcam++",
                               target_class="verdict")
    assert one["explained_class"] == one["verdict"]
    assert len(one["frames"]) == 1 and one["frames"][0]["frame_index"] == 0
    assert one["target"] == "pipeline" and one["max_abs_error"] < 1e-4
    assert one["score"] == pytest.approx(one["frames"][0]["score"])
