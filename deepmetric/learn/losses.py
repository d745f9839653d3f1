"""Loss modules for the projection head: a PML loss with its miner, and a one-class loss.

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

__all__ = ["MinedLoss", "OneClassSoftmaxLoss"]


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


class OneClassSoftmaxLoss(nn.Module):
    """One-class softmax (OC-Softmax, Zhang et al. 2021): one compact real class.

    Real samples (label 0) are pulled within a small angle of a learned direction ``w``,
    every other sample (fakes, self-blended pseudo-fakes: label 1) is pushed away from it::

        s_i = cos(w, z_i)
        loss = mean_i softplus(alpha * (m_real - s_i))      for real z_i
                      softplus(alpha * (s_i - m_fake))      for fake z_i

    Unlike a two-class loss it does not ask the fakes to form a cluster of their own, which
    a new forgery method would not join: only "real" is modelled.

    Parameters
    ----------
    embedding_size : int
        Dimension of the embeddings (the projector's ``out_dim``).
    m_real, m_fake : float
        Cosine margins: reals are pushed above ``m_real``, fakes below ``m_fake``.
    alpha : float
        Scale of the softplus (sharpness).

    Attributes
    ----------
    center : torch.nn.Parameter
        float32 (embedding_size,): the real-class direction (trained with the network).
    """

    def __init__(self, embedding_size: int = 64, m_real: float = 0.9, m_fake: float = 0.2,
                 alpha: float = 20.0):
        import torch

        super().__init__()
        if not -1.0 <= m_fake < m_real <= 1.0:
            raise ValueError(f"need -1 <= m_fake < m_real <= 1, got m_fake={m_fake}, "
                             f"m_real={m_real}")
        self.m_real, self.m_fake, self.alpha = float(m_real), float(m_fake), float(alpha)
        gen = torch.Generator().manual_seed(0)
        self.center = nn.Parameter(torch.randn(int(embedding_size), generator=gen))

    def forward(self, embeddings: Any, labels: Any) -> Any:
        """Mean loss of a batch: ``embeddings`` float (B, D), ``labels`` int (B,), 0 = real."""
        import torch.nn.functional as F

        s = F.normalize(embeddings, dim=1) @ F.normalize(self.center, dim=0)
        fake = labels != 0
        margin = self.alpha * (self.m_real - s)
        margin = margin.where(~fake, self.alpha * (s - self.m_fake))
        return F.softplus(margin).mean()

    def extra_repr(self) -> str:
        return (f"embedding_size={self.center.numel()}, m_real={self.m_real}, "
                f"m_fake={self.m_fake}, alpha={self.alpha}")
