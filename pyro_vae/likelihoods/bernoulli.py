"""Bernoulli likelihood for binarized images, parameterized by logits."""

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import nn

from ..registry import LIKELIHOODS


@LIKELIHOODS.register("bernoulli", summary="Bernoulli on binary images, from logits")
class BernoulliLikelihood(nn.Module):
    """p(x|z) = Π_i f_i(z)^{x_i} (1 − f_i(z))^{1 − x_i}, with f(z) = sigmoid(x_logits)
    (Kingma & Welling, arXiv:1312.6114, Appendix C.1, "Bernoulli MLP as decoder").

    log p(x|z) = Σ_i [x_i ℓ_i − softplus(ℓ_i)] for logits ℓ = decoder(z): minus the binary
    cross-entropy with logits, computed stably by :class:`pyro.distributions.Bernoulli` from logits
    (never from probabilities, which saturate). Only defined for x ∈ {0, 1}: use binarized images.
    """

    data = "binary"

    def __init__(self, x_shape: Sequence[int]):
        super().__init__()
        self.x_shape = tuple(x_shape)

    def forward(self, x_logits: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=x_logits).to_event(len(self.x_shape))
