"""Continuous Bernoulli likelihood for grey-level images in [0, 1], parameterized by logits."""

import pyro.distributions as dist
import torch

from ..registry import LIKELIHOODS
from .bernoulli import BernoulliLikelihood


@LIKELIHOODS.register("continuous_bernoulli",
                      summary="continuous Bernoulli, a normalized density on grey levels in [0, 1]")
class ContinuousBernoulliLikelihood(BernoulliLikelihood):
    """p(x|z) = Π_i C(λ_i) λ_i^{x_i} (1 − λ_i)^{1 − x_i} for x_i ∈ [0, 1], λ = sigmoid(x_logits),
    with the normalizing constant C(λ) = 2 artanh(1 − 2λ) / (1 − 2λ) (C(½) = 2) (Loaiza-Ganem &
    Cunningham, arXiv:1907.06845, Sec. 3).

    Training a Bernoulli likelihood on grey levels, as much VAE code does, uses an unnormalized
    density on [0, 1]; the missing log C(λ) is what this likelihood adds, so its log p(x|z) is a
    true log-density and test log-likelihoods are comparable. Its mean E[x|z] is not λ (it is
    λ/(2λ − 1) + 1/(2 artanh(1 − 2λ)), ½ at λ = ½), and ``VAE.sample`` and ``VAE.reconstruct``
    show that mean. :class:`pyro.distributions.ContinuousBernoulli` computes it from logits.
    For grey images: ``--binarize none``. On binarized images it is accepted with a warning
    (:attr:`on_binary_data`).
    """

    data = "continuous"
    #: Accepted, with this warning (RunConfig warns, the command line prints it as one ``warning:`` line):
    #: {0, 1} lies in its support, but there its log C(λ) rewards confident pixels without bound.
    on_binary_data = ("a density on grey levels, accepted but not meant for {0, 1} pixels (its normalizer "
                      "rewards λ near 0 or 1 without bound, so its log p(x) is not comparable with the bernoulli "
                      "likelihood's); use likelihood bernoulli for binary images, or binarize none for grey levels")

    def forward(self, x_logits: torch.Tensor) -> dist.Distribution:
        return dist.ContinuousBernoulli(logits=x_logits).to_event(len(self.x_shape))
