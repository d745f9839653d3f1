"""Grouped splits never leak a group; stratification and determinism."""

from __future__ import annotations

import numpy as np
import pytest

from deepmetric.model_selection import (
    check_group_disjoint,
    frame_indices,
    grouped_kfold,
    grouped_train_test_split,
    split_from_column,
)


@pytest.fixture(scope="module")
def videos() -> tuple[np.ndarray, np.ndarray]:
    """120 clips of 40 identities; ~30 % fake; each identity has 3 clips."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 3)
    y = (rng.random(120) < 0.3).astype(int)
    return y, groups


def test_kfold_no_leak_full_cover_and_stratified(videos) -> None:
    y, g = videos
    folds = list(grouped_kfold(y, g, n_splits=5, random_state=0))
    assert len(folds) == 5
    tests = np.concatenate([te for _, te in folds])
    assert np.array_equal(np.sort(tests), np.arange(120))
    for tr, te in folds:
        assert not set(g[tr]) & set(g[te])
        assert np.intersect1d(tr, te).size == 0 and tr.size + te.size == 120
        assert abs(y[te].mean() - y.mean()) < 0.12


def test_kfold_deterministic_and_seed_dependent(videos) -> None:
    y, g = videos
    a = [te.tolist() for _, te in grouped_kfold(y, g, random_state=3)]
    b = [te.tolist() for _, te in grouped_kfold(y, g, random_state=3)]
    c = [te.tolist() for _, te in grouped_kfold(y, g, random_state=4)]
    assert a == b and a != c


def test_kfold_too_few_groups() -> None:
    with pytest.raises(ValueError, match="5 grouped folds from 3 distinct group"):
        list(grouped_kfold([0, 1, 0, 1], [1, 1, 2, 3], n_splits=5))
    with pytest.raises(ValueError, match="n_splits"):
        list(grouped_kfold([0, 1], [1, 2], n_splits=1))
    with pytest.raises(ValueError, match="shape"):
        list(grouped_kfold([0, 1], [1, 2, 3]))


@pytest.mark.parametrize(("test_size", "expected"), [(0.2, 0.2), (0.25, 0.25), (0.5, 0.5),
                                                     (0.75, 0.75)])
def test_train_test_split(videos, test_size: float, expected: float) -> None:
    y, g = videos
    tr, te = grouped_train_test_split(y, g, test_size=test_size, random_state=1)
    assert not set(g[tr]) & set(g[te])
    assert tr.size + te.size == 120
    assert te.size / 120 == pytest.approx(expected, abs=0.06)
    tr2, te2 = grouped_train_test_split(y, g, test_size=test_size, random_state=1)
    assert np.array_equal(te, te2)
    with pytest.raises(ValueError, match="test_size"):
        grouped_train_test_split(y, g, test_size=1.0)


def test_split_from_column() -> None:
    out = split_from_column(["train", " Test", "val", "TRAIN", "validation"])
    assert out["train"].tolist() == [0, 3]
    assert out["test"].tolist() == [1] and out["val"].tolist() == [2, 4]
    with pytest.raises(ValueError, match="row 1: 'tset'.*row 2: None"):
        split_from_column(["train", "tset", None])
    with pytest.raises(ValueError, match="group 'id7'.*leaks"):
        split_from_column(["train", "test", "test"], groups=["id7", "id7", "id8"])
    ok = split_from_column(["train", "test", "test"], groups=["id6", "id7", "id7"])
    assert ok["test"].tolist() == [1, 2] and ok["val"].size == 0


def test_frame_indices_and_disjoint_check() -> None:
    frame_vid = np.array(["a", "a", "b", "c", "c", "c", "b"])
    video_ids = np.array(["a", "b", "c"])
    assert frame_indices(frame_vid, video_ids, [0, 2]).tolist() == [0, 1, 3, 4, 5]
    assert frame_indices(frame_vid, video_ids, [1]).tolist() == [2, 6]
    check_group_disjoint(np.array([1, 1, 2]), [0, 1], [2])
    with pytest.raises(ValueError, match="group 1"):
        check_group_disjoint(np.array([1, 1, 2]), [0], [1, 2])
