"""MTCNN face detection on the real fixture photos and clips."""

from __future__ import annotations

import numpy as np
import pytest

from deepmetric.video.faces import FaceDetector, crop_face
from deepmetric.video.frames import read_frames, read_image

pytestmark = pytest.mark.slow  # the real networks on real media


def test_one_face_in_each_fixture_photo(detector, faces_dir):
    photos = sorted((faces_dir / "test_images").glob("*/*.jpg"))
    assert len(photos) == 4
    for p in photos:
        r = detector.detect([read_image(p)])
        assert r.n_faces.tolist() == [1], p
        assert r.found[0] and r.probs[0] > 0.99
        assert r.crops.shape == (1, 160, 160, 3) and r.crops.dtype == np.uint8
        assert r.crops[0].std() > 10  # an actual face, not a blank crop


def test_six_faces_in_group_photo(detector, faces_dir):
    r = detector.detect([read_image(faces_dir / "multiface.jpg")])
    assert r.n_faces[0] == 6
    assert r.found[0]


def test_largest_face_is_kept(faces_dir):
    img = read_image(faces_dir / "multiface.jpg")
    det = FaceDetector(device="cpu", max_side=10_000)  # detect at full resolution
    r = det.detect([img])
    boxes, probs = det.mtcnn.detect(img[None])[:2]
    b = np.asarray(boxes[0], dtype=object).astype(float)
    p = np.asarray(probs[0], dtype=object).astype(float)
    b = b[p >= det.min_prob]
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    np.testing.assert_allclose(r.boxes[0], b[np.argmax(areas)], rtol=1e-5)
    assert len(b) == 6


def test_downscaled_detection_crops_full_resolution(dfdc_dir):
    f = read_frames(dfdc_dir / "train_sample_videos" / "abqwwspghj.mp4", 4)
    small = FaceDetector(device="cpu", max_side=640).detect(f.images)
    assert small.found.all()
    # boxes are in full-resolution (1920x1080) coordinates
    assert np.nanmax(small.boxes[:, 2]) <= 1920 and np.nanmax(small.boxes[:, 3]) <= 1080
    full = FaceDetector(device="cpu", max_side=4096).detect(f.images[:1])
    iou = _iou(small.boxes[0], full.boxes[0])
    assert iou > 0.8


def test_channels_last_nets_find_the_same_faces(ffpp_dir):
    """The channels-last R-/O-net convolutions (the default) change no detection."""
    import torch

    f = read_frames(ffpp_dir / "manipulated_sequences" / "FaceSwap" / "c23" / "videos"
                    / "266_252.mp4", 8)
    fast = FaceDetector(device="cpu")
    plain = FaceDetector(device="cpu", channels_last=False)
    assert fast.mtcnn.rnet.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.mtcnn.rnet.conv1.weight.is_contiguous()
    a, b = fast.detect(f.images), plain.detect(f.images)
    assert a.found.all() and (a.found == b.found).all()
    np.testing.assert_array_equal(a.n_faces, b.n_faces)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
    np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-2)
    assert np.abs(a.crops.astype(int) - b.crops).max() <= 1


def test_nchw_backed_batch_finds_the_same_faces(ffpp_dir, detector):
    """The NCHW-laid-out batch handed to MTCNN gives what a plain NumPy batch gives."""
    import cv2

    from deepmetric.video.faces import _nchw_backed

    f = read_frames(ffpp_dir / "manipulated_sequences" / "Face2Face" / "c23" / "videos"
                    / "044_945.mp4", 6)
    small = [cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2), interpolation=cv2.INTER_AREA)
             for im in f.images]
    t = _nchw_backed(small)
    assert t.shape == (6, *small[0].shape) and t.permute(0, 3, 1, 2).is_contiguous()
    np.testing.assert_array_equal(t.numpy(), np.stack(small))
    b1, p1, l1 = detector.mtcnn.detect(np.stack(small), landmarks=True)
    b2, p2, l2 = detector.mtcnn.detect(t, landmarks=True)
    assert all(b is not None for b in b1)
    for x, y in zip(b1, b2):
        np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float), atol=1e-3)
    for x, y in zip(l1, l2):
        np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float), atol=1e-3)


