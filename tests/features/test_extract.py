"""End-to-end extraction on real clips: cache, reruns, failures, interruption.

The extraction machinery (cache, reruns, failures, a killed run resumed, clips of frames)
runs on a cheap real detector and backbone (``cheap_parts``: whole frames, a small timm
network): the fast tier. What depends on MTCNN or FaceNet themselves is marked ``slow``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from deepmetric.datasets.items import validate_manifest
from deepmetric.features.extract import Extractor
from deepmetric.features.results import ExtractionError
from deepmetric.video.faces import FaceDetector


@pytest.fixture(scope="module")
def small_manifest(ffpp_manifest):
    # one real clip and one fake of each method, from different groups
    picks = [ffpp_manifest[ffpp_manifest["method"] == m].iloc[0]
             for m in ("real", "Deepfakes", "Face2Face")]
    return pd.DataFrame(picks).reset_index(drop=True)


def test_extract_then_rerun_does_nothing(tmp_path, small_manifest, cheap_parts):
    ex = Extractor(*cheap_parts, n_frames=4, cache_dir=tmp_path, spectrum_bins=8,
                   progress=False)
    r1 = ex.run(small_manifest)
    assert (r1.n_extracted, r1.n_cached, r1.n_failed) == (3, 0, 0)
    assert r1.n_faces == 12
    files = sorted(ex.cache.dir.glob("*.npz"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    t = time.perf_counter()
    r2 = ex.run(small_manifest)
    assert time.perf_counter() - t < 5
    assert (r2.n_extracted, r2.n_cached) == (0, 3)
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    (name,) = cheap_parts[1].feature_names()
    feats = ex.features(small_manifest, blocks=[name, "spectrum"])
    d = feats.blocks[name].stop
    assert feats.X.shape == (12, d + 8) and d > 0
    assert feats.blocks == {name: slice(0, d), "spectrum": slice(d, d + 8)}
    assert set(feats.frames["video_id"]) == set(small_manifest["video_id"])
    assert feats.y.tolist() == [0] * 4 + [1] * 8
    with pytest.raises(KeyError, match="feature block 'repeat_3'"):
        ex.features(small_manifest, blocks=["repeat_3"])


@pytest.mark.slow
def test_facenet_features_are_unit_embeddings_of_the_faces_found(tmp_path, small_manifest,
                                                                 detector, embedder):
    ex = Extractor(detector, embedder, n_frames=4, cache_dir=tmp_path, spectrum_bins=8,
                   progress=False)
    assert ex.run(small_manifest).n_faces == 12
    feats = ex.features(small_manifest, blocks=["embedding", "spectrum"])
    assert feats.blocks == {"embedding": slice(0, 512), "spectrum": slice(512, 520)}
    np.testing.assert_allclose(np.linalg.norm(feats.X[:, :512], axis=1), 1, atol=1e-5)


def test_failures_are_recorded_and_work_is_kept(tmp_path, small_manifest, cheap_parts):
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    extra = validate_manifest(pd.DataFrame({"path": [str(bad), str(empty)],
                                            "label": [1, 0]}))
    items = pd.concat([small_manifest.iloc[:1], extra], ignore_index=True)
    ex = Extractor(*cheap_parts, n_frames=2, cache_dir=tmp_path / "c", progress=False)
    with pytest.warns(UserWarning, match="2 item"):
        r = ex.run(items)
    assert r.n_extracted == 1 and r.n_failed == 2
    errors = {f["video_id"]: f["error"] for f in r.failures}
    assert "empty file" in errors["empty"] and "broken" in r.failures[0]["path"]
    assert "FAILED" in r.summary()
    feats = ex.features(items, blocks=cheap_parts[1].feature_names())
    assert set(feats.missing["video_id"]) == {"broken", "empty"}
    strict = Extractor(*cheap_parts, n_frames=2, cache_dir=tmp_path / "c",
                       on_error="raise", progress=False)
    with pytest.raises(ExtractionError, match="broken.mp4"):
        strict.run(items)
    assert strict.cache.has(items.path[0])  # the finished clip is still there


@pytest.mark.slow  # the real MTCNN / FaceNet
def test_images_and_no_face_items(tmp_path, faces_dir, detector, embedder):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(blank)
    photo = faces_dir / "test_images" / "paul_rudd" / "1.jpg"
    items = validate_manifest(pd.DataFrame({"path": [str(photo), str(blank)],
                                            "label": [0, 1]}))
    ex = Extractor(detector, embedder, cache_dir=tmp_path / "c", progress=False)
    r = ex.run(items)
    assert r.n_extracted == 2 and r.no_face == ["blank"]
    feats = ex.features(items)
    assert feats.X.shape == (1, 512)
    assert feats.missing.set_index("video_id").loc["blank", "reason"] == "no face in any frame"



def test_clip_items_become_the_frames_of_one_video(tmp_path, dfdc_dir, cheap_parts):
    from deepmetric.datasets import folder
    from deepmetric.learn.temporal import pool_frames

    crops = folder.load(dfdc_dir / "prepared_dataset", clip_regex=r"^([^-]+)-\d+-(\d+)$")
    crops = crops[crops["clip"].isin(["abqwwspghj-00", "aapnvogymq-01"])].reset_index(drop=True)
    ex = Extractor(*cheap_parts, cache_dir=tmp_path, progress=False)
    assert ex.run(crops).n_failed == 0
    blocks = cheap_parts[1].feature_names()
    alone = ex.features(crops.drop(columns="clip"), blocks)
    joined = ex.features(crops, blocks)
    np.testing.assert_array_equal(joined.X, alone.X)  # same rows, only relabelled
    f = joined.frames
    assert f["item_id"].tolist() == alone.frames["video_id"].tolist()
    assert f["video_id"].tolist() == [c for c, v in zip(crops["clip"], crops["video_id"])
                                      if v in set(alone.frames["video_id"])]
    for _, rows in f.groupby("video_id"):
        assert rows["frame_index"].tolist() == list(range(len(rows)))
    V, videos = pool_frames(joined.X, f)
    assert videos["video_id"].tolist() == f["video_id"].unique().tolist()
    assert videos["n_frames"].tolist() == f.groupby("video_id", sort=False).size().tolist()
    assert (videos["n_frames"] >= 2).all() and (V > 0).any()

SCRIPT = textwrap.dedent("""
    import sys, pandas as pd
    from deepmetric.features.extract import Extractor
    from deepmetric.features.backbones.timm import TimmEmbedder
    from deepmetric.video.faces import FaceDetector
    items = pd.read_pickle(sys.argv[1])
    Extractor(FaceDetector(device="cpu", whole_image=True),
              TimmEmbedder("resnet10t", sys.argv[3], image_size=64, device="cpu"),
              n_frames=25, cache_dir=sys.argv[2], progress=False).run(items)
    print("DONE")
