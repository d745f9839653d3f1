"""A timm backbone from local weights: small timm models whose state dicts the tests create
(timm's own architectures, random weights), run on real face crops; nothing is fetched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

timm = pytest.importorskip("timm", reason="the backbones extra (pip install 'timm>=1.0')")
import torch  # noqa: E402

from deepmetric.datasets.items import validate_manifest  # noqa: E402
from deepmetric.features.extract import Extractor  # noqa: E402
from deepmetric.features.backbones.timm import TimmEmbedder, load_timm_model  # noqa: E402
from deepmetric.features.backbones.weights import WeightsError  # noqa: E402


def _weights(path: Path, name: str, seed: int, **kwargs) -> Path:
    """A state dict of timm model ``name`` with random weights (seeded), saved to ``path``."""
    torch.manual_seed(seed)
    torch.save(timm.create_model(name, pretrained=False, **kwargs).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def resnet(tmp_path_factory) -> Path:
    return _weights(tmp_path_factory.mktemp("w") / "resnet10t.pth", "resnet10t", 0)


def _direct(name: str, weights: Path, crops: np.ndarray, tap: int | None = None) -> np.ndarray:
    """timm's model on the crops, preprocessed here as timm's data config says: [0, 1],
    bilinear resize to its input size, its mean and std; pooled pre-logits features (or
    block ``tap``'s output, mean and std over space)."""
    model = timm.create_model(name, pretrained=False, num_classes=0).eval()
    sd = torch.load(weights, weights_only=True)
    head = model.pretrained_cfg["classifier"]
    model.load_state_dict({k: v for k, v in sd.items() if not k.startswith(head + ".")})
    cfg = timm.data.resolve_model_data_config(model)
    size = cfg["input_size"][1:]
    x = torch.from_numpy(crops.copy()).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True)
    x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3,
                                                                                      1, 1)
    with torch.no_grad():
        if tap is None:
            return model.forward_head(model.forward_features(x), pre_logits=True).numpy()
        a = model.forward_intermediates(x, indices=[tap], intermediates_only=True)[0]
        return torch.cat([a.mean((2, 3)), a.flatten(2).std(-1, unbiased=False)], 1).numpy()


@pytest.mark.parametrize("name,tap", [("resnet10t", 2), ("vit_tiny_patch16_224", 3)])
def test_features_are_timms_on_the_same_preprocessed_crops(tmp_path, aligned, name, tap):
    w = _weights(tmp_path / f"{name}.pth", name, seed=1)
    emb = TimmEmbedder(name, w, layers=["pool", str(tap)], batch_size=2, device="cpu")
    out = emb.embed(aligned)
    assert list(out) == [f"{name}/pool", f"{name}/{tap}"]
    pool = _direct(name, w, aligned)
    assert out[f"{name}/pool"].dtype == np.float32 and out[f"{name}/pool"].shape == pool.shape
    np.testing.assert_allclose(out[f"{name}/pool"], pool, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[f"{name}/{tap}"], _direct(name, w, aligned, tap),
                               rtol=1e-4, atol=1e-4)
    # five people, five different feature vectors
    d = np.linalg.norm(pool[:, None] - pool[None], axis=-1)
    assert (d[~np.eye(5, dtype=bool)] > 1e-4).all()


def test_it_runs_through_the_extractor_and_its_cache(tmp_path, faces_dir, detector, embedder,
                                                      resnet):
    photos = [faces_dir / "test_images" / n / "1.jpg" for n in ("paul_rudd", "kate_siegel")]
    items = validate_manifest(pd.DataFrame({"path": [str(p) for p in photos], "label": [0, 1],
                                            "video_id": [p.parent.name for p in photos]}))

    def extractor(weights: Path) -> Extractor:
        return Extractor(detector, embedder, cache_dir=tmp_path, progress=False,
                         backbones=[TimmEmbedder("resnet10t", weights, device="cpu")])

    ex = extractor(resnet)
    assert ex.run(items).n_extracted == 2
    f = ex.features(items, ["embedding", "resnet10t/pool"])
    assert f.X.shape == (2, 512 + 512) and f.blocks["resnet10t/pool"] == slice(512, 1024)
    # served from the cache the second time, also by a new extractor with the same weights
    again = extractor(Path(resnet))
    assert again.cache.dir == ex.cache.dir and again.run(items).n_cached == 2
    # the cached block is what the backbone computes on the cached crop
    fresh = ex.extract_item(photos[0])
    np.testing.assert_allclose(ex.cache.load(photos[0])["resnet10t/pool"],
                               fresh["resnet10t/pool"], atol=1e-5)
    # other weights (a file with the same name elsewhere): another cache key, other features
    (tmp_path / "other").mkdir()
    other = extractor(_weights(tmp_path / "other" / "resnet10t.pth", "resnet10t", 7))
    assert other.cache.dir != ex.cache.dir
    assert other.run(items).n_extracted == 2
    g = other.features(items, ["embedding", "resnet10t/pool"])
    np.testing.assert_array_equal(g.X[:, :512], f.X[:, :512])  # FaceNet's block: the same
    assert not np.allclose(g.X[:, 512:], f.X[:, 512:])


