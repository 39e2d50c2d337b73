"""The guide of the derivation: q(z|x) = N(μ(x), diag σ²(x))."""

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ..registry import GUIDES, Option


@GUIDES.register(
    "diagonal_normal",
    Option("min_scale", float, 1e-4, "floor added to σ(x) for numerical safety"),
)
class DiagonalNormalGuide(nn.Module):
    """Diagonal Gaussian q(z|x) = N(z; μ(x), diag σ²(x)) (arXiv:1312.6114, Sec. 3, Appendix C.2).

    The encoder outputs ``[z_loc, r]`` and σ = softplus(r) + min_scale (softplus rather than the
    paper's exp(½ log σ²): it cannot overflow early in training). Sampling is the
    reparameterization z = μ + σ ⊙ ε, ε ~ N(0, I): ``rsample`` of :class:`pyro.distributions.Normal`.
    Against the standard normal prior the KL is closed-form (Appendix B), so ``mean_field`` uses
    ``torch.distributions.kl_divergence``; against other priors it is estimated by Monte Carlo.
    """

    @staticmethod
    def encoder_out_dim(z_dim: int) -> int:
        return 2 * z_dim

    def __init__(self, z_dim: int, min_scale: float):
        super().__init__()
        if min_scale < 0:
            raise ValueError(f"min_scale must be >= 0, got {min_scale}")
        self.z_dim = z_dim
        self.min_scale = min_scale

    def forward(self, encoded: torch.Tensor) -> dist.Distribution:
        z_loc, z_scale_raw = encoded.split(self.z_dim, dim=-1)
        z_scale = F.softplus(z_scale_raw) + self.min_scale
        return dist.Normal(z_loc, z_scale).to_event(1)
