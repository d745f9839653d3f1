"""The per-clip feature cache: keys, atomic writes, corruption, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from deepmetric.features.cache import (FeatureCache, flush_fingerprints, read_npz,
                                       settings_hash, write_npz)


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


def _fresh_process_state(monkeypatch):
    """What a new process starts with: no in-memory fingerprints, no index read yet."""
    import deepmetric.features.cache as cache_mod

    monkeypatch.setattr(cache_mod, "_fingerprints", {})
    monkeypatch.setattr(cache_mod, "_indexes", {})
    monkeypatch.setattr(cache_mod, "_from_index", set(), raising=False)


def test_a_forged_index_line_never_serves_another_files_features(tmp_path, monkeypatch):
    """Issue #33: a line in the fingerprint index giving a file another file's fingerprint
    served that file's features. A cache file keeps a sample of its source (size, first and
    last 64 KiB); an index entry it contradicts is dropped and the file hashed again."""
    import warnings

    a, b = tmp_path / "real" / "clip.mp4", tmp_path / "fake" / "clip.mp4"  # one stem
    a.parent.mkdir()
    b.parent.mkdir()
    a.write_bytes(os.urandom(300_000))
    b.write_bytes(os.urandom(300_000))
    cache = FeatureCache(tmp_path / "c", {})
    cache.save(a, _arrays(1))
    cache.save(b, _arrays(2))
    flush_fingerprints()
    st = os.stat(a)
    forged = [str(a), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
              cache.path_for(b).stem.rsplit("-", 1)[1]]  # a's state, b's fingerprint
    (tmp_path / "c" / "fingerprints" / "zz-forged.tsv").write_text(
        "\t".join(map(str, forged)) + "\n")
    _fresh_process_state(monkeypatch)
    fresh = FeatureCache(tmp_path / "c", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(fresh.load(b)["embedding"], _arrays(2)["embedding"])
    with pytest.warns(UserWarning, match=r"real/clip\.mp4: the fingerprint index named another "
                                         r"file's features for it"):
        got = fresh.load(a)
    np.testing.assert_array_equal(got["embedding"], _arrays(1)["embedding"])
    assert fresh.path_for(a) == cache.path_for(a)


def test_another_process_finds_the_fingerprints_without_reading_the_files(tmp_path):
    """A shard hashes its clips; the run after it, a new Python process, looks the same
    cache files up from the on-disk index and hashes nothing (it writes no index file of
    its own, which it does for every file it has to hash)."""
    import subprocess
    import sys

    media = []
    for i in range(5):
        media.append(tmp_path / "media" / f"clip{i}.mp4")
        media[-1].parent.mkdir(exist_ok=True)
        media[-1].write_bytes(os.urandom(200_000))
    code = ("import sys; from deepmetric.features.cache import FeatureCache; "
            "c = FeatureCache(sys.argv[1], {}); "
            "print('\\n'.join(str(c.path_for(m)) for m in sys.argv[2:]))")
    args = [sys.executable, "-c", code, str(tmp_path / "c"), *map(str, media)]
    first = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    index = tmp_path / "c" / "fingerprints"
    written = sorted(index.glob("*.tsv"))
    assert len(written) == 1 and len(written[0].read_text().splitlines()) == 5
    second = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    assert second == first and sorted(index.glob("*.tsv")) == written
    cache = FeatureCache(tmp_path / "c", {})
    assert [str(cache.path_for(m)) for m in media] == first.split()


def test_the_index_is_not_trusted_after_an_edit_that_restores_mtime(tmp_path, monkeypatch):
    """Same size, one byte changed in place, mtime set back: the ctime moved, so a new
    process hashes the file again instead of reusing the index entry."""
    media = tmp_path / "clip.bmp"
    media.write_bytes(b"\0" * 100_000)
    before = os.stat(media)
    cache = FeatureCache(tmp_path / "c", {})
    k1 = cache.path_for(media)
    time.sleep(0.05)  # past the file system's timestamp granularity
    with open(media, "r+b") as fh:
        fh.seek(50_000)
        fh.write(b"\1")
    os.utime(media, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(media).st_mtime_ns == before.st_mtime_ns
    _fresh_process_state(monkeypatch)
    assert FeatureCache(tmp_path / "c", {}).path_for(media) != k1


def test_a_half_written_index_line_is_skipped_and_a_read_only_index_still_works(
        tmp_path, monkeypatch):
    media = tmp_path / "clip.mp4"
    media.write_bytes(os.urandom(10_000))
    cache = FeatureCache(tmp_path / "c", {})
    k1 = cache.path_for(media)
    index = tmp_path / "c" / "fingerprints"
    assert not index.exists()  # written in batches, and at exit
    flush_fingerprints()
    (own,) = index.glob("*.tsv")
    line = own.read_text()
    # a line cut inside its fingerprint, and a killed process's last line (a wrong
    # fingerprint, no newline yet): neither is used
    own.write_text(line[:-3] + "\n" + line.replace(line.split("\t")[-1], "0" * 16)[:-1])
    (index / "other.tsv").write_text("not\tan\tindex\tline\n")
    _fresh_process_state(monkeypatch)
    assert FeatureCache(tmp_path / "c", {}).path_for(media) == k1  # hashed again
    shutil.rmtree(index)
    index.write_text("a file where the folder should be")  # cannot write an index
    _fresh_process_state(monkeypatch)
    assert FeatureCache(tmp_path / "c", {}).path_for(media) == k1


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


def test_many_index_files_are_merged_by_the_next_reader(tmp_path, monkeypatch):
    """Every process that hashes adds an index file; a reader that finds many merges them
    into one, and every fingerprint is still found without hashing."""
    import deepmetric.features.cache as cache_mod

    media = []
    for i in range(70):
        media.append(tmp_path / "m" / f"clip{i}.mp4")
        media[-1].parent.mkdir(exist_ok=True)
        media[-1].write_bytes(os.urandom(1000))
    keys = {}
    monkeypatch.setattr(cache_mod.FingerprintIndex, "COMPACT_AT", 10**6)  # not yet
    for m in media:  # 70 "processes", one file each
        _fresh_process_state(monkeypatch)
        keys[m] = FeatureCache(tmp_path / "c", {}).path_for(m)
        flush_fingerprints()
    index = tmp_path / "c" / "fingerprints"
    assert len(list(index.glob("*.tsv"))) == 70
    monkeypatch.setattr(cache_mod.FingerprintIndex, "COMPACT_AT", 64)
    _fresh_process_state(monkeypatch)
    cache = FeatureCache(tmp_path / "c", {})
    assert cache.path_for(media[0]) == keys[media[0]]  # the first lookup reads and merges
    (merged,) = index.glob("*.tsv")
    assert merged.name.startswith("merged-") and len(merged.read_text().splitlines()) == 70
    _fresh_process_state(monkeypatch)
    monkeypatch.setattr(cache_mod.hashlib, "blake2b", None)  # any hashing would fail now
    cache = FeatureCache(tmp_path / "c", {})
    assert [cache.path_for(m) for m in media] == [keys[m] for m in media]
