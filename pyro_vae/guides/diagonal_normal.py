"""The guide of the derivation: q(z|x) = N(μ(x), diag σ²(x))."""

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ..registry import GUIDES, Option


def positive_scale(raw: torch.Tensor, min_scale: float) -> torch.Tensor:
    """σ = softplus(r) + min_scale: a positive scale from an unconstrained encoder output r."""
    return F.softplus(raw) + min_scale


def check_min_scale(min_scale: float) -> float:
    if min_scale < 0:
        raise ValueError(f"min_scale must be >= 0, got {min_scale}")
    return min_scale


@GUIDES.register(
    "diagonal_normal",
    Option("min_scale", float, 1e-4, "floor added to σ(x) for numerical safety", minimum=0.0),
    summary="N(μ(x), diag σ²(x)), the guide of the derivation",
)
class DiagonalNormalGuide(nn.Module):
    """Diagonal Gaussian q(z|x) = N(z; μ(x), diag σ²(x)) (arXiv:1312.6114, Sec. 3, Appendix C.2).

    The encoder outputs ``[z_loc, r]`` and σ = softplus(r) + min_scale (softplus rather than the
    paper's exp(½ log σ²): it cannot overflow early in training). Sampling is the
    reparameterization z = μ + σ ⊙ ε, ε ~ N(0, I): ``rsample`` of :class:`pyro.distributions.Normal`.
    Against the standard normal prior the KL is closed-form (Appendix B), so ``mean_field`` uses
    ``torch.distributions.kl_divergence``; so it is against ``learned_normal``. Against
    ``mixture``, ``vamp`` and ``flow`` there is no closed form: Monte Carlo (``mean_field`` falls back).
    """

    @staticmethod
    def encoder_out_dim(z_dim: int) -> int:
        return 2 * z_dim

    def __init__(self, z_dim: int, min_scale: float):
        super().__init__()
        self.z_dim = z_dim
        self.min_scale = check_min_scale(min_scale)

    def forward(self, encoded: torch.Tensor) -> dist.Distribution:
        z_loc, z_scale_raw = encoded.split(self.z_dim, dim=-1)
        return dist.Normal(z_loc, positive_scale(z_scale_raw, self.min_scale)).to_event(1)
