"""A diagonal Gaussian prior with learned mean and scale: p(z) = N(μ, diag σ²)."""

import pyro.distributions as dist
import torch
from torch import nn

from ..registry import PRIORS


@PRIORS.register("learned_normal", summary="N(μ, diag σ²) with learned μ and σ")
class LearnedNormalPrior(nn.Module):
    """Learned diagonal Gaussian prior p(z) = N(z; μ, diag σ²), σ = exp(log σ)
    (the Gaussian prior of Kingma & Welling, arXiv:1312.6114, Sec. 3, with its parameters learned).

    It starts at N(0, I), the standard normal. Its KL term against the diagonal Gaussian guide is
    closed-form (Σ_j [log(σ_j/s_j) + (s_j² + (m_j − μ_j)²)/(2σ_j²) − ½] for q = N(m, diag s²)), and so is
    the one against the full-rank guide (:func:`pyro_vae.kl.kl_mvn_diagonal_normal`): ``mean_field``
    uses them. Against the IAF guide it is Monte Carlo. With an amortized Gaussian guide
    it adds little: the encoder can absorb any shift and scaling of z, so expect it to match
    ``standard_normal`` within noise; it is the simplest learned prior and a control for the others.
    """

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.loc = nn.Parameter(torch.zeros(z_dim))
        self.log_scale = nn.Parameter(torch.zeros(z_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.log_scale.exp()).to_event(1)
