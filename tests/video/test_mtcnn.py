"""The batched MTCNN cascade gives facenet-pytorch's own boxes, on real frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepmetric.video import mtcnn
from deepmetric.video.faces import FaceDetector, _nchw_backed, _plain
from deepmetric.video.frames import read_frames, read_image
from deepmetric.video.mtcnn import (_cumsum_table, detect_faces, resample_boxes, resample_images,
                              summed_area_table)

pytestmark = pytest.mark.slow  # the real networks on real media


def _real_frame(ffpp_dir) -> np.ndarray:
    return read_frames(ffpp_dir / "original_sequences" / "youtube" / "c23" / "videos"
                       / "033.mp4", 1).images[0]


def _windows(h: int, w: int, n: int, seed: int = 0):
    """Random windows of every shape MTCNN produces: 1 px, thin, larger than the output,
    touching the borders."""
    rng = np.random.default_rng(seed)
    hk = rng.integers(1, min(h, 200), n)
    wk = rng.integers(1, min(w, 200), n)
    hk[:3], wk[:3] = (1, 1, h), (1, 30, w)
    y0 = (rng.random(n) * (h - hk + 1)).astype(np.int64)
    x0 = (rng.random(n) * (w - wk + 1)).astype(np.int64)
    return (torch.as_tensor(v, dtype=torch.int64) for v in (y0, x0, hk, wk))


@pytest.mark.parametrize("size", [24, 48])
def test_resample_boxes_is_bitwise_facenet_imresample(ffpp_dir, size, monkeypatch):
    from facenet_pytorch.models.utils.detect_face import imresample

    frames = np.stack([_real_frame(ffpp_dir), _real_frame(ffpp_dir)[::-1].copy()])
    h, w = frames.shape[1:3]
    y0, x0, hk, wk = _windows(h, w, 120)
    inds = torch.as_tensor(np.arange(120) % 2)
    planes = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    want = torch.cat([imresample(planes[i:i + 1, :, y:y + a, x:x + b], (size, size))
                      for i, y, x, a, b in zip(inds, y0, x0, hk, wk)])
    sat = summed_area_table(torch.from_numpy(frames))
    got = resample_boxes(sat, inds, y0, x0, hk, wk, size)
    assert got.shape == (120, 3, size, size) and got.dtype == torch.float32
    assert torch.equal(got, want)
    monkeypatch.setattr(mtcnn, "CHUNK", 7 * 3 * size * size)  # 7 boxes per gather
    assert torch.equal(resample_boxes(sat, inds, y0, x0, hk, wk, size), want)


def test_resample_images_is_bitwise_the_pyramid_resize(ffpp_dir):
    """MTCNN's image pyramid (``interpolate(mode="area")`` of whole frames), as P-Net gets it."""
    from facenet_pytorch.models.utils.detect_face import imresample

    frames = np.stack([_real_frame(ffpp_dir), _real_frame(ffpp_dir)[:, ::-1].copy()])
    h, w = frames.shape[1:3]
    sat = summed_area_table(torch.from_numpy(frames))
    planes = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    for scale in (0.3, 0.3 * 0.709, 0.05, 1.7):  # pyramid levels, a tiny one, an upscale
        size = (int(h * scale + 1), int(w * scale + 1))
        assert torch.equal(resample_images(sat, *size), imresample(planes, size)), scale


def test_summed_area_table_matches_cumsum_and_box_sums(ffpp_dir):
    frame = torch.from_numpy(_real_frame(ffpp_dir))[None]
    sat = summed_area_table(frame)  # OpenCV on the CPU
    h, w = frame.shape[1:3]
    assert sat.dtype == torch.int32 and sat.shape == (1, 3, h + 1, w + 1)
    assert torch.equal(sat, _cumsum_table(frame, torch.int32))  # the other devices' path
    assert torch.equal(sat[0, :, 100, 200], frame[0, :100, :200].sum((0, 1), dtype=torch.int32))
    assert torch.equal(summed_area_table(_nchw_backed([frame[0].numpy()])), sat)
    with pytest.raises(TypeError, match="uint8"):
        summed_area_table(frame.float())


