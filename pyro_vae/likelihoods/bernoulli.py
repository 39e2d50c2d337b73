"""Bernoulli likelihood for binarized images, parameterized by logits."""

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ..distributions import KeepsShape
from ..registry import LIKELIHOODS


class IndependentBernoulli(KeepsShape, dist.Independent):
    """``Bernoulli(logits=ℓ).to_event(n)`` (the same Pyro distribution), whose ``log_prob`` sums
    the per-pixel terms before negating, −Σ_i BCE(ℓ_i, x_i), where Pyro negates every pixel's term
    first and broadcasts even equal shapes: the same numbers, one pass over the pixels fewer."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        base = self.base_dist
        if self._validate_args:
            base._validate_sample(value)
        logits = base.logits
        if value.shape != logits.shape:
            logits, value = torch.broadcast_tensors(logits, value)
        terms = F.binary_cross_entropy_with_logits(logits, value, reduction="none")
        return -terms.flatten(-self.reinterpreted_batch_ndims).sum(-1)


@LIKELIHOODS.register("bernoulli", summary="Bernoulli on binary images, from logits")
class BernoulliLikelihood(nn.Module):
    """p(x|z) = Π_i f_i(z)^{x_i} (1 − f_i(z))^{1 − x_i}, with f(z) = sigmoid(x_logits)
    (Kingma & Welling, arXiv:1312.6114, Appendix C.1, "Bernoulli MLP as decoder").

    log p(x|z) = Σ_i [x_i ℓ_i − softplus(ℓ_i)] for logits ℓ = decoder(z): minus the binary
    cross-entropy with logits, computed stably from logits (never from probabilities, which
    saturate) by :class:`IndependentBernoulli`. Only defined for x ∈ {0, 1}: use binarized images.
    """

    data = "binary"

    def __init__(self, x_shape: Sequence[int]):
        super().__init__()
        self.x_shape = tuple(x_shape)

    def forward(self, x_logits: torch.Tensor) -> IndependentBernoulli:
        return IndependentBernoulli(dist.Bernoulli(logits=x_logits), len(self.x_shape))