def test_a_model_file_with_it_saves_and_loads(tmp_path, faces_dir, detector, embedder, resnet):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from deepmetric.model import DeepfakeModel

    aligned = sorted((faces_dir / "test_images_aligned").glob("*/1.png"))
    items = validate_manifest(pd.DataFrame({
        "path": [str(p) for p in aligned], "label": [0, 1, 0, 1, 0][:len(aligned)],
        "video_id": [p.parent.name for p in aligned]}))
    ex = Extractor(detector, embedder, n_frames=1, cache_dir=tmp_path / "c", progress=False,
                   backbones=[TimmEmbedder("resnet10t", w := tmp_path / "mine.pth",
                                           device="cpu")])
    w.write_bytes(resnet.read_bytes())
    ex.run(items)
    blocks = ["resnet10t/pool"]
    feats = ex.features(items, blocks)
    head = make_pipeline(StandardScaler(), LogisticRegression()).fit(feats.X, feats.y)
    model = DeepfakeModel(ex, head, blocks)
    again = DeepfakeModel.load(model.save(tmp_path / "model.skops"))
    bb = again.extractor.backbones[0]
    assert isinstance(bb, TimmEmbedder) and bb._model is None  # weights reloaded, not stored
    assert bb.weights_digest == ex.backbones[0].weights_digest
    for f in aligned[:2]:
        assert again.predict(f)["score"] == model.predict(f)["score"]
    # the saved digest pins the weights: the file, now holding other weights, is refused
    _weights(w, "resnet10t", 3)
    with pytest.raises(WeightsError, match=r"mine\.pth: holds weights .* saved with"):
        DeepfakeModel.load(tmp_path / "model.skops").predict(aligned[0])


def test_wrong_weights_are_refused_naming_the_file(tmp_path, resnet):
    wrong = _weights(tmp_path / "resnet18.pth", "resnet18", 0)
    with pytest.raises(WeightsError, match=r"resnet18\.pth: not a state dict of timm model "
                                           r"'resnet10t' \(.*other shape"):
        load_timm_model("resnet10t", wrong)
    sd = torch.load(resnet, weights_only=True)
    sd.pop("conv1.0.weight")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, cut := tmp_path / "cut.pth")
    with pytest.raises(WeightsError, match=r"cut\.pth: .*missing: conv1\.0\.weight.*"
                                           r"unexpected: extra\.weight"):
        load_timm_model("resnet10t", cut)
    (junk := tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"junk\.pth: not a loadable state dict"):
        TimmEmbedder("resnet10t", junk, device="cpu").settings()
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_timm_model("resnet10t", tmp_path / "nope.pth")
    # the classifier may be missing or of another size: a backbone has no head
    torch.save({k: v for k, v in torch.load(resnet, weights_only=True).items()
                if not k.startswith("fc.")}, headless := tmp_path / "headless.pth")
    assert load_timm_model("resnet10t", headless)[1] == load_timm_model("resnet10t", resnet)[1]


_AUDIT = """
import json, os, sys
events = []
sys.addaudithook(lambda ev, args: events.append([ev, repr(args)[:200]])
                 if ev.startswith(("socket.", "urllib.")) else None)
from deepmetric.features.backbones.timm import TimmEmbedder
import numpy as np
results = []
for env, kw in json.loads(sys.argv[1]):  # each case: its environment, then the embedder
    os.environ.pop("DEEPMETRIC_OFFLINE", None)
    os.environ.update(env)
    seen = len(events)
    try:
        out = TimmEmbedder(device="cpu", **kw).embed(np.zeros((2, 160, 160, 3), np.uint8))
        outcome = "ran " + ",".join(out)
    except FileNotFoundError as exc:
        outcome = str(exc)
    results.append({"events": events[seen:], "outcome": outcome})
seen = len(events)
import socket
socket.socket().close()  # the hook is live: this one must be recorded
print(json.dumps({"results": results, "probe": events[seen:][:1]}))
"""


def _in_child(tmp_path: Path, *cases: tuple[dict, dict]) -> list[dict]:
    """Run ``TimmEmbedder(**kwargs)`` for each ``(env_extra, kwargs)`` case in one fresh
    Python under an audit hook; the socket and urllib events and the outcome of each."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DEEPMETRIC_OFFLINE", "DEEPMETRIC_ALLOW_DOWNLOAD")
           and not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf"))  # an empty hub cache
    out = subprocess.run([sys.executable, "-c", _AUDIT, json.dumps(cases)], env=env,
                         capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert [ev for ev, _ in got["probe"]] == ["socket.__new__"], "the audit hook is dead"
    return got["results"]


def test_no_connection_is_attempted_unless_asked(tmp_path, resnet):
    """Python's audit hooks see every socket and urllib call of the child (a socket the
    child opens afterwards is seen): none with local weights, none for weights missing from
    the hub cache (refused, saying how to get them), none when a download is asked for but
    DEEPMETRIC_OFFLINE is set."""
    local, hub, offline = _in_child(
        tmp_path, ({}, {"name": "resnet10t", "weights": str(resnet)}),
        ({}, {"name": "resnet10t"}),
        ({"DEEPMETRIC_OFFLINE": "1"}, {"name": "resnet10t", "allow_download": True}))
    assert local == {"events": [], "outcome": "ran resnet10t/pool"}
    assert hub["events"] == [] and "not in the local Hugging Face hub cache" in hub["outcome"]
    assert "timm/resnet10t" in hub["outcome"]
    assert offline["events"] == [] and "downloads are off" in offline["outcome"]


def test_weights_in_the_users_hub_cache_are_found_offline(tmp_path, resnet):
    """A hub cache laid out as huggingface_hub writes it (snapshots/<rev>/model file and
    refs/main) serves the model's pretrained weights with no connection."""
    repo = tmp_path / "hf" / "hub" / "models--timm--resnet10t.c3_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    from safetensors.torch import save_file

    save_file(torch.load(resnet, weights_only=True), snap / "model.safetensors")
    (got,) = _in_child(tmp_path, ({}, {"name": "resnet10t"}))
    assert got == {"events": [], "outcome": "ran resnet10t/pool"}
