"""Loss modules of the projection head: the one-class softmax through the loss slot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepmetric.learn.losses import OneClassSoftmaxLoss
from deepmetric.learn.projector import TripletProjector


def _real_core_and_spread_fakes(n: int, seed: int, d: int = 16):
    """Reals in one tight cloud; fakes from two distinct clouds on either side of it."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 != 0).astype(np.int64)        # 1/3 real, 2/3 fake
    X = rng.normal(size=(n, d))
    side = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    X[y == 1, :2] += 3.0 * side[y == 1, None]
    return X.astype(np.float32), y, np.arange(n) // 3


def test_one_class_loss_value_and_margins() -> None:
    loss = OneClassSoftmaxLoss(embedding_size=2, m_real=0.9, m_fake=0.2, alpha=20.0)
    with torch.no_grad():
        loss.center.copy_(torch.tensor([1.0, 0.0]))
    on = torch.tensor([[1.0, 0.0]])
    off = torch.tensor([[-1.0, 0.0]])
    real, fake = torch.tensor([0]), torch.tensor([1])
    # a real sample on the centre and a fake opposite to it cost almost nothing ...
    assert loss(on, real) < 0.2 and loss(off, fake) < 1e-6
    # ... the same samples with swapped labels cost about alpha * margin
    assert loss(on, fake).item() == pytest.approx(20.0 * (1.0 - 0.2), rel=1e-3)
    assert loss(off, real).item() == pytest.approx(20.0 * (0.9 + 1.0), rel=1e-3)
    with pytest.raises(ValueError, match="m_fake < m_real"):
        OneClassSoftmaxLoss(m_real=0.2, m_fake=0.5)


def test_one_class_loss_trains_its_centre_through_the_projector_slot() -> None:
    torch.set_num_threads(1)
    X, y, g = _real_core_and_spread_fakes(480, seed=3)
    Xte, yte, _ = _real_core_and_spread_fakes(240, seed=4)
    proj = TripletProjector(hidden=(32,), out_dim=8, epochs=40, batch_size=96, lr=3e-3,
                            loss=OneClassSoftmaxLoss(embedding_size=8),
                            validation_fraction=0.0, device="cpu", random_state=0)
    proj.fit(X, y, g)
    assert proj.history_[-1]["train_loss"] < 0.5 * proj.history_[0]["train_loss"]
    Z = torch.from_numpy(proj.transform(Xte))
    centre = torch.from_numpy(proj.transform(X[y == 0])).mean(0)  # the training reals
    cos = torch.nn.functional.normalize(Z, dim=1) @ torch.nn.functional.normalize(centre, dim=0)
    from sklearn.metrics import roc_auc_score

    # one direction separates reals from BOTH fake clouds (a two-class loss need not)
    assert roc_auc_score(yte, -cos.numpy()) > 0.9
