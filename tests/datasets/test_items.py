"""Manifest helpers beyond validation: self-blended pseudo-fake rows."""

from __future__ import annotations

import pandas as pd
import pytest

from deepmetric.datasets.items import ManifestError, add_self_blended, validate_manifest


@pytest.fixture
def manifest(tmp_path):
    files = []
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / name).write_bytes(b"x")
        files.append(str(tmp_path / name))
    return validate_manifest(pd.DataFrame({"path": files, "label": ["real", "fake", "real"],
                                           "group": ["g1", "g1", "g2"],
                                           "method": ["real", "Deepfakes", "real"]}))


def test_copies_of_real_items_are_train_only_fakes_in_the_same_group(manifest):
    out = add_self_blended(manifest, copies=2)
    new = out.iloc[3:]
    assert len(out) == 3 + 2 * 2
    assert out.iloc[:3]["role"].eq("both").all() and out.iloc[:3]["blend_seed"].isna().all()
    assert new["label"].eq(1).all() and new["role"].eq("train").all()
    assert new["method"].eq("self-blended").all()
    assert new["video_id"].tolist() == ["a#sbi0", "c#sbi0", "a#sbi1", "c#sbi1"]
    assert new["group"].tolist() == ["g1", "g2", "g1", "g2"]
    assert new["blend_seed"].tolist() == [0, 0, 1, 1]
    assert out["video_id"].is_unique


def test_only_makes_the_real_fakes_test_only(manifest):
    out = add_self_blended(manifest, copies=1, only=True)
    assert out.set_index("video_id")["role"].to_dict() == {
        "a": "both", "b": "test", "c": "both", "a#sbi0": "train", "c#sbi0": "train"}


def test_bad_requests(manifest):
    with pytest.raises(ValueError, match="copies must be"):
        add_self_blended(manifest, copies=-1)
    with pytest.raises(ManifestError, match="already has self-blended"):
        add_self_blended(add_self_blended(manifest, 1), 1)
    with pytest.raises(ManifestError, match="no real item"):
        add_self_blended(manifest[manifest["label"] == 1], 1)


def _clip_manifest(tmp_path, **cols):
    files = []
    for name in ("v1-0.png", "v1-1.png", "v2-0.png", "w.png"):
        (tmp_path / name).write_bytes(b"x")
        files.append(str(tmp_path / name))
    df = pd.DataFrame({"path": files, "label": [1, 1, 0, 0], "group": ["a", "a", "b", "c"],
                       "clip": ["v1", "v1", "v2", None], **cols})
    return validate_manifest(df, source="crops.csv")


def test_clip_column_is_normalised_and_checked(tmp_path):
    m = _clip_manifest(tmp_path)
    assert m["clip"].tolist() == ["v1", "v1", "v2", ""]  # empty: an item on its own
    with pytest.raises(ManifestError, match=r"crops.csv row 1: clip 'v1' joins items of "
                                            r"different labels .*row 2"):
        _clip_manifest(tmp_path, label=[1, 0, 0, 0])
    with pytest.raises(ManifestError, match=r"row 1: clip 'v1' joins items of different "
                                            r"groups \('a' here, 'z' in row 2\)"):
        _clip_manifest(tmp_path, group=["a", "z", "b", "c"])
    with pytest.raises(ManifestError, match=r"row 3: clip 'w' is also the video_id"):
        _clip_manifest(tmp_path, clip=["v1", "v1", "w", ""], video_id=["p", "q", "r", "w"])


def test_self_blended_copies_of_a_clip_form_their_own_clip(tmp_path):
    out = add_self_blended(_clip_manifest(tmp_path), copies=1)
    new = out[out["role"] == "train"]
    assert new["clip"].tolist() == ["v2#sbi0", ""]
    # validated again as it is (a copy shares its clip's file, and is told apart by its
    # blend_seed: without it, one file with two labels is refused)
    assert validate_manifest(out)["clip"].tolist()[-2:] == ["v2#sbi0", ""]
    with pytest.raises(ManifestError, match="one file through two paths with different"):
        validate_manifest(out.drop(columns=["blend_seed", "role"]))
