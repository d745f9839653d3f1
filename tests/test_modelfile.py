"""Model files as data (issue #20): a round trip that scores the same, and hostile files
(a pickle with a payload, a data file naming an untrusted type) refused before anything
in them runs or is built."""

from __future__ import annotations

import io
import json
import re
import sys
import time
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from deepmetric.datasets.items import validate_manifest
from deepmetric.eval.evaluation import evaluate
from deepmetric.features.extract import Extractor
from deepmetric.learn.projector import TripletProjector
from deepmetric.model import DeepfakeModel
from deepmetric.modelfile import TRUSTED_TYPES, UntrustedModelError, file_format, schema_trees

pytestmark = pytest.mark.slow  # the real networks on real media

LEGACY = Path(__file__).parent / "data" / "model-0.1.0.joblib"


class Payload:
    """A pickle whose loading writes a marker file (what a hostile model.joblib does)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('payload ran')",)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, dfdc_dir, detector, embedder):
    """Two real models on the DFDC fixture's 22 face crops (real FaceNet features): a
    frame-level projector + logistic head (its loss a PML module), and a video-level random
    forest with its frame-level path; and a k-NN head."""
    from pytorch_metric_learning.losses import SupConLoss

    crops = sorted((dfdc_dir / "prepared_dataset").rglob("*.png")) \
        or sorted((dfdc_dir / "prepared_dataset").rglob("*.jpg"))
    items = validate_manifest(pd.DataFrame({
        "path": [str(p) for p in crops], "label": [p.parent.name for p in crops],
        "video_id": [p.stem for p in crops], "group": [p.stem for p in crops]}))
    ex = Extractor(detector, embedder, n_frames=1, cache_dir=tmp_path_factory.mktemp("c"),
                   progress=False)
    ex.run(items)
    feats = ex.features(items)
    proj = TripletProjector(hidden=[32], out_dim=8, epochs=3, validation_fraction=0,
                            loss=SupConLoss(), device="cpu", random_state=0)
    frame = DeepfakeModel(ex, Pipeline([("projector", proj), ("classifier",
                                                              LogisticRegression())])
                          .fit(feats.X, feats.y), ["embedding"], threshold=0.4,
                          info={"version": "test-frame", "n": 22})
    # a video-level model: clips are made of 3 crops of one label each
    frames = feats.frames.assign(video_id=[f"{lab}{i // 3}" for i, lab in
                                           enumerate(feats.frames["label"])])
    ev = evaluate(Pipeline([("scaler", StandardScaler()),
                            ("classifier", RandomForestClassifier(20, random_state=0))]),
                  feats.X, frames, temporal=["mean", "std"], n_splits=2, fit_final=True)
    video = DeepfakeModel(ex, ev.estimator, ["embedding"], temporal=["mean", "std"],
                          frame_pipeline=ev.frame_estimator)
    # a k-NN head with a KD tree (an index skops does not trust: saved as brute-force search)
    knn = DeepfakeModel(ex, Pipeline([("classifier", KNeighborsClassifier(
        5, weights="distance", algorithm="kd_tree"))]).fit(feats.X, feats.y), ["embedding"])
    return {"frame": frame, "video": video, "knn": knn, "crops": crops}


@pytest.mark.parametrize("kind", ["frame", "video", "knn"])
def test_a_saved_model_is_data_and_scores_identically(kind, fitted, tmp_path, faces_dir,
                                                      ffpp_dir):
    model = fitted[kind]
    path = model.save(tmp_path / "model.skops")
    assert file_format(path) == "skops"
    with zipfile.ZipFile(path) as zf:  # a JSON schema and plain arrays, nothing else
        names = zf.namelist()
        assert "schema.json" in names and all(n.endswith(".npy") for n in names
                                              if n != "schema.json")
        for n in names:
            if n.endswith(".npy"):
                np.load(io.BytesIO(zf.read(n)), allow_pickle=False)
    assert path.stat().st_size < 2_000_000  # the FaceNet weights (~90 MB) are not in it
    again = DeepfakeModel.load(path)
    assert again.extractor.embedder._model is None  # rebuilt offline on first use
    assert again.extractor.detector._mtcnn is None
    clip = sorted((ffpp_dir / "original_sequences/youtube/c23/videos").glob("*.mp4"))[0]
    inputs = [fitted["crops"][0], faces_dir / "test_images" / "kate_siegel" / "1.jpg", clip]
    # bit for bit, but k-NN: brute-force search finds the same neighbours, its distances
    # differ from the KD tree's in the last float32 digits
    tol = 1e-6 if kind == "knn" else 0.0
    for f in inputs:
        a, b = model.predict(f), again.predict(f)
        assert b["score"] == pytest.approx(a["score"], abs=tol), f
        assert (b["verdict"], b["scored_by"]) == (a["verdict"], a["scored_by"]), f
        pd.testing.assert_frame_equal(a["frame_scores"], b["frame_scores"], atol=tol,
                                      check_exact=not tol)
    assert again.info == model.info and again.threshold == model.threshold
    assert again.temporal == model.temporal
    if kind == "knn":
        assert model.pipeline[-1]._fit_method == "kd_tree"  # the model itself is unchanged
        assert again.pipeline[-1]._fit_method == "brute"


def test_a_projectors_torch_loss_is_kept_by_name_and_refitting_says_so(fitted, tmp_path):
    again = DeepfakeModel.load(fitted["frame"].save(tmp_path / "model.skops"))
    proj = again.pipeline.named_steps["projector"]
    assert proj.loss == "pytorch_metric_learning.losses.supcon_loss.SupConLoss (not saved)"
    assert fitted["frame"].pipeline.named_steps["projector"].loss is not proj.loss  # a copy
    X = np.random.default_rng(0).normal(size=(20, 512)).astype(np.float32)
    with pytest.raises(ValueError, match="invalid loss=.*SupConLoss.*not saved with it"):
        proj.fit(X, np.arange(20) % 2)


def test_save_refuses_a_pickle_name(fitted, tmp_path):
    with pytest.raises(ValueError, match=r"model\.joblib: DeepfakeModel\.save writes a data"):
        fitted["frame"].save(tmp_path / "model.joblib")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["evil.joblib", "evil.skops"])  # by content, not by name
def test_a_malicious_pickle_is_refused_before_it_runs(name, tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / name
    joblib.dump(Payload(marker), path)
    assert file_format(path) == "pickle"
    with pytest.raises(UntrustedModelError, match=rf"{name}: refused: this is a pickle"):
        DeepfakeModel.load(path)
    assert not marker.exists()
    # the payload is real: a user who says they trust the file runs it
    with pytest.warns(UserWarning, match="loading a pickle"), \
            pytest.raises(TypeError, match=rf"{name}: not a deepmetric model"):
        DeepfakeModel.load(path, trust_pickle=True)
    assert marker.read_text() == "payload ran"


def test_a_compressed_pickle_is_recognised(tmp_path):
    marker = tmp_path / "marker.txt"
    joblib.dump(Payload(marker), path := tmp_path / "evil.bin", compress=3)
    with pytest.raises(UntrustedModelError, match="evil.bin: refused"):
        DeepfakeModel.load(path)
    assert not marker.exists()


def _inject(path: Path, out: Path, node: dict) -> Path:
    """Copy a .skops file with ``info`` replaced by ``node`` (an attacker's edit)."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    schema = json.loads(members["schema.json"])
    schema["content"]["content"]["info"] = node
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(out, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    return out


def test_a_data_file_naming_an_untrusted_type_is_refused_before_construction(fitted, tmp_path):
    import skops.io as sio

    marker = tmp_path / "marker.txt"
    # subprocess.Popen([python, -c, <write marker>]): built by calling the type with its args
    args = json.loads(zipfile.ZipFile(io.BytesIO(sio.dumps(
        ([sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ran')"],)))).read(
        "schema.json"))
    node = {"__class__": "Popen", "__module__": "subprocess",
            "__loader__": "ConstructorFromReduceNode", "content": args}
    good = fitted["frame"].save(tmp_path / "good.skops")
    evil = _inject(good, tmp_path / "evil.skops", node)
    with pytest.raises(UntrustedModelError,
                       match=r"evil\.skops: refused: .*not trusted \['subprocess\.Popen'\]"):
        DeepfakeModel.load(evil)
    time.sleep(1.0)
    assert not marker.exists()
    # the injected node is real: trusting the type builds it, and the command runs
    sio.load(evil, trusted=[*TRUSTED_TYPES, "subprocess.Popen"])
    for _ in range(100):
        if marker.exists():
            break
        time.sleep(0.1)
    assert marker.read_text() == "ran"


def test_old_pickles_load_under_the_flag_and_resave_as_data(tmp_path):
    with pytest.raises(UntrustedModelError, match="model-0.1.0.joblib: refused"):
        DeepfakeModel.load(LEGACY)
    with pytest.warns(UserWarning, match="trust_pickle=True"):
        old = DeepfakeModel.load(LEGACY, trust_pickle=True)
    new = DeepfakeModel.load(old.save(tmp_path / "model.skops"))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 512)).astype(np.float32)
    arrays = {"found": np.ones(3, bool), "frame_index": np.arange(3),
              "prob": np.ones(3, np.float32), "embedding": X}
    assert new.score_arrays(arrays)["score"] == old.score_arrays(arrays)["score"]


def test_a_forest_with_out_of_range_tree_nodes_is_refused_before_construction(fitted,
                                                                              tmp_path):
    """skops does not trust sklearn's Tree (its indices are not bounds-checked in predict);
    deepmetric trusts it only after checking every node of every tree in the file."""
    good = fitted["video"].save(tmp_path / "good.skops")
    with zipfile.ZipFile(good) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    schema = json.loads(members["schema.json"])

    found = list(schema_trees(schema))
    assert len(found) == 40  # 20 trees in each of the video and the frame-level forest
    name = found[3]["content"]["content"]["nodes"]["file"]
    nodes = np.load(io.BytesIO(members[name]), allow_pickle=False)
    assert nodes["left_child"][0] > 0  # an inner root
    nodes["left_child"][0] = 10 ** 6  # an attacker's index, far outside the node array
    buf = io.BytesIO()
    np.save(buf, nodes, allow_pickle=False)
    members[name] = buf.getvalue()
    with zipfile.ZipFile(evil := tmp_path / "evil.skops", "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with pytest.raises(UntrustedModelError, match=r"evil\.skops: refused: decision tree 3 .*"
                                                  r"node 0 has children or a feature out"):
        DeepfakeModel.load(evil)


def test_a_model_with_a_second_backbone_and_a_nested_selector_round_trips(
        fitted, tmp_path, detector, embedder):
    """The generalisation study's parts in a model file: an ImageNet MobileNetV2 backbone in
    the extractor and an InnerCVSelector head (its candidates' pipelines inside)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline

    from deepmetric.eval.selection import InnerCVSelector
    from deepmetric.features.backbones.mobilenet import ImageNetEmbedder

    crops = fitted["crops"]
    items = validate_manifest(pd.DataFrame({
        "path": [str(p) for p in crops], "label": [p.parent.name for p in crops],
        "video_id": [p.stem for p in crops], "group": [p.stem for p in crops]}))
    ex = Extractor(detector, embedder, n_frames=1, cache_dir=tmp_path / "c", progress=False,
                   backbones=[ImageNetEmbedder(layers=["13"], device="cpu")])
    ex.run(items)
    feats = ex.features(items, ["embedding", "mnv2/13"])
    pick = {n: make_pipeline(ColumnTransformer([("keep", "passthrough", np.arange(s.start,
                                                                                  s.stop))]),
                             StandardScaler(), LogisticRegression())
            for n, s in feats.blocks.items()}
    head = InnerCVSelector(pick, n_splits=2).fit(feats.X, feats.y, feats.groups)
    model = DeepfakeModel(ex, head, ["embedding", "mnv2/13"])
    again = DeepfakeModel.load(model.save(tmp_path / "model.skops"))
    assert again.pipeline.best_name_ == head.best_name_
    assert again.extractor.backbones[0]._model is None  # weights reloaded, not stored
    for f in crops[:3]:
        assert again.predict(f)["score"] == model.predict(f)["score"]


def test_a_model_with_an_identity_nuisance_projection_round_trips(fitted, tmp_path):
    """projector=nuisance in a model file: the removed directions come back exactly."""
    from deepmetric.eval.evaluation import fit_grouped
    from deepmetric.learn.nuisance import NuisanceProjection

    ex, crops = fitted["frame"].extractor, fitted["crops"]
    items = validate_manifest(pd.DataFrame({
        "path": [str(p) for p in crops], "label": [p.parent.name for p in crops],
        "video_id": [p.stem for p in crops],
        "group": [f"g{i % 5}" for i in range(len(crops))]}))
    feats = ex.features(items)
    pipe = fit_grouped(Pipeline([("projector", NuisanceProjection(n_components=3)),
                                 ("classifier", LogisticRegression())]),
                       feats.X, feats.y, feats.groups)
    model = DeepfakeModel(ex, pipe, ["embedding"])
    again = DeepfakeModel.load(model.save(tmp_path / "nap.skops"))
    np.testing.assert_array_equal(again.pipeline[0].components_, pipe[0].components_)
    for f in crops[:3]:
        assert again.predict(f)["score"] == model.predict(f)["score"]


def test_a_data_file_of_the_0_2_layout_loads(fitted, tmp_path):
    """Files saved before the backbones moved name ``deepmetric.features.embedder``."""
    good = fitted["frame"].save(tmp_path / "new.skops")
    old = tmp_path / "old.skops"
    with zipfile.ZipFile(good) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    text = members["schema.json"].decode()
    assert "deepmetric.features.backbones.facenet" in text
    members["schema.json"] = text.replace("deepmetric.features.backbones.facenet",
                                          "deepmetric.features.embedder").encode()
    with zipfile.ZipFile(old, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    model = DeepfakeModel.load(old)
    assert type(model.extractor.embedder).__module__ == "deepmetric.features.backbones.facenet"
    assert "deepmetric.features.embedder" not in sys.modules
    arrays = {"found": np.ones(2, bool), "frame_index": np.arange(2),
              "prob": np.ones(2, np.float32),
              "embedding": np.random.default_rng(0).normal(size=(2, 512)).astype(np.float32)}
    assert model.score_arrays(arrays)["score"] == fitted["frame"].score_arrays(arrays)["score"]


# -- issue #33: a model file's schema read within bounds, a bomb refused by name ---------------

def _schema_zip(path: Path, chunks) -> Path:
    """A zip with one member, ``schema.json``, written from ``chunks`` (deflated: what a
    .skops file is, as far as a reader can tell before parsing the schema)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("schema.json", "w", force_zip64=True) as fh:
            for chunk in chunks:
                fh.write(chunk)
    return path


def _inflating(path: Path, mib: int = 160) -> Path:
    """A valid skops schema (an empty dict) of ``mib`` MiB (a string of spaces in it) in a file
    of a few hundred KiB."""
    head = (b'{"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode", '
            b'"content": {}, "__id__": 1, "protocol": 2, "_skops_version": "0.16.0", "pad": "')
    return _schema_zip(path, [head, *([b" " * 2**20] * mib), b'"}'])


def _deep(path: Path, depth: int = 200_000) -> Path:
    return _schema_zip(path, [b"[" * depth, b"]" * depth])


@pytest.mark.parametrize("make, why", [
    (_inflating, r"its schema\.json would inflate to 160\.0 MiB, over the limit of 64 MiB"),
    (_deep, r"its schema nests deeper than 100 levels"),
])
def test_a_schema_bomb_is_refused_by_name(make, why, tmp_path, capsys, faces_dir):
    from deepmetric.cli import main

    bomb = make(tmp_path / "bomb.skops")
    assert bomb.stat().st_size < 1_000_000 and file_format(bomb) == "skops"
    with pytest.raises(UntrustedModelError, match=rf"bomb\.skops: refused: {why}"):
        DeepfakeModel.load(bomb)
    photo = faces_dir / "test_images" / "kate_siegel" / "1.jpg"
    assert main(["predict", str(bomb), str(photo)]) == 2  # a named refusal, no traceback
    err = capsys.readouterr().err
    assert re.search(rf"deepmetric predict: .*bomb\.skops: refused: {why}", err), err


def test_a_schema_nested_within_the_bound_but_deep_is_refused_before_skops(tmp_path):
    bomb = _deep(tmp_path / "deep.skops", 150)  # json parses it; skops would walk 150 levels
    with pytest.raises(UntrustedModelError, match=r"deep\.skops: refused: its schema nests "
                                                  r"150 levels deep, over the limit of 100"):
        DeepfakeModel.load(bomb)


def test_refusing_an_inflating_schema_takes_no_memory(tmp_path):
    """Measured in a fresh process: refusing the 160 MiB schema reads none of it."""
    import subprocess

    bomb = _inflating(tmp_path / "bomb.skops")
    code = ("import resource, sys; from deepmetric.modelfile import load_model, "
            "UntrustedModelError; import skops.io; "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    load_model(sys.argv[1])\nexcept UntrustedModelError as exc:\n"
            "    print('refused', exc)\nelse:\n    print('loaded')\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    proc = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    *said, grown_kib = proc.stdout.split("\n")[:-1]
    assert said and said[0].startswith("refused"), proc.stdout
    assert int(grown_kib) < 32 * 1024, f"grew by {int(grown_kib) / 1024:.0f} MiB"
