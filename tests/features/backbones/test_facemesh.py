"""MediaPipe FaceMesh geometry blocks with the real model from the mediapipe 0.10.21 wheel."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepmetric.features.backbones.facemesh import (FaceMeshEmbedder, facemesh_weights_path,
                                          normalised_shape)

pytestmark = pytest.mark.slow  # the real networks on real media

#: sha256 of face_landmark.tflite in mediapipe-0.10.21 (FaceMesh v1)
SHA256 = "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"


@pytest.fixture(scope="module")
def facemesh():
    return FaceMeshEmbedder()


def test_the_real_model_finds_faces_and_not_a_wall(facemesh, aligned):
    assert hashlib.sha256(facemesh_weights_path().read_bytes()).hexdigest() == SHA256
    out = facemesh.embed(aligned)
    assert list(out) == ["facemesh/shape", "facemesh/flag"]
    assert out["facemesh/shape"].shape == (5, 1404) and out["facemesh/flag"].shape == (5, 1)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in out.values())
    wall = facemesh.embed(np.full((1, 160, 160, 3), 120, np.uint8))["facemesh/flag"]
    assert (out["facemesh/flag"] > 0).all() and wall[0, 0] < 0  # logits: face / no face
    lm, _ = facemesh.landmarks(aligned)
    assert lm.shape == (5, 468, 3)
    assert (lm[:, :, :2] > 0).all() and (lm[:, :, :2] < 160).all()  # on the crop
    # the nose tip (1) lies between the eyes (33, 263) and above the chin (152)
    assert ((lm[:, 33, 0] < lm[:, 1, 0]) & (lm[:, 1, 0] < lm[:, 263, 0])).all()
    assert (lm[:, 1, 1] < lm[:, 152, 1]).all()


def test_the_shape_does_not_depend_on_rotation_or_size_but_on_the_face(facemesh, aligned):
    """Turning a crop by 12° or shrinking the face in it changes the normalised shape far
    less than going to another person's face does."""
    shape = normalised_shape(facemesh.landmarks(aligned)[0])
    turned, smaller = [], []
    for crop in aligned:
        im = Image.fromarray(crop)
        turned.append(np.asarray(im.rotate(12, resample=Image.BILINEAR)))
        small = Image.new("RGB", (160, 160))
        small.paste(im.resize((130, 130), Image.BILINEAR), (15, 15))
        smaller.append(np.asarray(small))
    for variant in (turned, smaller):
        other = normalised_shape(facemesh.landmarks(np.stack(variant))[0])
        same = np.sqrt(((other - shape) ** 2).mean(axis=(1, 2)))
        between = [np.sqrt(((shape[i] - shape[j]) ** 2).mean())
                   for i in range(5) for j in range(5) if i != j]
        assert same.max() < 0.5 * np.median(between), (same, np.median(between))
    # rotated landmarks: the eye line is horizontal after normalisation
    eyes = shape[:, [33, 133], 1].mean(axis=1) - shape[:, [362, 263], 1].mean(axis=1)
    np.testing.assert_allclose(eyes, 0, atol=1e-5)


def test_it_runs_as_an_extractor_backbone_on_real_crops(tmp_path, shared_dir, embedder):
    from deepmetric.datasets.manifest import load
    from deepmetric.features.extract import Extractor
    from deepmetric.video.faces import FaceDetector

    items = load(shared_dir / "dfdc-faces" / "labels.csv", head=3)
    ex = Extractor(FaceDetector(whole_image=True), embedder, cache_dir=tmp_path,
                   progress=False, backbones=[FaceMeshEmbedder(blocks=["flag"])])
    assert ex.run(items).n_extracted == 3
    feats = ex.features(items, ["embedding", "facemesh/flag"])
    assert feats.X.shape == (3, 513) and (feats.X[:, -1] > 0).all()
    assert isinstance(feats.frames, pd.DataFrame)


def test_named_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tflite: FaceMesh model file not found"):
        facemesh_weights_path(tmp_path / "nope.tflite")
    (bad := tmp_path / "bad.tflite").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.tflite: not a loadable FaceMesh model"):
        FaceMeshEmbedder(weights_path=str(bad)).interpreter  # noqa: B018
    with pytest.raises(ValueError, match="FaceMesh blocks"):
        FaceMeshEmbedder(blocks=["texture"])
    with pytest.raises(ValueError, match="crops must be"):
        FaceMeshEmbedder().embed(np.zeros((2, 160, 160), np.uint8))
