"""DFDC adapter: the ../shared Kaggle sample (5 listed, 2 shipped) and synthetic folders."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from deepmetric.datasets import dfdc
from deepmetric.datasets.items import ManifestError


def test_sample_skips_missing_with_warning(dfdc_dir: Path):
    videos = dfdc_dir / "train_sample_videos"
    with pytest.warns(UserWarning, match=r"3 of 5 listed videos not found.*abarnvbtwb\.mp4"):
        m = dfdc.load(videos)
    assert sorted(m["video_id"]) == ["abofeumbvv.mp4", "abqwwspghj.mp4"]
    assert m["label"].tolist() == [1, 1]
    assert sorted(m["group"]) == ["atvmxvwyns", "qzimuostzz"]
    assert set(m["split"]) == {"train"} and set(m["method"]) == {"DFDC"}
    # searched recursively from the parent too
    with pytest.warns(UserWarning):
        parent = dfdc.load(dfdc_dir)
    assert sorted(parent["video_id"]) == ["train_sample_videos/abofeumbvv.mp4",
                                          "train_sample_videos/abqwwspghj.mp4"]


def test_sample_unchecked_keeps_all_entries(dfdc_dir: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = dfdc.load(dfdc_dir / "train_sample_videos", check_files=False)
    assert len(m) == 5
    g = dict(zip(m["video_id"], m["group"]))
    assert g["abarnvbtwb.mp4"] == "abarnvbtwb"  # REAL: its own name
    assert m.set_index("video_id").loc["abarnvbtwb.mp4", "label"] == 0


def _part(folder: Path, meta: object, files=()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.json").write_text(
        meta if isinstance(meta, str) else json.dumps(meta), encoding="utf-8")
    for f in files:
        (folder / f).touch()
    return folder


def test_parts_share_groups_with_their_original(tmp_path: Path):
    _part(tmp_path / "part_0", {"r.mp4": {"label": "REAL", "split": "train", "original": None},
                                "f.mp4": {"label": "FAKE", "split": "train",
                                          "original": "r.mp4"}}, ["r.mp4", "f.mp4"])
    _part(tmp_path / "part_1", {"g.mp4": {"label": "FAKE", "original": "r.mp4"}}, ["g.mp4"])
    m = dfdc.load(tmp_path).set_index("video_id")
    assert m["group"].to_dict() == {"part_0/f.mp4": "r", "part_0/r.mp4": "r",
                                    "part_1/g.mp4": "r"}
    assert m.loc["part_1/g.mp4", "split"] == "train"


def test_none_present_is_an_error(tmp_path: Path):
    _part(tmp_path, {"x.mp4": {"label": "REAL"}})
    with pytest.warns(UserWarning), pytest.raises(ManifestError, match="none of the 1 videos"):
        dfdc.load(tmp_path)


@pytest.mark.parametrize("meta, message", [
    ("{not json", "not valid JSON"),
    ([1, 2], "expected an object"),
    ({"x.mp4": {"label": "MAYBE"}}, r"entry 'x.mp4': unknown label 'MAYBE'"),
    ({"x.mp4": {"label": "FAKE", "original": None}}, r"entry 'x.mp4': a FAKE entry needs"),
    ({"x.mp4": "FAKE"}, r"entry 'x.mp4': expected an object"),
])
def test_bad_metadata_names_file_and_entry(tmp_path: Path, meta, message):
    _part(tmp_path, meta, ["x.mp4"])
    with pytest.raises(ManifestError, match=rf"metadata.json.*{message}"):
        dfdc.load(tmp_path)


def test_no_metadata(tmp_path: Path):
    with pytest.raises(ManifestError, match="no metadata.json"):
        dfdc.load(tmp_path)
