"""The study's ``timm`` rows: the foundation-backbone presets name the published models'
architectures, and the rows run a backbone's block alone, beside exp=deepmetric's blocks
and paired against its frame path (small arrays standing in for the cached features)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import generalization as g

pytest.importorskip("timm", reason="the backbones extra (pip install 'timm>=1.0')")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_presets_name_the_published_backbones(tmp_path):
    clip = g.timm_backbone(f"clip={tmp_path / 'w.safetensors'}")
    assert (clip.name, clip.weights) == ("vit_large_patch14_clip_224.openai",
                                         str(tmp_path / "w.safetensors"))
    assert clip.feature_names() == ["clip/pool"]
    dino = g.timm_backbone("dinov2")
    assert dino.weights is None and dino.image_size == 224  # weights: the user's hub cache
    assert dino.model_kwargs == {"dynamic_img_size": True}
    assert g.timm_backbone("effnet_b4").name == "tf_efficientnet_b4.ap_in1k"
    assert g.timm_backbone("resnet10t").feature_names() == ["resnet10t/pool"]


def _data(n_clips: int, frames: int, seed: int, tag: str) -> g.Data:
    rng = np.random.default_rng(seed)
    fr = pd.DataFrame([{"video_id": f"{tag}{c}", "group": f"{tag}g{c // 2}", "label": c % 2,
                        "frame_index": f} for c in range(n_clips) for f in range(frames)])
    y = fr["label"].to_numpy()
    X = {b: rng.normal(size=(len(y), 4)).astype(np.float32) for b in g.DEEPMETRIC}
    X["clip/pool"] = (rng.normal(size=(len(y), 8)) + 2 * y[:, None]).astype(np.float32)
    return g.Data(X, fr)


def test_timm_rows_run_alone_beside_the_texture_blocks_and_paired():
    data = {"ffpp": _data(40, 3, 0, "ff"), "dfdc": _data(60, 1, 1, "dd")}
    out = g.rows(data, {"timm"}, timm_blocks=("clip/pool",))
    assert [r["name"] for r in out] == [
        "clip/pool", "paired: clip/pool", "exp=deepmetric's blocks + clip/pool",
        "paired: exp=deepmetric's blocks + clip/pool"]
    assert not [r for r in out if "error" in r]
    alone, paired = out[0], out[1]
    assert alone["dfdc_image_auc"] > 0.9 and alone["dim"] == 8  # the informative block
    assert paired["diff_vs_deepmetric"] > 0.2 and paired["diff_ci"][0] > 0
    assert "timm" in g.markdown(out, None)
