"""deepmetric.features.shard without a scheduler: the split, the merge, in-process shards, and
Extractor.run skipping (not waiting on) a clip another job holds locked. The SLURM job
arrays are tested on a live cluster in tests/experiments/test_extract_slurm.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest

from deepmetric.features.extract import Extractor
from deepmetric.features.shard import extract_sharded, merge_reports, shard_rows


def _manifest(paths: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"path": paths, "video_id": [f"v{i}" for i in range(len(paths))]})


def test_shards_are_disjoint_cover_the_manifest_and_keep_a_files_rows_together():
    paths = [f"/d/{i % 7}.mp4" for i in range(20)]  # 7 files, copies of each spread out
    m = _manifest(paths)
    for n in (1, 2, 3, 7, 10):
        shards = shard_rows(m, n)
        assert len(shards) == n
        allrows = np.concatenate(shards)
        assert sorted(allrows.tolist()) == list(range(20))  # disjoint and covering
        for s in shards:
            assert np.all(np.diff(s) > 0)
        owner = {p: i for i, s in enumerate(shards) for p in m["path"].iloc[s]}
        for i, s in enumerate(shards):  # every row of a file in that file's shard
            assert all(owner[p] == i for p in m["path"].iloc[s])
        assert [x.tolist() for x in shard_rows(m, n)] == [x.tolist() for x in shards]
    # round-robin over distinct files in first-appearance order
    assert [sorted(set(m["path"].iloc[s])) for s in shard_rows(m, 3)] == [
        ["/d/0.mp4", "/d/3.mp4", "/d/6.mp4"], ["/d/1.mp4", "/d/4.mp4"], ["/d/2.mp4", "/d/5.mp4"]]
    with pytest.raises(ValueError, match="integer >= 1"):
        shard_rows(m, 0)


def test_merge_sums_finished_shards_and_names_the_failed_ones():
    ok = {"n_extracted": 3, "n_cached": 1, "n_failed": 1, "n_frames": 4, "n_faces": 3,
          "failures": [{"path": "a"}], "no_face": [], "short": [], "seconds": 2.0}
    merged = merge_reports([
        {"index": 1, "n_items": 2, "job_id": "7_1", "state": "CANCELLED", "stdout": None,
         "stderr": "/logs/7_1.err", "error": "ended CANCELLED without a result",
         "report": None},
        {"index": 0, "n_items": 5, "job_id": "7_0", "state": "COMPLETED", "stdout": None,
         "stderr": None, "error": None, "report": ok}], "slurm", 4.0)
    assert merged["n_items"] == 7 and merged["n_unfinished"] == 2
    assert merged["n_extracted"] == 3 and merged["failures"] == [{"path": "a"}]
    assert merged["failed_shards"] == [1] and [s["index"] for s in merged["shards"]] == [0, 1]
    assert merged["items_per_second"] == pytest.approx(0.75)


def test_in_process_shards_fill_the_same_cache_as_one_run(tmp_path, shared_dir, cheap_parts):
    from deepmetric.datasets.manifest import load

    items = load(shared_dir / "dfdc-faces" / "labels.csv", head=6)
    one = Extractor(*cheap_parts, cache_dir=tmp_path / "one", progress=False)
    assert one.run(items).n_extracted == 6
    ex = Extractor(*cheap_parts, cache_dir=tmp_path / "three", progress=False)
    out = extract_sharded(ex, items, jobs=3, executor="none", folder=tmp_path / "shards",
                          progress=False)
    assert out.failed == [] and out.report["n_extracted"] == 6
    assert [s["n_items"] for s in out.report["shards"]] == [2, 2, 2]
    files = lambda root: {p.relative_to(root): p.read_bytes()  # noqa: E731
                          for p in root.rglob("*.npz")}
    assert files(tmp_path / "three") == files(tmp_path / "one")
    again = extract_sharded(ex, items, jobs=3, executor="none", folder=tmp_path / "shards",
                            progress=False)
    assert again.report["n_extracted"] == 0 and again.report["n_cached"] == 6


def test_a_locked_clip_is_skipped_and_revisited_not_waited_on(tmp_path, shared_dir,
                                                              cheap_parts):
    from deepmetric.datasets.manifest import load

    items = load(shared_dir / "dfdc-faces" / "labels.csv", head=3)
    ex = Extractor(*cheap_parts, cache_dir=tmp_path, progress=False)
    cache = ex.cache
    seen: list[int] = []
    held = threading.Event()
    release = threading.Event()

    def other_job():  # holds the first clip's lock (a separate open file: flock conflicts)
        with cache.try_lock(items["path"][0]) as got:
            assert got
            held.set()
            release.wait(120)

    t = threading.Thread(target=other_job)
    t.start()
    held.wait(30)

    def progress(done, total):
        seen.append(done)
        if done == 2:  # the two free clips are done while the first is still locked
            assert not cache.has(items["path"][0])
            release.set()

    t0 = time.time()
    rep = ex.run(items, on_progress=progress)
    t.join(30)
    assert seen[-1] == 3 and rep.n_extracted == 3 and time.time() - t0 < 120
    assert cache.has(items["path"][0])
