"""BlazeFace face detection on the real fixture photos, FF++ frames and DFDC clips and crops,
checked against MTCNN's boxes on the same frames."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from deepmetric.video.blazeface import (BlazeFaceDetector, blazeface_weights_path,
                                        ssd_anchors, to_mtcnn_box)
from deepmetric.video.frames import read_frames, read_image

pytest.importorskip("ai_edge_litert")
try:
    blazeface_weights_path()
except FileNotFoundError as exc:  # the mediapipe wheel is an optional extra
    pytest.skip(str(exc), allow_module_level=True)


@pytest.fixture(scope="module")
def blazeface():
    return BlazeFaceDetector()


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return iw * ih / (area(a) + area(b) - iw * ih)


def test_one_face_in_each_fixture_photo(blazeface, detector, faces_dir):
    photos = sorted((faces_dir / "test_images").glob("*/*.jpg"))
    assert len(photos) == 4
    for p in photos:
        img = read_image(p)
        r = blazeface.detect([img])
        assert r.found[0] and r.n_faces[0] == 1, p
        assert r.probs[0] >= blazeface.min_prob
        assert r.crops.shape == (1, 160, 160, 3) and r.crops.dtype == np.uint8
        assert r.crops[0].std() > 10  # an actual face, not a blank crop
        assert _iou(r.boxes[0], detector.detect([img]).boxes[0])[0] > 0.6, p


def test_largest_face_of_the_group_photo(blazeface, faces_dir):
    img = read_image(faces_dir / "multiface.jpg")
    r = blazeface.detect([img])
    boxes, _, scores = blazeface.raw_detections(img)
    assert r.found[0] and r.n_faces[0] == len(scores) >= 2
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    np.testing.assert_allclose(r.boxes[0], to_mtcnn_box(boxes[np.argmax(areas)]), rtol=1e-5)


def test_boxes_and_landmarks_agree_with_mtcnn_on_ffpp_frames(blazeface, detector, ffpp_dir):
    clips = sorted((ffpp_dir / "original_sequences" / "youtube" / "c23" / "videos")
                   .glob("*.mp4"))[:6]
    ious, kp = [], []
    for clip in clips:
        images = read_frames(clip, 4).images
        b, m = blazeface.detect(images), detector.detect(images)
        assert b.found.sum() >= m.found.sum() - 1, clip
        both = b.found & m.found
        ious += _iou(b.boxes[both], m.boxes[both]).tolist()
        eye = np.linalg.norm(m.landmarks[both, 1] - m.landmarks[both, 0], axis=1)
        kp += (np.linalg.norm(b.landmarks[both] - m.landmarks[both], axis=2)
               / eye[:, None]).ravel().tolist()
    assert len(ious) >= 20
    assert np.median(ious) > 0.75 and min(ious) > 0.5
    # eyes, nose and mouth within a fraction of the eye distance of MTCNN's
    assert np.median(kp) < 0.25


def test_full_hd_dfdc_clip_boxes_in_full_resolution(blazeface, detector, dfdc_dir):
    images = read_frames(dfdc_dir / "train_sample_videos" / "abqwwspghj.mp4", 4).images
    assert images[0].shape == (1080, 1920, 3)
    b, m = blazeface.detect(images), detector.detect(images)
    assert b.found.all() and m.found.all()
    assert np.nanmax(b.boxes[:, 2]) <= 1920 and np.nanmax(b.boxes[:, 3]) <= 1080
    assert (_iou(b.boxes, m.boxes) > 0.5).all()


def test_dfdc_crops_with_the_image_fallback(dfdc_dir):
    crops = sorted((dfdc_dir / "prepared_dataset" / "real").glob("*.png"))[:8]
    assert crops
    det = BlazeFaceDetector(fallback="image")
    r = det.detect([read_image(p) for p in crops])
    assert r.found.all()
    assert (r.probs[r.n_faces > 0] >= det.min_prob).all()
    assert (r.probs[r.n_faces == 0] == 0).all()
    whole = BlazeFaceDetector(whole_image=True).detect([read_image(crops[0])])
    assert whole.found[0] and whole.probs[0] == 0 and np.isnan(whole.landmarks[0]).all()


def test_blank_images_have_no_face(blazeface):
    blank = [np.zeros((480, 640, 3), np.uint8), np.full((720, 1280, 3), 128, np.uint8),
             np.full((64, 64, 3), 255, np.uint8)]
    r = blazeface.detect(blank)
    assert not r.found.any() and (r.n_faces == 0).all()
    assert np.isnan(r.boxes).all() and (r.crops == 0).all()


def test_landmarks_drive_the_self_blend(blazeface, ffpp_dir):
    from deepmetric.augment.blend import apply_blend, sample_blend_params

    clip = sorted((ffpp_dir / "original_sequences" / "youtube" / "c23" / "videos")
                  .glob("*.mp4"))[0]
    image = read_frames(clip, 1).images[0]
    r = blazeface.detect([image])
    assert r.landmarks.shape == (1, 5, 2) and np.isfinite(r.landmarks).all()
    lm = r.landmarks[0]
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # MTCNN's left/right order
    assert lm[:2, 1].max() < lm[3:, 1].min()  # eyes above the mouth
    blended, mask = apply_blend(image, lm.astype(np.float64),
                                sample_blend_params(np.random.default_rng(0)))
    x1, y1, x2, y2 = r.boxes[0].astype(int)
    assert mask[y1:y2, x1:x2].mean() > 5 * mask.mean()  # the blend is on the face
    assert (blended != image).any()


def test_missing_or_wrong_model_files_are_named(tmp_path, blazeface):
    missing = tmp_path / "nowhere.tflite"
    with pytest.raises(FileNotFoundError, match="nowhere.tflite"):
        BlazeFaceDetector(weights_path=str(missing)).detect([np.zeros((64, 64, 3), np.uint8)])
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="junk.tflite"):
        BlazeFaceDetector(weights_path=str(junk)).interpreter
    facemesh = blazeface_weights_path().parent.parent / "face_landmark" / "face_landmark.tflite"
    with pytest.raises(ValueError, match="face_landmark.tflite.*not the BlazeFace"):
        BlazeFaceDetector(weights_path=str(facemesh)).interpreter


def test_anchors_and_settings(blazeface):
    a = ssd_anchors()
    assert a.shape == (896, 2) and (a > 0).all() and (a < 1).all()
    assert len(np.unique(a, axis=0)) == 16 * 16 + 8 * 8
    s = blazeface.settings()
    assert s["detector"].endswith("face_detection_short_range.tflite")
    assert BlazeFaceDetector(margin=0).settings() != s
    assert BlazeFaceDetector(whole_image=True).settings()["detector"] == "whole image"
    with pytest.raises(ValueError, match="fallback"):
        BlazeFaceDetector(fallback="nope")


def test_pickles_without_its_interpreter(blazeface, faces_dir):
    img = read_image(sorted((faces_dir / "test_images").glob("*/*.jpg"))[0])
    before = blazeface.detect([img])
    copy = pickle.loads(pickle.dumps(blazeface))
    assert copy._interpreter is None
    np.testing.assert_array_equal(copy.detect([img]).boxes, before.boxes)
