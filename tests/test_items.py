"""Manifest helpers beyond validation: self-blended pseudo-fake rows."""

from __future__ import annotations

import pandas as pd
import pytest

from deepmetric.items import ManifestError, add_self_blended, validate_manifest


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
