"""A pytorch-metric-learning loss with a miner, as one ``loss(embeddings, labels)`` module.

``TripletProjector(loss=...)`` takes any loss called as ``loss(embeddings, labels)``: the
project's :class:`~deepmetric.learn.mining.SemiHardTripletLoss` (the default) or any
pytorch-metric-learning loss (``SupConLoss()``, ``ContrastiveLoss()``, ...). A PML loss that
should see only mined pairs or triplets is composed with its miner here::

    from pytorch_metric_learning import losses, miners
    MinedLoss(losses.ContrastiveLoss(), miners.PairMarginMiner())
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["MinedLoss"]


class MinedLoss(nn.Module):
    """``loss(embeddings, labels, miner(embeddings, labels))`` as one module.

    Parameters
    ----------
    loss : pytorch_metric_learning loss
        Called as ``loss(embeddings, labels, indices_tuple)``.
    miner : pytorch_metric_learning miner
        Called as ``miner(embeddings, labels)``; returns the pairs or triplets the loss sees.
    """

    def __init__(self, loss: Any, miner: Any):
        super().__init__()
        self.loss = loss
        self.miner = miner

    def forward(self, embeddings: Any, labels: Any) -> Any:
        """The loss over the mined tuples of one batch (``embeddings`` (B, D), ``labels`` (B,))."""
        return self.loss(embeddings, labels, self.miner(embeddings, labels))
