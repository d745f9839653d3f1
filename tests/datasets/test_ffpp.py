"""FaceForensics++ adapter: the ../shared FF++ c23 copy and small synthetic trees."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

from deepmetric.datasets import connected_groups, ffpp, load_dataset
from deepmetric.datasets.items import ManifestError

PRESENT = ("Deepfakes", "Face2Face", "FaceSwap")


def _partition(keys, groups) -> set[frozenset]:
    out: dict[str, set] = {}
    for k, g in zip(keys, groups):
        out.setdefault(g, set()).add(k)
    return {frozenset(v) for v in out.values()}


def test_shared_copy_counts_and_groups(ffpp_dir: Path):
    with pytest.warns(UserWarning, match="NeuralTextures"):
        m = ffpp.load(ffpp_dir)
    assert len(m) == 142
    assert m["method"].value_counts().to_dict() == {
        "real": 47, "Deepfakes": 47, "Face2Face": 24, "FaceSwap": 24}
    assert (m["label"] == (m["method"] != "real")).all()
    assert m["video_id"].is_unique and m["kind"].eq("video").all()

    ref = pd.read_csv(ffpp_dir / "labels.csv", dtype=str)
    rel = [Path(p).relative_to(ffpp_dir).as_posix() for p in m["path"]]
    assert sorted(rel) == sorted(ref["path"])
    by_path = dict(zip(rel, m["group"]))
    assert _partition(ref["path"], [by_path[p] for p in ref["path"]]) == \
        _partition(ref["path"], ref["group"])
    assert m["group"].nunique() == ref["group"].nunique() == 25
    # the names agree too: sorted ids joined by "-"
    assert set(m["group"]) == set(ref["group"])


def test_methods_subset_and_real_only(ffpp_dir: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing missing → no warning
        m = ffpp.load(ffpp_dir, methods=["FaceSwap"], include_real=False)
    assert len(m) == 24 and set(m["method"]) == {"FaceSwap"}
    real = ffpp.load(ffpp_dir, methods=())
    assert len(real) == 47 and real["label"].eq(0).all()
    assert load_dataset("ffpp", root=ffpp_dir, methods=PRESENT).shape[0] == 142


def test_no_requested_method_found_is_an_error(ffpp_dir: Path):
    with pytest.raises(ManifestError, match="NeuralTextures"):
        ffpp.load(ffpp_dir, methods=("NeuralTextures",))
    with pytest.raises(ManifestError, match="c40"):
        ffpp.load(ffpp_dir, compression="c40")


def _tree(root: Path, real: list[str], fakes: dict[str, list[str]]) -> Path:
    d = root / "original_sequences" / "youtube" / "c23" / "videos"
    d.mkdir(parents=True)
    for r in real:
        (d / f"{r}.mp4").touch()
    for method, names in fakes.items():
        d = root / "manipulated_sequences" / method / "c23" / "videos"
        d.mkdir(parents=True)
        for n in names:
            (d / f"{n}.mp4").touch()
    return root


def test_union_find_joins_chains(tmp_path: Path):
    root = _tree(tmp_path, ["001", "002", "003", "004", "005"],
                 {"Deepfakes": ["001_002", "002_003"], "FaceSwap": ["004_009"]})
    (root / "original_sequences/youtube/c23/videos/.DS_Store").touch()
    m = ffpp.load(root, methods=["Deepfakes", "FaceSwap"])
    g = dict(zip(m["video_id"], m["group"]))
    assert g["real/001"] == g["real/002"] == g["real/003"] == g["Deepfakes/001_002"] \
        == g["Deepfakes/002_003"] == "001-002-003"
    assert g["real/004"] == g["FaceSwap/004_009"] == "004-009"
    assert g["real/005"] == "005"
    assert m.loc[m["video_id"] == "FaceSwap/004_009", "source_id"].item() == "009"


def test_bad_fake_name_names_the_file(tmp_path: Path):
    root = _tree(tmp_path, ["001"], {"Deepfakes": ["001-002"]})
    with pytest.raises(ManifestError, match=r"001-002\.mp4.*TTT_SSS"):
        ffpp.load(root, methods=["Deepfakes"])


def test_missing_root_and_originals(tmp_path: Path):
    with pytest.raises(ManifestError, match="root not found"):
        ffpp.load(tmp_path / "nope")
    with pytest.raises(ManifestError, match="originals not found"):
        ffpp.load(tmp_path)


def test_connected_groups_long_component_name():
    groups = connected_groups(nodes=["a"], edges=[("b", "c"), ("c", "d"), ("d", "e"),
                                                  ("e", "f")])
    assert groups["a"] == "a"
    assert {groups[k] for k in "bcdef"} == {"b+4"}
