"""Fixtures of the feature tests: real aligned face crops from ../shared."""

from __future__ import annotations

import numpy as np
import pytest

#: The five people of ../shared/data/fixtures/faces/test_images_aligned (one 160-px crop each).
NAMES = ["angelina_jolie", "bradley_cooper", "kate_siegel", "paul_rudd", "shea_whigham"]


@pytest.fixture(scope="module")
def aligned(faces_dir) -> np.ndarray:
    """uint8 (5, 160, 160, 3): one aligned face crop of each person in :data:`NAMES`."""
    from deepmetric.video.frames import read_image

    return np.stack([read_image(faces_dir / "test_images_aligned" / n / "1.png")
                     for n in NAMES])


@pytest.fixture(scope="session")
def cheap_weights(tmp_path_factory):
    """A state dict of timm's ``resnet10t`` (random weights, seeded) that the tests create."""
    timm = pytest.importorskip("timm", reason="the backbones extra (pip install 'timm>=1.0')")
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cheap") / "resnet10t.pth"
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def cheap_parts(cheap_weights):
    """A cheap real (detector, backbone) for the extraction machinery (cache, resume, locks,
    shards, failures): every image or frame taken whole as the face, and a small timm
    network at 64 px in place of FaceNet. Returns ``(detector, embedder)``."""
    from deepmetric.features.backbones.timm import TimmEmbedder
    from deepmetric.video.faces import FaceDetector

    return (FaceDetector(device="cpu", whole_image=True),
            TimmEmbedder("resnet10t", cheap_weights, image_size=64, device="cpu"))
