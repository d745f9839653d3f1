"""Celeb-DF adapter on a tiny synthetic tree (no Celeb-DF data exists here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepmetric.datasets import celebdf
from deepmetric.datasets.items import ManifestError

FILES = {
    "Celeb-real": ["id0_0000", "id0_0001", "id1_0000", "id2_0000", "id5_0003"],
    "Celeb-synthesis": ["id0_id1_0000", "id1_id2_0000", "id5_id6_0003"],
    "YouTube-real": ["00000", "00001"],
}
# official convention: 1 = real, 0 = fake
TEST_LIST = ["1 YouTube-real/00001.mp4", "1 Celeb-real/id5_0003.mp4",
             "0 Celeb-synthesis/id5_id6_0003.mp4", ""]


def _tree(root: Path, files=FILES, listing=TEST_LIST) -> Path:
    for folder, names in files.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for n in names:
            (root / folder / f"{n}.mp4").touch()
    if listing is not None:
        (root / celebdf.TEST_LIST).write_text("\n".join(listing), encoding="utf-8")
    return root


def test_labels_groups_splits(tmp_path: Path):
    m = celebdf.load(_tree(tmp_path)).set_index("video_id")
    assert len(m) == 10
    assert m["label"].sum() == 3
    assert (m.loc[m["method"] == "Celeb-synthesis", "label"] == 1).all()
    assert (m.loc[[i for i in m.index if "real" in i], "label"] == 0).all()
    g = m["group"]
    # id0–id1–id2 chained by two fakes; id5–id6 by one
    assert g["Celeb-real/id0_0000.mp4"] == g["Celeb-real/id1_0000.mp4"] \
        == g["Celeb-real/id2_0000.mp4"] == g["Celeb-synthesis/id1_id2_0000.mp4"] \
        == "id0-id1-id2"
    assert g["Celeb-real/id5_0003.mp4"] == g["Celeb-synthesis/id5_id6_0003.mp4"] == "id5-id6"
    assert g["YouTube-real/00000.mp4"] != g["YouTube-real/00001.mp4"]
    assert g.nunique() == 4
    test = set(m.index[m["split"] == "test"])
    assert test == {"YouTube-real/00001.mp4", "Celeb-real/id5_0003.mp4",
                    "Celeb-synthesis/id5_id6_0003.mp4"}
    assert set(m["split"]) == {"train", "test"}


def test_without_list_all_train_and_lowercase_youtube(tmp_path: Path):
    files = {"Celeb-real": ["id0_0000"], "Youtube-real": ["00000"]}
    m = celebdf.load(_tree(tmp_path, files, listing=None))
    assert list(m["split"]) == ["train", "train"]
    assert "YouTube-real/00000.mp4" in set(m["video_id"])


def test_list_label_must_agree_with_folder(tmp_path: Path):
    # "1" means REAL in the official list: listing a synthesis clip as 1 is a mistake
    _tree(tmp_path, listing=["1 Celeb-synthesis/id0_id1_0000.mp4"])
    with pytest.raises(ManifestError, match=r"line 1: listed as real.*Celeb-synthesis"):
        celebdf.load(tmp_path)


@pytest.mark.parametrize("line, message", [
    ("2 Celeb-real/id0_0000.mp4", "label '2'"),
    ("Celeb-real/id0_0000.mp4", "expected '<label> <relpath>'"),
    ("0 Other/x.mp4", "not in one of"),
    ("1 Celeb-real/id9_0000.mp4", "listed file not found"),
])
def test_bad_list_lines_name_the_line(tmp_path: Path, line: str, message: str):
    _tree(tmp_path, listing=["1 Celeb-real/id0_0000.mp4", line])
    with pytest.raises(ManifestError, match=rf"List_of_testing_videos.txt line 2: .*{message}"):
        celebdf.load(tmp_path)


def test_listed_missing_file_kept_without_check(tmp_path: Path):
    _tree(tmp_path, listing=["1 Celeb-real/id9_0000.mp4"])
    m = celebdf.load(tmp_path, check_files=False).set_index("video_id")
    assert m.loc["Celeb-real/id9_0000.mp4", "split"] == "test"
    assert m.loc["Celeb-real/id9_0000.mp4", "group"] == "id9"


def test_bad_clip_name(tmp_path: Path):
    _tree(tmp_path, {"Celeb-synthesis": ["id0_0000"]}, listing=None)
    with pytest.raises(ManifestError, match=r"id0_0000\.mp4: .*idX_idY_NNNN"):
        celebdf.load(tmp_path)


def test_missing_folders(tmp_path: Path):
    with pytest.raises(ManifestError, match="none of the Celeb-DF folders"):
        celebdf.load(tmp_path)