def _detect_reference(mtcnn, batch):
    """facenet-pytorch's own ``MTCNN.detect``, per frame as plain arrays."""
    return [_plain(*frame) for frame in zip(*mtcnn.detect(batch, landmarks=True))]


@pytest.mark.parametrize("clip", ["original_sequences/youtube/c23/videos/033.mp4",
                                  "manipulated_sequences/FaceSwap/c23/videos/266_252.mp4"])
def test_detect_faces_is_facenet_mtcnn_detect(ffpp_dir, detector, clip):
    """Same boxes, probabilities and landmarks, bit for bit, as ``MTCNN.detect``."""
    import cv2

    f = read_frames(ffpp_dir / clip, 8)
    small = [cv2.resize(im, (640, 360), interpolation=cv2.INTER_AREA) for im in f.images]
    for batch in (_nchw_backed(small), np.stack(small)):
        got = detect_faces(detector.mtcnn, batch)
        want = _detect_reference(detector.mtcnn, batch)
        assert len(got) == len(want) == 8
        n_faces = 0
        for g, r in zip(got, want):
            assert len(r[0])  # facenet-pytorch found a face here
            for a, b in zip(g, r):
                np.testing.assert_array_equal(a, b)
            n_faces += len(g[0])
        assert n_faces >= 8


def test_detect_faces_on_photos_with_several_and_no_faces(detector, faces_dir):
    group = read_image(faces_dir / "multiface.jpg")
    (boxes, probs, points), = detect_faces(detector.mtcnn, group[None])
    want = _detect_reference(detector.mtcnn, group[None])[0]
    for a, b in zip((boxes, probs, points), want):
        np.testing.assert_array_equal(a, b)
    assert (probs >= 0.9).sum() == 6 and points.shape == (len(boxes), 5, 2)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert (np.diff(areas) <= 0).all()  # largest first, like select_largest=True
    blank = np.full((1, 240, 320, 3), 127, np.uint8)
    (b, p, lm), = detect_faces(detector.mtcnn, blank)
    assert b.shape == (0, 4) and p.shape == (0,) and lm.shape == (0, 5, 2)
    with pytest.raises(TypeError, match="uint8"):
        detect_faces(detector.mtcnn, blank.astype(np.float32))


def test_face_detector_batched_crops_option(ffpp_dir):
    f = read_frames(ffpp_dir / "manipulated_sequences" / "Deepfakes" / "c23" / "videos"
                    / "044_945.mp4", 6)
    fast, plain = FaceDetector(device="cpu"), FaceDetector(device="cpu", batched_crops=False)
    assert fast.batched_crops and fast.settings() == plain.settings()  # same cache key
    a, b = fast.detect(f.images), plain.detect(f.images)
    assert a.found.all()
    for name in ("found", "boxes", "probs", "landmarks", "n_faces", "crops"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.gpu
def test_detect_faces_on_cuda_matches_cpu(ffpp_dir):
    import cv2

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    f = read_frames(ffpp_dir / "original_sequences" / "youtube" / "c23" / "videos"
                    / "033.mp4", 8)
    batch = np.stack([cv2.resize(im, (640, 360), interpolation=cv2.INTER_AREA)
                      for im in f.images])
    cpu = detect_faces(FaceDetector(device="cpu").mtcnn, batch)
    gpu_mtcnn = FaceDetector(device="cuda").mtcnn
    gpu = detect_faces(gpu_mtcnn, batch)
    want = _detect_reference(gpu_mtcnn, batch)
    for g, c, r in zip(gpu, cpu, want):
        np.testing.assert_allclose(g[0], c[0], atol=0.5)
        np.testing.assert_allclose(g[0], r[0], atol=1e-3)
