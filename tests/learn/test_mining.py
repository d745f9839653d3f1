"""SemiHardTripletLoss must equal PML's TripletMarginMiner("semihard") + TripletMarginLoss."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses, miners

from deepmetric.learn.mining import (
    PMLSemiHardTripletLoss,
    SemiHardTripletLoss,
    _chunk_rows,
    batch_all_triplet_loss,
    pairwise_distances,
    semihard_triplet_loss,
)

MARGIN = 0.2
TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _pml(e: torch.Tensor, y: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    miner = miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard")
    return losses.TripletMarginLoss(margin=margin)(e, y, miner(e, y))


def _both(e: torch.Tensor, y: torch.Tensor, margin: float = MARGIN):
    """(pml loss, pml grad, our loss, our grad)."""
    e1 = e.clone().requires_grad_(True)
    e2 = e.clone().requires_grad_(True)
    l1 = _pml(e1, y, margin)
    l1.backward()
    l2 = SemiHardTripletLoss(margin)(e2, y)
    l2.backward()
    return l1, e1.grad, l2, e2.grad


def _batch(b: int, n_labels: int, kind: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(b, 6, generator=g)
    if kind == "dup":  # duplicated embeddings: exact-zero / tied distances
        half = b // 2
        e[half : 2 * half] = e[:half].clone()
    elif kind == "grid":  # tiny integer grid: many exactly equal distances
        e = torch.randint(-1, 2, (b, 3), generator=g).float()
        e[e.abs().sum(1) == 0] = 1.0
    y = torch.randint(0, n_labels, (b,), generator=g)
    return e, y


CASES = list(itertools.product([2, 3, 5, 16, 33, 64], [1, 2, 4], ["rand", "dup", "grid"]))


@pytest.mark.parametrize(("b", "n_labels", "kind"), CASES)
def test_equals_pml_value_and_grad(b: int, n_labels: int, kind: str) -> None:
    e, y = _batch(b, n_labels, kind, seed=b * 10 + n_labels)
    l1, g1, l2, g2 = _both(e, y)
    assert abs(l1.item() - l2.item()) <= TOL
    assert torch.allclose(g1, g2, atol=TOL, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_equals_pml_after_partial_training_like_spread(seed: int) -> None:
    """Clustered batches (few semi-hard triplets) and a different margin."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(47) % 2
    e = torch.randn(47, 8, generator=g) * 0.3 + y[:, None].float() * torch.randn(8, generator=g)
    for margin in (0.05, 0.2, 0.5):
        l1, g1, l2, g2 = _both(e, y, margin=margin)
        assert abs(l1.item() - l2.item()) <= TOL
        assert torch.allclose(g1, g2, atol=TOL, rtol=0)


def test_float64_matches() -> None:
    e, y = _batch(40, 3, "rand", seed=7)
    l1, g1, l2, g2 = _both(e.double(), y)
    assert l2.dtype == torch.float64
    assert abs(l1.item() - l2.item()) <= 1e-10
    assert torch.allclose(g1, g2, atol=1e-10, rtol=0)


def test_all_one_label_gives_zero_with_grad() -> None:
    e = torch.randn(9, 4, requires_grad=True)
    y = torch.zeros(9, dtype=torch.long)
    loss_fn = SemiHardTripletLoss(MARGIN)
    loss = loss_fn(e, y)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(e.grad, torch.zeros_like(e))
    assert loss_fn.last_n_triplets == 0
    assert _pml(e, y).item() == 0.0


def test_collapsed_and_easy_batches_have_no_semihard_triplet() -> None:
    y = torch.tensor([0, 0, 1, 1])
    collapsed = torch.ones(4, 3)
    assert semihard_triplet_loss(collapsed, y, MARGIN)[1] == 0
    # well separated (d_an - d_ap > margin): all triplets easy
    easy = torch.tensor([[1.0, 0, 0], [1.0, 0.01, 0], [-1.0, 0, 0], [-1.0, 0.01, 0]])
    assert semihard_triplet_loss(easy, y, MARGIN)[1] == 0
    # batch-all loss tells a collapse (= margin) from a separation (= 0)
    assert batch_all_triplet_loss(collapsed, y, MARGIN)[0].item() == pytest.approx(MARGIN)
    assert batch_all_triplet_loss(easy, y, MARGIN)[0].item() == 0.0


def test_n_triplets_counts_pml_triplets() -> None:
    e, y = _batch(30, 2, "rand", seed=3)
    miner = miners.TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard")
    n_pml = len(miner(e, y)[0])
    loss_fn = SemiHardTripletLoss(MARGIN)
    loss_fn(e, y)
    assert loss_fn.last_n_triplets == n_pml > 0
    pml = PMLSemiHardTripletLoss(MARGIN)
    assert pml(e, y).item() == pytest.approx(loss_fn(e, y).item(), abs=TOL)
    assert pml.last_n_triplets == n_pml


def test_chunk_block_is_bounded() -> None:
    for b in (1, 10, 512, 3000):
        c = _chunk_rows(b, 1 << 22)
        assert c >= 1 and (c == 1 or c * b * b <= 1 << 22)


def test_batch_all_matches_brute_force() -> None:
    e, y = _batch(13, 3, "rand", seed=5)
    d = pairwise_distances(e).numpy().astype(np.float64)
    yy = y.numpy()
    vals = [
        max(0.0, d[a, p] - d[a, n] + MARGIN)
        for a in range(13)
        for p in range(13)
        for n in range(13)
        if p != a and yy[p] == yy[a] and yy[n] != yy[a]
    ]
    loss, count = batch_all_triplet_loss(e, y, MARGIN, chunk_elements=13 * 13 * 2)
    assert count == len(vals)
    assert loss.item() == pytest.approx(float(np.mean(vals)), abs=1e-6)


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="shape"):
        SemiHardTripletLoss()(torch.randn(4), torch.zeros(4))
    with pytest.raises(ValueError, match="labels"):
        SemiHardTripletLoss()(torch.randn(4, 2), torch.zeros(3))
