"""TripletProjector: learning, determinism, sklearn API, Pipeline, pickling."""

from __future__ import annotations

import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from deepmetric.learn.mining import batch_all_triplet_loss
from deepmetric.learn.network import BalancedBatches
from deepmetric.learn.projector import TripletProjector


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _clouds(n: int, seed: int, d: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two overlapping Gaussian clouds (real 0 / fake 1) with a nuisance scale per feature,
    and 'video' groups of 4 consecutive rows."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) // 4) % 2
    X = rng.normal(size=(n, d)) * np.linspace(0.5, 3.0, d)
    X[:, :3] += 0.9 * y[:, None]
    groups = np.arange(n) // 4
    return X, y, groups


def _small(**kw) -> TripletProjector:
    params = dict(hidden=(32,), out_dim=8, epochs=12, batch_size=64, lr=3e-3,
                  device="cpu", random_state=0)
    params.update(kw)
    return TripletProjector(**params)


def _centroid_auc(Z_tr, y_tr, Z_te, y_te) -> float:
    c0, c1 = Z_tr[y_tr == 0].mean(0), Z_tr[y_tr == 1].mean(0)
    score = np.linalg.norm(Z_te - c0, axis=1) - np.linalg.norm(Z_te - c1, axis=1)
    return roc_auc_score(y_te, score)


def _expected_failed_checks(estimator) -> dict[str, str]:
    # Every check of scikit-learn 1.9.1 passes on CPU; kept as the place to document any.
    return {}


@parametrize_with_checks(
    [TripletProjector(hidden=(8,), out_dim=4, epochs=2, batch_size=16, device="cpu",
                      random_state=0)],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible(estimator, check) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "validation disabled" on tiny data
        check(estimator)


def test_learns_to_separate_and_val_loss_decreases() -> None:
    X, y, g = _clouds(320, seed=0)
    Xte, yte, _ = _clouds(200, seed=1)
    proj = _small().fit(X, y, groups=g)
    Z, Zte = proj.transform(X), proj.transform(Xte)
    assert Z.dtype == np.float32 and Z.shape == (320, 8)
    np.testing.assert_allclose(np.linalg.norm(Zte, axis=1), 1.0, atol=1e-5)
    raw_auc = _centroid_auc(X, y, Xte, yte)
    auc = _centroid_auc(Z, y, Zte, yte)
    assert auc > 0.9, (raw_auc, auc)
    assert auc > raw_auc
    h = proj.history_
    assert [r["epoch"] for r in h] == list(range(1, len(h) + 1))
    assert set(h[0]) == {"epoch", "train_loss", "val_loss", "n_triplets"}
    assert h[proj.best_epoch_ - 1]["val_loss"] < 0.8 * h[0]["val_loss"]
    assert h[-1]["n_triplets"] < h[0]["n_triplets"]  # fewer semi-hard triplets left


def test_random_state_makes_fits_identical_and_leaves_global_rng_alone() -> None:
    X, y, g = _clouds(96, seed=2)
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    a = _small(epochs=3, dropout=0.1, batch_norm=True).fit(X, y, groups=g).transform(X)
    b = _small(epochs=3, dropout=0.1, batch_norm=True).fit(X, y, groups=g).transform(X)
    np.testing.assert_array_equal(a, b)
    assert torch.equal(torch.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    c = _small(epochs=3, random_state=1).fit(X, y, groups=g).transform(X)
    assert not np.array_equal(a, c)


def test_pipeline_with_groups_and_pickle_roundtrip(tmp_path) -> None:
    X, y, g = _clouds(160, seed=3)
    pipe = Pipeline([("proj", _small(epochs=4)), ("clf", RandomForestClassifier(
        n_estimators=20, random_state=0, n_jobs=1))])
    pipe.fit(X, y, proj__groups=g)
    proba = pipe.predict_proba(X)
    assert proba.shape == (160, 2)
    path = tmp_path / "pipe.joblib"
    joblib.dump(pipe, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(
        loaded.named_steps["proj"].transform(X), pipe.named_steps["proj"].transform(X)
    )
    np.testing.assert_array_equal(loaded.predict_proba(X), proba)
    state = pipe.named_steps["proj"].state_dict_
    assert all(isinstance(v, np.ndarray) for v in state.values())


def test_pml_miner_gives_same_first_epoch() -> None:
    X, y, g = _clouds(96, seed=4)
    ours = _small(epochs=1, validation_fraction=0.0).fit(X, y)
    pml = _small(epochs=1, validation_fraction=0.0, miner="pml").fit(X, y)
    # one full batch per epoch: the first (and only) step sees identical weights
    assert ours.history_[0]["train_loss"] == pytest.approx(pml.history_[0]["train_loss"], abs=1e-5)
    assert ours.history_[0]["n_triplets"] == pml.history_[0]["n_triplets"]


def test_grouped_validation_split_never_leaks() -> None:
    X, y, g = _clouds(200, seed=5)
    proj = _small(validation_fraction=0.25)
    tr, va = proj._split(y, g, seed=123)
    assert va is not None and 20 <= va.size <= 80
    assert not set(g[tr]) & set(g[va])
    assert set(np.unique(y[va])) == {0, 1}


def test_best_epoch_weights_are_restored() -> None:
    X, y, g = _clouds(200, seed=6)
    proj = _small(epochs=15, patience=3, lr=5e-2).fit(X, y, groups=g)
    assert 1 <= proj.best_epoch_ <= proj.n_epochs_ <= 15
    vals = [r["val_loss"] for r in proj.history_]
    assert proj.best_epoch_ == int(np.nanargmin(vals)) + 1
    if proj.n_epochs_ < 15:  # stopped early: exactly `patience` epochs after the best
        assert proj.n_epochs_ - proj.best_epoch_ == 3
    # the kept weights reproduce the best validation loss (validation fits one batch)
    seed = int(np.random.RandomState(0).randint(np.iinfo(np.int32).max))
    _, va = proj._split(y, g, seed)
    z = torch.from_numpy(proj.transform(X[va]))
    val, _ = batch_all_triplet_loss(z, torch.from_numpy(y[va]), proj.margin)
    assert val.item() == pytest.approx(vals[proj.best_epoch_ - 1], abs=1e-5)


def test_balanced_batches() -> None:
    y = np.array([0] * 50 + [1] * 7)
    s = BalancedBatches(y, m=8, batch_size=16, rng=np.random.default_rng(0))
    for _ in range(5):
        b = s.batch()
        assert b.size == 16
        assert (y[b] == 0).sum() == 8 and (y[b] == 1).sum() == 8
    s = BalancedBatches(y, m=8, batch_size=16, rng=np.random.default_rng(1))
    seen = np.concatenate([s.batch() for _ in range(7)])
    zeros = seen[y[seen] == 0]  # the first 50 draws of class 0 are a permutation of it
    assert zeros.size == 56 and np.unique(zeros[:50]).size == 50


def test_minibatch_training_path_runs() -> None:
    X, y, g = _clouds(160, seed=7)
    proj = _small(epochs=2, batch_size=32, m_per_class=8, validation_fraction=0.0).fit(X, y)
    # 160 rows / 16-row balanced batches -> 10 batches per epoch, validation off
    assert np.isnan(proj.history_[0]["val_loss"]) and proj.best_epoch_ == 2
    assert proj.transform(X[:5]).shape == (5, 8)


def test_single_class_and_nan_raise() -> None:
    X, y, _ = _clouds(40, seed=8)
    with pytest.raises(ValueError, match="at least 2 classes"):
        _small(epochs=1).fit(X, np.zeros(40, dtype=int))
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _small(epochs=1).fit(Xn, y)
    fitted = _small(epochs=1, validation_fraction=0.0).fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        fitted.transform(Xn)


def test_invalid_params_raise_in_fit() -> None:
    X, y, _ = _clouds(40, seed=9)
    for bad in ({"miner": "hard"}, {"m_per_class": 1}, {"validation_fraction": 1.0},
                {"hidden": "abc"}, {"margin": 0}):
        with pytest.raises(ValueError, match="TripletProjector: invalid"):
            _small(**bad).fit(X, y)


def _pml_losses():
    from pytorch_metric_learning import losses, miners

    from deepmetric.learn.losses import MinedLoss

    return {"supcon": losses.SupConLoss(temperature=0.1),
            "contrastive+miner": MinedLoss(losses.ContrastiveLoss(pos_margin=0.0,
                                                                  neg_margin=1.0),
                                           miners.PairMarginMiner(0.2, 0.8)),
            # proxy-based: its two class centres are parameters trained with the head
            "arcface": losses.ArcFaceLoss(num_classes=2, embedding_size=8)}


@pytest.mark.parametrize("name", ["supcon", "contrastive+miner", "arcface"])
def test_any_pml_loss_trains_through_the_loss_slot(name) -> None:
    """Issue #19: a pytorch-metric-learning loss (with or without a miner) is a component."""
    from sklearn.base import clone

    X, y, g = _clouds(400, seed=21)
    Xte, yte, _ = _clouds(200, seed=22)
    loss = _pml_losses()[name]
    untrained = _small(epochs=1, lr=1e-9, loss=loss, validation_fraction=0.0).fit(X, y, g)
    proj = clone(_small(epochs=25, loss=loss, validation_fraction=0.0))
    assert proj.loss is not loss and type(proj.loss) is type(loss)  # clone copies the slot
    proj.fit(X, y, g)
    h = proj.history_
    assert h[-1]["train_loss"] < h[0]["train_loss"]  # the PML loss drove training
    auc = _centroid_auc(proj.transform(X), y, proj.transform(Xte), yte)
    before = _centroid_auc(untrained.transform(X), y, untrained.transform(Xte), yte)
    assert auc > 0.75 and auc > before


def test_the_default_loss_slot_is_the_semihard_triplet_loss_and_old_pickles_train() -> None:
    from deepmetric.learn.mining import SemiHardTripletLoss

    X, y, g = _clouds(160, seed=23)
    a = _small(epochs=3).fit(X, y, g)
    b = _small(epochs=3, loss=SemiHardTripletLoss(0.2)).fit(X, y, g)
    np.testing.assert_allclose(a.transform(X), b.transform(X), atol=1e-5)
    old = _small(epochs=2)
    del old.__dict__["loss"]  # a projector pickled before the slot existed
    assert old.fit(X, y, g).transform(X).shape == (160, 8)
