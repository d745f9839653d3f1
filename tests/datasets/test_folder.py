"""real/ + fake/ folder adapter on the DFDC crop fixture and synthetic trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepmetric.datasets import folder
from deepmetric.datasets.items import ManifestError

CROPS = r"^(?P<group>[^-]+)-\d+-\d+$"


def test_prepared_dataset_default_groups(dfdc_dir: Path):
    m = folder.load(dfdc_dir / "prepared_dataset")
    assert len(m) == 22 and m["label"].sum() == 11
    assert set(m["kind"]) == {"image"}
    assert set(m["method"]) == {"real", "fake"}
    assert m["group"].nunique() == 22  # default: one group per file stem
    assert m["video_id"].iloc[0] == "real/abarnvbtwb-000-00.png"


def test_prepared_dataset_grouped_by_video(dfdc_dir: Path):
    m = folder.load(dfdc_dir / "prepared_dataset", group_regex=CROPS)
    sizes = m.groupby("group").size().to_dict()
    assert sizes == {"abarnvbtwb": 11, "aagfhgtpmv": 1, "aapnvogymq": 5, "abofeumbvv": 1,
                     "abqwwspghj": 4}
    assert (m.loc[m["group"] == "abarnvbtwb", "label"] == 0).all()
    # unnamed capture group and plain match work too
    assert folder.load(dfdc_dir / "prepared_dataset",
                       group_regex=r"^([a-z]+)-")["group"].nunique() == 5
    assert folder.load(dfdc_dir / "prepared_dataset",
                       group_regex=r"^[a-z]+")["group"].nunique() == 5


def test_unmatched_file_and_bad_regex(dfdc_dir: Path):
    with pytest.raises(ManifestError, match=r"abarnvbtwb-000-00.png.*does not match"):
        folder.load(dfdc_dir / "prepared_dataset", group_regex=r"^\d+$")
    with pytest.raises(ManifestError, match="invalid group_regex"):
        folder.load(dfdc_dir / "prepared_dataset", group_regex="(")


def test_recursive_extensions_custom_dirs(tmp_path: Path):
    for rel in ["orig/a/x.mp4", "orig/b/y.MP4", "orig/.hidden/z.mp4", "orig/notes.txt",
                "Deepfakes/x.mp4", "FaceSwap/sub/y.png", "FaceSwap/.DS_Store"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    m = folder.load(tmp_path, real_dirs="orig", fake_dirs=["Deepfakes", "FaceSwap"])
    assert m["video_id"].tolist() == ["orig/a/x.mp4", "orig/b/y.MP4", "Deepfakes/x.mp4",
                                      "FaceSwap/sub/y.png"]
    assert m["method"].tolist() == ["real", "real", "Deepfakes", "FaceSwap"]
    assert m["kind"].tolist() == ["video", "video", "video", "image"]
    # same stem in real and fake → same group by default
    assert m["group"].tolist() == ["x", "y", "x", "y"]
    only = folder.load(tmp_path, real_dirs="orig", fake_dirs=["FaceSwap"], extensions=["PNG"])
    assert only["video_id"].tolist() == ["FaceSwap/sub/y.png"]


def test_missing_and_empty(tmp_path: Path):
    (tmp_path / "real").mkdir()
    with pytest.raises(ManifestError, match="fake folder 'fake' not found"):
        folder.load(tmp_path)
    (tmp_path / "fake").mkdir()
    with pytest.raises(ManifestError, match="no file"):
        folder.load(tmp_path)
    with pytest.raises(ManifestError, match="both real and fake"):
        folder.load(tmp_path, real_dirs=["real"], fake_dirs=["real"])


def test_crops_joined_into_clips_per_video_and_face(dfdc_dir: Path):
    m = folder.load(dfdc_dir / "prepared_dataset", clip_regex=r"^([^-]+)-\d+-(\d+)$")
    assert m.groupby("clip").size().to_dict() == {
        "abarnvbtwb-00": 11, "aagfhgtpmv-00": 1, "aapnvogymq-00": 2, "aapnvogymq-01": 3,
        "abofeumbvv-00": 1, "abqwwspghj-00": 4}
    assert (m["group"] == m["clip"]).all()  # no group_regex: a file's group is its clip
    assert m["video_id"].is_unique  # the files stay items
    both = folder.load(dfdc_dir / "prepared_dataset", group_regex=CROPS,
                       clip_regex=r"^(?P<clip>[^-]+)-")
    assert (both["group"] == both["clip"]).all() and both["clip"].nunique() == 5
    with pytest.raises(ManifestError, match=r"does not match clip_regex"):
        folder.load(dfdc_dir / "prepared_dataset", clip_regex=r"^x")
    with pytest.raises(ManifestError, match="invalid clip_regex"):
        folder.load(dfdc_dir / "prepared_dataset", clip_regex="(")


def test_a_clip_across_real_and_fake_folders_is_an_error(tmp_path: Path):
    for rel in ["real/v-0.png", "fake/v-1.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    with pytest.raises(ManifestError, match=r"clip 'v' joins items of different labels"):
        folder.load(tmp_path, clip_regex=r"^(\w+)-")


def test_symlinked_folders_are_followed_and_broken_links_named(tmp_path: Path):
    """Issue #33: a symlinked folder and a broken link were skipped without a word."""
    elsewhere = tmp_path / "elsewhere"
    for rel in ["real/a.mp4", "fake/b.mp4", "elsewhere/c.mp4", "elsewhere/sub/d.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    (tmp_path / "real" / "linked").symlink_to(elsewhere, target_is_directory=True)
    (tmp_path / "real" / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (tmp_path / "fake" / "loop").symlink_to(tmp_path / "fake", target_is_directory=True)
    with pytest.warns(UserWarning, match="2 entries passed over") as said:
        m = folder.load(tmp_path)
    assert m["video_id"].tolist() == ["real/a.mp4", "real/linked/c.mp4",
                                      "real/linked/sub/d.png", "fake/b.mp4"]
    text = str(said[0].message)
    assert f"{tmp_path / 'real' / 'gone.mp4'}: broken link" in text
    assert f"{tmp_path / 'fake' / 'loop'}: link to a folder already listed" in text