""")


def test_killed_run_resumes_to_identical_cache(tmp_path, ffpp_manifest, cheap_weights):
    items = ffpp_manifest.iloc[::24].reset_index(drop=True)  # 6 clips
    items.to_pickle(tmp_path / "items.pkl")
    script = tmp_path / "extract.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    args = lambda cache: [sys.executable, str(script), str(tmp_path / "items.pkl"),  # noqa: E731
                          str(cache), str(cheap_weights)]
    run = lambda cache: subprocess.run(args(cache), env=env, capture_output=True,  # noqa: E731
                                       text=True, timeout=600)

    # interrupted run: SIGKILL once a few clips are cached
    proc = subprocess.Popen(args(tmp_path / "killed"), env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        done = list((tmp_path / "killed").glob("*/*.npz"))
        if len(done) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = list((tmp_path / "killed").glob("*/*.npz"))
    assert 3 <= len(partial) < len(items), "the kill did not land midway"
    assert "DONE" in run(tmp_path / "killed").stdout            # resume
    assert "DONE" in run(tmp_path / "clean").stdout             # uninterrupted reference
    killed = {p.name: p.read_bytes() for p in (tmp_path / "killed").glob("*/*.npz")}
    clean = {p.name: p.read_bytes() for p in (tmp_path / "clean").glob("*/*.npz")}
    assert len(clean) == len(items)
    assert killed == clean


@pytest.mark.slow  # the real MTCNN / FaceNet
def test_self_blended_copies_share_the_detection_and_differ_in_the_face(
        tmp_path, small_manifest, detector, embedder):
    from deepmetric.datasets.items import add_self_blended

    items = add_self_blended(small_manifest, copies=2)
    assert len(items) == 3 + 2 and items["role"].tolist() == ["both"] * 3 + ["train"] * 2
    ex = Extractor(detector, embedder, n_frames=3, cache_dir=tmp_path, save_crops=True,
                   progress=False)
    r = ex.run(items)
    assert (r.n_extracted, r.n_failed) == (5, 0)
    real = items["path"].iloc[0]
    a, b0, b1 = (ex.cache.load(real), ex.cache.load(real, "sbi0-v1"),
                 ex.cache.load(real, "sbi1-v1"))
    # same frames, boxes and landmarks (detected once), different faces
    np.testing.assert_array_equal(a["box"], b0["box"])
    np.testing.assert_array_equal(a["frame_index"], b1["frame_index"])
    for b in (b0, b1):
        diff = np.abs(a["crops"].astype(int) - b["crops"]).mean(axis=(1, 2, 3))
        assert (diff[a["found"]] > 1).all()
        assert not np.allclose(a["embedding"], b["embedding"], atol=1e-3)
    assert not np.array_equal(b0["crops"], b1["crops"])
    # deterministic: a second cache gets the same blends
    ex2 = Extractor(detector, embedder, n_frames=3, cache_dir=tmp_path / "again",
                    save_crops=True, progress=False)
    ex2.run(items.iloc[[0, 3]])
    np.testing.assert_array_equal(ex2.cache.load(real, "sbi0-v1")["crops"], b0["crops"])
    # rerun: nothing to do; features carry label 1 and role "train" for the copies
    assert ex.run(items).n_cached == 5
    feats = ex.features(items)
    copies = feats.frames[feats.frames["video_id"].str.contains("#sbi")]
    assert len(copies) == 6 and (copies["label"] == 1).all() and (copies["role"] == "train").all()


@pytest.mark.slow  # the real MTCNN / FaceNet
def test_degraded_copies_of_every_item_are_training_only_and_differ_in_texture(
        tmp_path, small_manifest, detector, embedder):
    from deepmetric.datasets.items import ManifestError, add_degraded, add_self_blended

    items = add_degraded(add_self_blended(small_manifest, copies=1, only=True), copies=1)
    # the fakes are test-only under only=True: they get no degraded copy
    assert items["video_id"].str.endswith("#deg0").sum() == 2  # the real and its SBI copy
    assert (items.loc[items["degrade_seed"].notna(), "role"] == "train").all()
    with pytest.raises(ManifestError, match="already has degraded rows"):
        add_degraded(items)
    ex = Extractor(detector, embedder, n_frames=3, cache_dir=tmp_path, save_crops=True,
                   progress=False)
    r = ex.run(items)
    assert (r.n_extracted, r.n_failed) == (len(items), 0)
    real = items["path"].iloc[0]
    a, d, bd = (ex.cache.load(real), ex.cache.load(real, "deg0-v1"),
                ex.cache.load(real, "sbi0-v1-deg0-v1"))
    np.testing.assert_array_equal(a["box"], d["box"])  # detected once
    assert not np.array_equal(a["crops"], d["crops"])
    assert not np.allclose(a["embedding"], d["embedding"], atol=1e-3)
    assert not np.array_equal(ex.cache.load(real, "sbi0-v1")["crops"], bd["crops"])
    assert ex.run(items).n_cached == len(items)
    feats = ex.features(items)
    copies = feats.frames[feats.frames["video_id"].str.endswith("#deg0")]
    assert len(copies) == 6 and (copies["role"] == "train").all()
    assert sorted(copies["label"].unique()) == [0, 1]  # labels kept: a real and a pseudo-fake


@pytest.mark.slow  # the real MTCNN / FaceNet
def test_crops_are_added_on_demand_and_serve_requests_without_them(
        tmp_path, small_manifest, detector, embedder):
    one = small_manifest.iloc[:1]
    plain = Extractor(detector, embedder, n_frames=2, cache_dir=tmp_path, progress=False)
    with_crops = Extractor(detector, embedder, n_frames=2, cache_dir=tmp_path,
                           save_crops=True, progress=False)
    assert plain.cache.dir == with_crops.cache.dir
    assert plain.run(one).n_extracted == 1
    assert "crops" not in plain.cache.load(one["path"].iloc[0])
    assert with_crops.run(one).n_extracted == 1  # the file lacked crops: extracted again
    arrays = plain.cache.load(one["path"].iloc[0])
    assert arrays["crops"].shape == (2, 160, 160, 3)
    assert plain.run(one).n_cached == 1 and with_crops.run(one).n_cached == 1
    feats = with_crops.features(one, ["crops"])
    assert feats.X.dtype == np.uint8 and feats.X.shape == (2, 160 * 160 * 3)
    with pytest.raises(ValueError, match="cannot be mixed"):
        with_crops.features(one, ["crops", "embedding"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_malloc_trim_returns_fragmented_heap_memory():
    """What Extractor(trim_memory=True) calls after each clip hands freed heap pages back."""
    from deepmetric.features.passes import malloc_trim

    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    blocks = [np.ones(512) for _ in range(25_000)]     # 100 MB of 4-KB heap blocks
    keep = blocks[::50]                                # pins scattered pages of the heap
    del blocks
    before = rss_mib()
    assert malloc_trim() is True
    assert before - rss_mib() > 30, "freed heap memory stayed resident"
    assert len(keep) == 500


@pytest.mark.slow  # the real MTCNN / FaceNet
def test_a_second_backbone_is_cached_beside_facenet_and_keys_the_cache(
        tmp_path, faces_dir, detector, embedder):
    from deepmetric.features.backbones.mobilenet import ImageNetEmbedder

    photo = faces_dir / "test_images" / "paul_rudd" / "1.jpg"
    items = validate_manifest(pd.DataFrame({"path": [str(photo)], "label": [0]}))
    plain = Extractor(detector, embedder, cache_dir=tmp_path, progress=False)
    both = Extractor(detector, embedder, cache_dir=tmp_path, progress=False,
                     backbones=[ImageNetEmbedder(layers=["13"], device="cpu")])
    assert plain.cache.dir != both.cache.dir          # a different extraction, its own files
    assert both.run(items).n_extracted == 1
    f = both.features(items, ["embedding", "mnv2/13"])
    assert f.X.shape == (1, 512 + 192) and f.blocks["mnv2/13"] == slice(512, 704)
    # the cached block is what the backbone computes on the cached crop
    arrays = both.cache.load(photo)
    fresh = both.extract_item(photo)  # no cache: recomputed from the file
    np.testing.assert_allclose(arrays["mnv2/13"], fresh["mnv2/13"], atol=1e-5)
    assert both.run(items).n_cached == 1


@pytest.mark.slow  # the real MTCNN / FaceNet
def test_a_self_blended_copy_leaves_out_faces_it_cannot_blend(tmp_path, shared_dir, embedder):
    """Faces taken whole have no landmarks: their self-blended copy would be the real image
    under a fake label, so the copy has no face there (reported), not a mislabelled one."""
    from deepmetric.datasets.items import add_self_blended
    from deepmetric.datasets.manifest import load

    items = load(shared_dir / "dfdc-faces" / "labels.csv", head=4)
    items = add_self_blended(items[items["label"] == 0].head(1), copies=1)
    for whole, faces in ((False, 1), (True, 0)):
        ex = Extractor(FaceDetector(whole_image=whole, fallback="image"), embedder,
                       cache_dir=tmp_path / str(whole), progress=False)
        r = ex.run(items)
        assert r.n_failed == 0
        feats = ex.features(items)
        copy = feats.frames["video_id"].str.contains("#sbi")
        assert int(copy.sum()) == faces
        assert (r.no_face == [items["video_id"].iloc[1]]) == (faces == 0)


@pytest.mark.slow  # the real MTCNN / FaceNet
def test_images_are_embedded_in_batches_with_the_same_features_and_failures_alone(
        tmp_path, shared_dir, detector, embedder):
    """Single images go through FaceNet ``image_batch`` at a time: the cached features
    agree with one pass per image, and a broken image in a batch fails alone, by name."""
    from deepmetric.datasets.manifest import load

    items = load(shared_dir / "dfdc-faces" / "labels.csv", head=9)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    bad_row = validate_manifest(pd.DataFrame({"path": [str(bad)], "label": [1]}))
    items = pd.concat([items.iloc[:4], bad_row, items.iloc[4:]], ignore_index=True)
    whole = FaceDetector(whole_image=True)
    one = Extractor(whole, embedder, cache_dir=tmp_path / "one", spectrum_bins=8,
                    progress=False, image_batch=1)
    many = Extractor(whole, embedder, cache_dir=tmp_path / "many", spectrum_bins=8,
                     progress=False, image_batch=4)
    seen = []
    r1 = one.run(items)
    r4 = many.run(items, on_progress=lambda done, total: seen.append(done))
    for r in (r1, r4):
        assert (r.n_extracted, r.n_failed, r.n_faces) == (9, 1, 9)
        assert r.failures[0]["path"] == str(bad)
    assert seen == list(range(11))  # every item reported once, in order
    good = items.drop(index=4)
    a, b = one.features(good, ["embedding", "spectrum"]), many.features(good, ["embedding",
                                                                               "spectrum"])
    assert a.frames["video_id"].tolist() == b.frames["video_id"].tolist()
    np.testing.assert_allclose(a.X, b.X, rtol=1e-4, atol=1e-4)  # each item got its own rows
    # another order (another sharding) gives other batches, and the very same cache files
    again = Extractor(whole, embedder, cache_dir=tmp_path / "again", spectrum_bins=8,
                      progress=False, image_batch=4)
    again.run(good.iloc[::-1])
    for path in good["path"]:
        x, y = many.cache.load(path), again.cache.load(path)
        assert all(np.array_equal(x[k], y[k], equal_nan=True) for k in ("embedding",
                                                                         "spectrum"))
    with pytest.raises(ValueError, match="image_batch"):
        Extractor(whole, embedder, image_batch=0)


class _CountingEmbedder:
    """The real FaceNet, recording how many crops each forward pass gets."""

    def __init__(self, embedder):
        self.inner, self.passes = embedder, []

    def embed(self, crops):
        self.passes.append(len(crops))
        return self.inner.embed(crops)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.slow  # the real MTCNN / FaceNet
def test_extract_items_batches_images_keeps_order_and_agrees_with_one_at_a_time(
        tmp_path, shared_dir, small_manifest, embedder):
    """What ``deepmetric predict`` runs on a folder: images ``image_batch`` at a time, a clip
    in its own pass, a broken file failing alone in its place, each item's arrays those of
    :meth:`Extractor.extract_item`."""
    from deepmetric.datasets.manifest import load
    from deepmetric.video.frames import MediaError

    crops = list(load(shared_dir / "dfdc-faces" / "labels.csv", head=9)["path"])
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    clip = small_manifest["path"].iloc[0]
    paths = [*crops[:4], str(bad), *crops[4:7], clip, *crops[7:]]
    counting = _CountingEmbedder(embedder)
    whole = FaceDetector(whole_image=True)
    ex = Extractor(whole, counting, n_frames=4, progress=False, image_batch=4)
    out = list(ex.extract_items(paths))
    assert [p for p, _, _ in out] == paths  # every item once, in the order given
    assert counting.passes == [4, 4, 4, 4]  # 4 images | 3 images padded | the clip | 2 padded
    err = out[4][1]
    assert isinstance(err, MediaError) and str(bad) in str(err)
    single = Extractor(whole, embedder, n_frames=4, progress=False)
    for path, arrays, seconds in out[:4] + out[5:]:
        assert seconds >= 0
        ref = single.extract_item(path)
        assert arrays.keys() == ref.keys()
        np.testing.assert_array_equal(arrays["frame_index"], ref["frame_index"])
        np.testing.assert_allclose(arrays["embedding"], ref["embedding"], atol=1e-5)
    assert len(out[8][1]["found"]) == 4  # the clip: its 4 frames, not a single image
    assert list(ex.extract_items([])) == []


# -- issue #33: every per-item step inside the per-item handling ---------------------------------

_BOUND_RUN = textwrap.dedent("""
    import json, sys, warnings
    import pandas as pd
    from deepmetric.datasets.items import validate_manifest
    from deepmetric.features.backbones.timm import TimmEmbedder
    from deepmetric.features.extract import Extractor
    from deepmetric.features.shard import extract_sharded
    from deepmetric.video.faces import FaceDetector

    cache, weights, shards, *paths = sys.argv[1:]
    items = validate_manifest(pd.DataFrame({"path": paths, "label": [0, 1, 0],
                                            "video_id": ["cached", "unreadable", "new"]}))
    emb = TimmEmbedder("resnet10t", weights, image_size=64, device="cpu")
    ex = Extractor(FaceDetector(device="cpu", whole_image=True), emb, n_frames=1,
                   cache_dir=cache, progress=False)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        sharded = extract_sharded(ex, items, jobs=2, executor="none", folder=shards,
                                  progress=False).report
        report = ex.run(items)
        feats = ex.features(items, emb.feature_names())
    print(json.dumps({"report": report.to_dict(), "scored": list(feats.frames["video_id"]),
                      "sharded": {k: sharded[k] for k in ("n_cached", "n_extracted", "n_failed",
                                                          "failed_shards")},
                      "warnings": [str(w.message) for w in said]}, default=str))
