"""Frame sampling and decoding on real clips and images."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepmetric.video import frames as fr
from deepmetric.video.frames import MediaError, read_frames, read_image, sample_indices


@given(n_total=st.integers(0, 100_000), n=st.integers(1, 500))
@settings(max_examples=300, deadline=None)
def test_sample_indices_in_range_sorted_unique(n_total, n):
    idx = sample_indices(n_total, n)
    assert idx.dtype == np.int64
    assert len(idx) == min(n, n_total)
    if len(idx):
        assert idx.min() >= 0 and idx.max() < n_total
        assert np.all(np.diff(idx) > 0)  # never duplicates


def test_sample_indices_even_spacing():
    np.testing.assert_array_equal(sample_indices(250, 25), np.arange(5, 250, 10))
    np.testing.assert_array_equal(sample_indices(3, 25), [0, 1, 2])
    with pytest.raises(ValueError):
        sample_indices(10, 0)


def _first_clip(ffpp_dir):
    return sorted((ffpp_dir / "original_sequences/youtube/c23/videos").glob("*.mp4"))[0]


def test_read_frames_ffpp_clip(ffpp_dir):
    clip = _first_clip(ffpp_dir)
    f = read_frames(clip, 25)
    assert len(f.images) == 25 and f.n_total == 250 and f.fps == pytest.approx(25.0)
    np.testing.assert_array_equal(f.indices, sample_indices(250, 25))
    assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for im in f.images)
    assert len({im.tobytes() for im in f.images}) == 25  # distinct frames


def test_seek_and_grab_decode_the_same_frames(ffpp_dir, monkeypatch):
    clip = _first_clip(ffpp_dir)
    grabbed = read_frames(clip, 6)
    monkeypatch.setattr(fr, "SEEK_GAP", 1)  # force a seek before every sampled frame
    seeked = read_frames(clip, 6)
    np.testing.assert_array_equal(grabbed.indices, seeked.indices)
    for a, b in zip(grabbed.images, seeked.images):
        np.testing.assert_array_equal(a, b)


def test_full_hd_dfdc_clip(dfdc_dir):
    f = read_frames(dfdc_dir / "train_sample_videos" / "abofeumbvv.mp4", 5)
    assert f.images[0].shape == (1080, 1920, 3) and len(f.images) == 5 and f.n_total == 300


def test_short_clip_yields_every_frame(tmp_path):
    import cv2

    path = tmp_path / "three.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for k in range(3):
        w.write(np.full((48, 64, 3), 40 * k, np.uint8))
    w.release()
    f = read_frames(path, 25)
    assert len(f.images) == 3 and list(f.indices) == [0, 1, 2]


@pytest.mark.parametrize("content", [b"", b"this is not a video at all\n" * 10])
def test_bad_video_names_the_file(tmp_path, content):
    path = tmp_path / "bad clip.mp4"
    path.write_bytes(content)
    with pytest.raises(MediaError, match="bad clip.mp4"):
        read_frames(path)


def test_truncated_video(tmp_path, ffpp_dir):
    data = _first_clip(ffpp_dir).read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 3])
    try:
        f = read_frames(path, 25)
    except MediaError as exc:  # moov atom at the end: nothing decodable
        assert "truncated.mp4" in str(exc)
    else:  # what decoded is returned, never out-of-range indices
        assert 0 < len(f.images) <= 25 and f.indices.max() < 250


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match="file not found"):
        read_frames(tmp_path / "nope.mp4")


def test_images_grayscale_rgba(tmp_path):
    from PIL import Image

    g = tmp_path / "gray.png"
    Image.fromarray(np.full((20, 30), 128, np.uint8)).save(g)
    a = tmp_path / "rgba.png"
    Image.fromarray(np.full((20, 30, 4), 200, np.uint8)).save(a)
    for p in (g, a):
        im = read_image(p)
        assert im.shape == (20, 30, 3) and im.dtype == np.uint8
    f = read_frames(g)
    assert len(f.images) == 1 and f.n_total == 1
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    with pytest.raises(MediaError, match="bad.png"):
        read_frames(bad)


# -- issue #33: memory bounded by what a clip decodes to ----------------------------------------

def _clip(path, w: int, h: int, n: int, fourcc: str = "mp4v"):
    """A real clip of ``n`` frames of ``w`` x ``h``: a gradient with a moving square (small
    on disk however large its frames)."""
    import cv2

    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (w, h))
    base = np.broadcast_to(np.linspace(0, 255, w, dtype=np.uint8)[None, :, None], (h, w, 3))
    for k in range(n):
        f = base.copy()
        f[h // 4:h // 2, k * (w // (2 * n)):k * (w // (2 * n)) + w // 4] = (0, 0, 255)
        wr.write(f)
    wr.release()
    return path


def test_video_frames_over_the_pixel_bound_are_refused_by_name(tmp_path, monkeypatch):
    path = _clip(tmp_path / "wide clip.mp4", 640, 480, 3)
    assert len(read_frames(path, 3).images) == 3  # under the default bound
    monkeypatch.setenv("DEEPMETRIC_MAX_PIXELS", "300000")
    with pytest.raises(MediaError, match=r"wide clip\.mp4: video frames too large: 640x480 "
                                         r"= 0\.3 megapixels, over the limit of 0\.3 MP"):
        read_frames(path, 3)


def test_a_clips_frames_are_decoded_within_its_pixel_budget(tmp_path, monkeypatch):
    path = _clip(tmp_path / "clip.mp4", 800, 600, 25)
    full = read_frames(path, 25)
    assert {im.shape for im in full.images} == {(600, 800, 3)}  # under the default budget
    monkeypatch.setenv("DEEPMETRIC_MAX_CLIP_PIXELS", str(25 * 120_000))
    capped = read_frames(path, 25)
    assert len(capped.images) == 25 and capped.indices.tolist() == full.indices.tolist()
    for im in capped.images:
        h, w = im.shape[:2]
        assert h * w <= 120_000 and abs(w / h - 4 / 3) < 0.02  # scaled, shape kept
    assert sum(im.shape[0] * im.shape[1] for im in capped.images) <= 25 * 120_000
    # the same picture, smaller: the red square is where it was
    import cv2

    small = cv2.resize(full.images[12], capped.images[12].shape[1::-1],
                       interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - capped.images[12]).mean() < 3


def test_memory_is_bounded_by_the_decoded_size_not_by_the_file(tmp_path):
    """A 1 MB file whose 25 frames decode to 324 MB: the reader's peak memory stays within
    its clip budget (here 25 x 0.25 MP), measured in a fresh process. (Motion JPEG: each
    frame decodes alone, so the decoder holds no frames of its own.)"""
    import subprocess
    import sys

    path = _clip(tmp_path / "huge frames.avi", 2400, 1800, 25, "MJPG")
    assert path.stat().st_size < 2_000_000  # 25 x 4.3 MP = 324 MB of RGB frames
    code = ("import resource, sys; from deepmetric.video.frames import read_frames; "
            "import cv2, numpy; before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            "f = read_frames(sys.argv[1], 25); "
            "print(len(f.images), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    import os

    env = {**os.environ, "DEEPMETRIC_MAX_CLIP_PIXELS": str(25 * 250_000)}
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    n, grown_kib = map(int, proc.stdout.split())
    assert n == 25 and grown_kib < 120 * 1024, f"peak memory grew by {grown_kib / 1024:.0f} MiB"


def test_a_bad_pixel_bound_is_one_settings_error(monkeypatch):
    monkeypatch.setenv("DEEPMETRIC_MAX_CLIP_PIXELS", "lots")
    with pytest.raises(ValueError, match="DEEPMETRIC_MAX_CLIP_PIXELS must be a number of "
                                         "pixels, got 'lots'"):
        fr.check_limits()
