"""Built-in demo set: a small build in a temporary cache (runs MTCNN once per base image)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepmetric.augment.blend import face_outline
from deepmetric.datasets import demo
from deepmetric.datasets.items import validate_manifest

N_CLIPS, FRAMES, SIZE = 3, 25, 160


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("demo-cache")
    return root, demo.load(root, n_clips=N_CLIPS, frames=FRAMES, size=SIZE, seed=0)


def _frames(path: str) -> np.ndarray:
    cap = cv2.VideoCapture(path)
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return np.stack(out)


def test_counts_and_columns(built):
    _, m = built
    assert len(m) == 2 * N_CLIPS
    assert m["label"].tolist().count(1) == N_CLIPS
    assert sorted(set(m["method"])) == ["real", "self-blended"]
    assert (m["label"] == (m["method"] == "self-blended")).all()
    assert m.groupby("group")["label"].apply(sorted).tolist() == [[0, 1]] * N_CLIPS
    assert sorted(set(m["identity"])) == sorted(demo.BASES)
    assert set(m["kind"]) == {"video"}
    validate_manifest(m)  # the returned manifest is already valid


def test_clips_decode_to_the_stated_frames(built):
    _, m = built
    for path in m["path"]:
        frames = _frames(path)
        assert frames.shape == (FRAMES, SIZE, SIZE, 3), path
    # the camera moves: first and last frames differ
    real = _frames(m["path"].iloc[0])
    assert np.abs(real[0].astype(int) - real[-1].astype(int)).mean() > 3


def test_rerun_reuses_cache(built):
    root, m = built
    files = sorted(p for p in root.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    again = demo.load(root, n_clips=N_CLIPS, frames=FRAMES, size=SIZE, seed=0)
    assert again.equals(m)
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert sorted(p for p in root.rglob("*") if p.is_file()) == files


def test_fakes_differ_inside_the_face(built):
    root, m = built
    folder = Path(m["path"].iloc[0]).parents[1]
    tracks = np.load(folder / "landmarks.npz")
    for group in sorted(set(m["group"])):
        rows = m[m["group"] == group].set_index("method")
        real = _frames(rows.loc["real", "path"]).astype(np.float32)
        fake = _frames(rows.loc["self-blended", "path"]).astype(np.float32)
        track = tracks[group]
        assert track.shape == (FRAMES, 5, 2)
        inside, outside = [], []
        for t in range(0, FRAMES, 6):
            face = np.zeros((SIZE, SIZE), np.uint8)
            hull = cv2.convexHull(face_outline(track[t]).astype(np.float32)).astype(np.int32)
            cv2.fillConvexPoly(face, hull, 1)
            far = cv2.dilate(face, np.ones((41, 41), np.uint8)) == 0
            diff = np.abs(real[t] - fake[t]).mean(axis=2)
            inside.append(diff[face == 1].mean())
            outside.append(diff[far].mean())
        assert np.mean(inside) > 4, group
        # outside the face only the encoder's rate control differs between the two files
        assert np.mean(outside) < 3, group
        assert np.mean(inside) > 2 * np.mean(outside), group


def test_changed_parameters_build_a_new_folder(built, tmp_path):
    root, m = built
    key_dir = Path(m["path"].iloc[0]).parents[1]
    marker = json.loads((key_dir / demo.MARKER).read_text())
    assert marker["params"]["frames"] == FRAMES
    # a half-written folder for the new parameters (no marker) is replaced
    stale = root / key_dir.name.replace(f"-f{FRAMES}-", "-f26-")
    stale.mkdir()
    (stale / "junk.mp4").write_bytes(b"partial")
    other = demo.load(root, n_clips=N_CLIPS, frames=26, size=SIZE, seed=0)
    assert Path(other["path"].iloc[0]).parents[1] == stale
    assert not (stale / "junk.mp4").exists() and (stale / demo.MARKER).is_file()
    assert _frames(other["path"].iloc[0]).shape[0] == 26
    # the first build is untouched and no temporary folder is left behind (the builds'
    # lock files stay, as lock files do)
    assert (key_dir / demo.MARKER).is_file()
    assert not [p for p in root.iterdir() if p.name.startswith(".")
                and not p.name.endswith(".lock")]


def test_a_killed_build_leaves_no_folder_behind(built):
    """Issue #33: a build killed midway (SIGKILL: nothing of it runs again) left its
    temporary folder forever; the next build removes it, and never a live build's."""
    import signal
    import subprocess
    import sys
    import time

    root, _ = built
    code = ("import sys; from deepmetric.datasets import demo; "
            "demo.load(sys.argv[1], n_clips=40, frames=25, size=64, seed=1)")
    child = subprocess.Popen([sys.executable, "-c", code, str(root)])
    try:
        deadline = time.monotonic() + 120
        while not list(root.glob(".*.building-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(root.glob(".*.building-*")), "the child never started building"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    dead = list(root.glob(".*.building-*"))
    assert len(dead) == 1 and any(dead[0].iterdir())  # what a killed build leaves
    demo.load(root, n_clips=1, frames=2, size=64, seed=0)  # another build, another key
    assert not dead[0].exists()
    assert not list(root.glob(".*.building-*"))


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPMETRIC_CACHE", str(tmp_path))
    assert demo.cache_dir() == tmp_path / "demo"
    assert demo.cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("DEEPMETRIC_CACHE")
    assert demo.cache_dir() == Path.home() / ".cache" / "deepmetric" / "demo"
    with pytest.raises(ValueError, match="n_clips >= 1"):
        demo.load(tmp_path, n_clips=0)
