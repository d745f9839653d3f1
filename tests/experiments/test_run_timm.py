"""``python -m experiments.run backbone=timm ...`` on a small demo: a timm backbone from a
state dict the test writes adds its blocks beside FaceNet's and is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

timm = pytest.importorskip("timm", reason="the backbones extra (pip install 'timm>=1.0')")

CONF = Path(__file__).resolve().parents[2] / "experiments" / "conf"


def test_a_run_with_a_timm_backbone_records_it(tmp_path):
    import torch

    from deepmetric.card import card_text
    from deepmetric.features.backbones.weights import state_dict_digest
    from deepmetric.model import DeepfakeModel
    from experiments.run import run

    torch.manual_seed(0)
    weights = tmp_path / "resnet10t.pth"
    torch.save(timm.create_model("resnet10t").state_dict(), weights)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[
            "backbone=timm", "backbone.name=resnet10t", f"backbone.weights={weights}",
            "backbone.device=cpu", f"paths.cache_dir={tmp_path / 'cache'}",
            "data.n_clips=8", "data.frames=3", "extractor.n_frames=3",
            "extractor.progress=false", "cv.n_splits=2", "projector.epochs=3", "plots=false"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
    metrics = run(cfg)
    assert metrics["data"]["features"] == ["embedding", "resnet10t/pool"]
    assert metrics["data"]["dim"] == 512 + 512
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    (bb,) = saved["data"]["backbones"]
    assert bb["name"] == "resnet10t" and bb["weights"] == str(weights)
    head = {k: v for k, v in torch.load(weights, weights_only=True).items()
            if not k.startswith("fc.")}
    assert bb["weights_digest"] == state_dict_digest(head)
    model = DeepfakeModel.load(tmp_path / "out" / "model.skops")
    assert model.info["backbones"] == saved["data"]["backbones"]
    assert model.extractor.backbones[0].feature_names() == ["resnet10t/pool"]
    card = card_text(model)  # deepmetric info names the backbone and its weights
    assert f"backbone: resnet10t (weights {weights}, tensors digest " \
           f"{bb['weights_digest'][:12]})" in card