def test_no_face_is_recorded_not_dropped(detector):
    rng = np.random.default_rng(0)
    blank = [np.full((240, 320, 3), 127, np.uint8),
             rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)]
    r = detector.detect(blank)
    assert len(r.found) == 2 and not r.found.any()
    assert np.isnan(r.boxes).all() and np.isnan(r.probs).all()


def test_tiny_image_has_no_face_and_no_crash(detector):
    r = detector.detect([np.zeros((16, 16, 3), np.uint8)])
    assert not r.found[0]


def test_crop_face_margin_and_clipping():
    img = np.zeros((100, 100, 3), np.uint8)
    img[40:60, 40:60] = 255
    c = crop_face(img, np.array([40, 40, 60, 60.0]), 32, margin=0)
    assert c.shape == (32, 32, 3) and c.min() == 255
    c2 = crop_face(img, np.array([-20, -20, 10, 10.0]), 32, margin=8)  # off-image box
    assert c2.shape == (32, 32, 3)


def _iou(a, b):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("user_value", [None, "1024"])
def test_models_bound_onednn_primitive_cache_unless_the_user_chose(user_value):
    # oneDNN keeps a compiled primitive per input shape; MTCNN's R-/O-Net batch size changes
    # on every call, so an unbounded cache grows with the dataset (benchmarks/memory.py)
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if user_value:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = user_value
    code = ("import os; from deepmetric.video.faces import FaceDetector; FaceDetector(device='cpu')"
            ".mtcnn; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == (user_value or "64")


def test_fallback_takes_a_face_crop_whole_where_mtcnn_misses(shared_dir):
    """A real DFDC crop MTCNN finds no face in (1 of 400 sampled): kept with fallback='image'."""
    im = read_image(shared_dir / "dfdc-faces" / "faces" / "obpseaabvi.jpg")
    assert not FaceDetector().detect([im]).found[0]
    out = FaceDetector(fallback="image").detect([im, im[::-1]])
    assert out.found.all() and (out.probs == 0).all() and (out.n_faces == 0).all()
    assert out.crops.shape == (2, 160, 160, 3) and np.isnan(out.landmarks).all()
    np.testing.assert_array_equal(out.boxes[0], [0, 0, im.shape[1], im.shape[0]])
    assert abs(float(out.crops[0].mean()) - float(im.mean())) < 2  # the whole image, resized
    assert FaceDetector(fallback="image").settings()["fallback"] == "image"
    assert "fallback" not in FaceDetector().settings()  # default keeps existing cache keys
    with pytest.raises(ValueError, match="fallback"):
        FaceDetector(fallback="pad")


def test_whole_image_takes_face_crops_as_they_are_without_mtcnn(shared_dir):
    """DFDC crops are tight face boxes: MTCNN's box plus margin reaches past their border
    (so its crop is clamped); whole_image takes each crop as its face, no detector run."""
    import cv2

    ims = [read_image(shared_dir / "dfdc-faces" / "faces" / f)
           for f in ("slzccfkgfc.jpg", "hcjavzyeaz.jpg", "aqjwkkbklt.jpg")]
    mtcnn = FaceDetector().detect(ims)
    assert mtcnn.found.all()
    assert ((mtcnn.boxes[:, 2] - mtcnn.boxes[:, 0]) > 0.9 * 224).all()  # the face fills it
    det = FaceDetector(whole_image=True)
    out = det.detect(ims)
    assert det._mtcnn is None  # no detection ran
    assert out.found.all() and (out.probs == 0).all() and (out.n_faces == 0).all()
    assert np.isnan(out.landmarks).all()
    for im, crop, box in zip(ims, out.crops, out.boxes):
        np.testing.assert_array_equal(crop, cv2.resize(im, (160, 160),
                                                       interpolation=cv2.INTER_AREA))
        np.testing.assert_array_equal(box, [0, 0, 224, 224])
    assert not np.array_equal(out.crops, mtcnn.crops)
    assert det.settings()["whole_image"] is True
    # the crops depend on the crop size alone: MTCNN's options stay out of the cache key
    assert FaceDetector(whole_image=True, margin=0, min_prob=0.5, fallback="image").settings() \
        == det.settings() != FaceDetector(whole_image=True, image_size=128).settings()
    assert "whole_image" not in FaceDetector().settings()  # existing cache keys unchanged