""")


def _bound_by_file_modes() -> None:
    """In a child (``preexec_fn``): make root obey file modes, as any other user does: drop
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set before the exec (Linux
    ``prctl(PR_CAPBSET_DROP)``). Nothing to do for another user."""
    import ctypes

    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_an_unreadable_file_and_a_read_only_cache_stop_no_run(tmp_path, faces_dir, cheap_parts,
                                                               cheap_weights):
    """A file the process may not read fails alone, by name (it stopped the whole run: its
    content fingerprint was taken outside the per-item handling), and a cache the process
    may not write serves what it holds and keeps new features in memory. The run is a child
    process bound by file modes (root otherwise ignores them)."""
    import json
    import shutil

    photos = sorted((faces_dir / "test_images").rglob("1.jpg"))[:3]
    files = [tmp_path / f"{i}-{p.parent.name}.jpg" for i, p in enumerate(photos)]
    for src, dst in zip(photos, files):
        shutil.copyfile(src, dst)
    cache = tmp_path / "cache"
    Extractor(*cheap_parts, n_frames=1, cache_dir=cache, progress=False).run(
        validate_manifest(pd.DataFrame({"path": [str(files[0])], "label": [0]})))
    before = sorted(p.relative_to(cache) for p in cache.rglob("*"))
    try:
        for p in [cache, *cache.rglob("*")]:  # a read-only cache
            p.chmod(0o555 if p.is_dir() else 0o444)
        files[1].chmod(0o000)  # a file the process may not read
        proc = subprocess.run([sys.executable, "-c", _BOUND_RUN, str(cache),
                               str(cheap_weights), str(tmp_path / "shards"),
                               *map(str, files)], capture_output=True,
                              text=True, preexec_fn=_bound_by_file_modes, timeout=300)
    finally:
        for p in [files[1], cache, *cache.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["sharded"] == {"n_cached": 1, "n_extracted": 1, "n_failed": 1,
                              "failed_shards": []}  # in the shards as in one run
    rep = out["report"]  # the run after them: the new item is held in memory
    assert (rep["n_cached"], rep["n_extracted"], rep["n_failed"]) == (2, 0, 1)
    assert rep["failures"] == [{"video_id": "unreadable", "path": str(files[1]),
                                "error": "cannot read (Permission denied)"}]
    assert out["scored"] == ["cached", "new"]  # the new item served from memory
    assert any(f"feature cache {cache}/" in w and "cannot be written" in w
               and "kept in memory" in w for w in out["warnings"]), out["warnings"]
    assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == before


def test_one_file_under_several_groups_is_one_group(tmp_path, faces_dir, cheap_parts):
    """Issue #33: the same file under three groups (itself, a symlink, a copy) was accepted,
    so a grouped split could train on a file and test on it again; the groups are joined."""
    import shutil

    a, b, c = sorted((faces_dir / "test_images").rglob("1.jpg"))[:3]
    (link := tmp_path / "link.jpg").symlink_to(a)
    shutil.copyfile(a, copy := tmp_path / "copy.jpg")
    items = validate_manifest(pd.DataFrame({
        "path": [str(a), str(b), str(link), str(c), str(copy)], "label": [0, 1, 0, 1, 0],
        "video_id": ["a", "b", "a-link", "c", "a-copy"],
        "group": ["g-a", "g-b", "g-link", "g-c", "g-copy"]}))
    ex = Extractor(*cheap_parts, n_frames=1, cache_dir=tmp_path / "c", progress=False)
    ex.run(items)
    with pytest.warns(UserWarning, match=r"the same file under several identity groups: 2 "
                                         r"group\(s\) joined") as said:
        feats = ex.features(items, cheap_parts[1].feature_names())
    assert dict(zip(feats.frames["video_id"], feats.frames["group"])) == {
        "a": "g-a", "b": "g-b", "a-link": "g-a", "c": "g-c", "a-copy": "g-a"}
    assert f"{a} (g-a) = {copy} (g-copy)" in str(said[0].message)


def test_a_bad_pixel_bound_is_one_settings_error_not_one_per_item(tmp_path, faces_dir,
                                                                  cheap_parts, monkeypatch):
    """Issue #33: DEEPMETRIC_MAX_PIXELS=abc gave an error per image instead of one."""
    photos = sorted((faces_dir / "test_images").rglob("1.jpg"))[:2]
    items = validate_manifest(pd.DataFrame({"path": [str(p) for p in photos], "label": [0, 1],
                                            "video_id": ["a", "b"]}))
    ex = Extractor(*cheap_parts, n_frames=1, cache_dir=tmp_path / "c", progress=False)
    monkeypatch.setenv("DEEPMETRIC_MAX_PIXELS", "abc")
    with pytest.raises(ValueError, match="DEEPMETRIC_MAX_PIXELS must be a number of pixels, "
                                         "got 'abc'"):
        ex.run(items)
    with pytest.raises(ValueError, match="DEEPMETRIC_MAX_PIXELS"):
        next(ex.extract_items(items["path"]))
    assert not list((tmp_path / "c").rglob("*.npz"))
