"""The per-clip feature cache: keys, atomic writes, corruption, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from deepmetric.features.cache import FeatureCache, read_npz, settings_hash, write_npz


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {"frame_index": np.arange(5), "found": np.ones(5, bool),
            "embedding": rng.standard_normal((5, 8)).astype(np.float32)}


def test_roundtrip_and_reproducible_bytes(tmp_path):
    a = _arrays()
    write_npz(tmp_path / "a.npz", a)
    time.sleep(1.1)  # a different wall-clock second must not change the bytes
    write_npz(tmp_path / "b.npz", a)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    back = read_npz(tmp_path / "a.npz")
    for k in a:
        np.testing.assert_array_equal(back[k], a[k])


def test_settings_change_the_directory(tmp_path):
    assert settings_hash({"a": 1, "b": 2}) == settings_hash({"b": 2, "a": 1})
    c1 = FeatureCache(tmp_path, {"n_frames": 25})
    c2 = FeatureCache(tmp_path, {"n_frames": 10})
    assert c1.dir != c2.dir


def test_edited_media_file_gets_a_new_key(tmp_path):
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"x" * 10)
    cache = FeatureCache(tmp_path / "c", {})
    k1 = cache.path_for(media)
    cache.save(media, _arrays())
    assert cache.has(media)
    media.write_bytes(b"y" * 11)
    assert cache.path_for(media) != k1 and not cache.has(media)


def test_copied_or_touched_media_keeps_its_entry(tmp_path):
    # a dataset re-mounted, copied or staged to scratch gets new paths and mtimes
    media = tmp_path / "a" / "clip.mp4"
    media.parent.mkdir()
    media.write_bytes(bytes(range(256)) * 1000)
    cache = FeatureCache(tmp_path / "c", {})
    cache.save(media, _arrays())
    os.utime(media, ns=(1, 1))
    assert cache.has(media)
    copy = tmp_path / "b" / "clip.mp4"
    copy.parent.mkdir()
    shutil.copyfile(media, copy)
    assert cache.path_for(copy) == cache.path_for(media) and cache.load(copy) is not None


@pytest.mark.parametrize("where", [0, 1, 2])  # head, middle, tail of a 3 MiB file
def test_edit_anywhere_in_a_file_gets_a_new_key(tmp_path, where):
    media = tmp_path / "clip.bmp"
    data = bytearray(b"\0" * (3 * 1024 * 1024))
    media.write_bytes(bytes(data))
    cache = FeatureCache(tmp_path / "c", {})
    k1 = cache.path_for(media)
    # same size, one byte changed: an uncompressed BMP/TIFF edited in place (issue #20),
    # or an mp4 whose 'moov' atom at the end changed
    data[[0, len(data) // 2, -1][where]] = 1
    media.write_bytes(bytes(data))
    os.utime(media, ns=(2, 2))  # the memo is per mtime; make sure this is a new one
    assert cache.path_for(media) != k1


def test_odd_names(tmp_path):
    media = tmp_path / "clip with spaces é 中文.mp4"
    media.write_bytes(b"x")
    cache = FeatureCache(tmp_path / "c", {})
    cache.save(media, _arrays())
    assert cache.load(media) is not None
    assert cache.path_for(media).name.isascii()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "missing_array"])
def test_corrupt_file_is_moved_aside(tmp_path, damage):
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"x")
    cache = FeatureCache(tmp_path / "c", {})
    path = cache.save(media, _arrays())
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(data[:40] + bytes(200) + data[240:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        write_npz(path, {"embedding": np.zeros((1, 2))})
    with pytest.warns(UserWarning, match="corrupt cache file"):
        assert cache.load(media) is None
    assert not path.exists() and path.with_suffix(".corrupt").exists()


def _writer(root, media, seed, barrier):
    cache = FeatureCache(root, {"k": 1})
    barrier.wait()
    for _ in range(20):
        with cache.lock(media):
            if cache.load(media) is None:
                cache.save(media, _arrays(seed))
                Path(root, f"wrote-{seed}-{os.getpid()}").touch()


def test_two_processes_share_one_clip(tmp_path):
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"x")
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(tmp_path / "c", media, s, barrier))
             for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    # exactly one process computed the clip; the other reused it
    assert len(list((tmp_path / "c").glob("wrote-*"))) == 1
    cache = FeatureCache(tmp_path / "c", {"k": 1})
    assert cache.load(media) is not None
    assert not list(cache.dir.glob("*.tmp"))
