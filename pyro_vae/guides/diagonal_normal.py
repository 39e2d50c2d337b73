"""The guide of the derivation: q(z|x) = N(μ(x), diag σ²(x))."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions.utils import _standard_normal
from torch.nn import functional as F

from ..distributions import HALF_LOG_2PI, KeepsShape
from ..registry import GUIDES, Option


def positive_scale(raw: torch.Tensor, min_scale: float) -> torch.Tensor:
    """σ = softplus(r) + min_scale: a positive scale from an unconstrained encoder output r."""
    return F.softplus(raw) + min_scale


def check_min_scale(min_scale: float) -> float:
    if min_scale < 0:
        raise ValueError(f"min_scale must be >= 0, got {min_scale}")
    return min_scale


class DiagonalNormal(KeepsShape, dist.Independent):
    """N(z; μ, diag σ²) over the last dimension: ``Normal(μ, σ).to_event(1)`` (the same Pyro
    distribution, so every KL rule and ``isinstance`` check for it applies), which remembers the
    noise ε of its own draws z = μ + σ ⊙ ε (the reparameterization, arXiv:1312.6114, Sec. 2.4).

    * ``log_prob`` of its own draw comes from the change of variables z = g(ε),

          log q(z) = log N(ε; 0, I) − log abs(det ∂z/∂ε) = Σ_j (−½ ε_j² − log σ_j) − (D/2) log 2π,

      the value of ``Normal.log_prob`` at z with the same *total* derivative in μ and σ (here
      ∂/∂μ = 0 and ∂/∂σ_j = −1/σ_j exactly), in a third of the tensor operations, and without
      recomputing ε = (z − μ)/σ, which cancels badly when abs(μ) ≫ σ. Any other value goes through
      ``Normal.log_prob``. As for Pyro's flows, whose ``log_prob`` of a drawn sample comes from
      their cache, the gradient of this form never passes through z itself.
    * :meth:`path_log_prob` is log q(z) differentiated through z only, what the STL and DReG
      estimators need (:mod:`pyro_vae.objectives.traces`).
    """

    #: (z, ε, z's tensor version) of the last draw; none until one (also for an expanded copy)
    _draw: tuple[torch.Tensor, torch.Tensor, int] | None = None

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args: bool | None = None):
        super().__init__(dist.Normal(loc, scale, validate_args=validate_args), 1, validate_args=validate_args)

    def rsample(self, sample_shape: tuple = ()) -> torch.Tensor:
        """z = μ + σ ⊙ ε with ε ~ N(0, I) drawn as ``Normal.rsample`` draws it (the same numbers)."""
        loc = self.base_dist.loc
        return self.reparameterize(_standard_normal(self._extended_shape(sample_shape), dtype=loc.dtype,
                                                    device=loc.device))

    def reparameterize(self, eps: torch.Tensor) -> torch.Tensor:
        """z = μ + σ ⊙ ε for given standard normal noise ε (used by :class:`pyro_vae.noise.GuideNoise`)."""
        z = self.base_dist.loc + eps * self.base_dist.scale
        self._draw = (z, eps, z._version)  # the version: a draw changed in place is another value
        return z

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        draw = self._draw
        if draw is None or value is not draw[0] or value._version != draw[2]:
            return super().log_prob(value)
        eps = draw[1]
        return (-0.5 * eps.square()).sum(-1) - self.base_dist.scale.log().sum(-1) - eps.shape[-1] * HALF_LOG_2PI

    def path_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log N(z; sg μ, diag sg σ²) (sg = stop-gradient): the value of log q(z), with gradient
        ∇_z log q(z) · ∂z and none through μ and σ directly (Roeder et al., arXiv:1703.09194)."""
        base = self.base_dist
        return dist.Normal(base.loc.detach(), base.scale.detach(), validate_args=False).log_prob(value).sum(-1)


@GUIDES.register(
    "diagonal_normal",
    Option("min_scale", float, 1e-4, "floor added to σ(x) for numerical safety", minimum=0.0),
    summary="N(μ(x), diag σ²(x)), the guide of the derivation",
)
class DiagonalNormalGuide(nn.Module):
    """Diagonal Gaussian q(z|x) = N(z; μ(x), diag σ²(x)) (arXiv:1312.6114, Sec. 3, Appendix C.2).

    The encoder outputs ``[z_loc, r]`` and σ = softplus(r) + min_scale (softplus rather than the
    paper's exp(½ log σ²): it cannot overflow early in training). Sampling is the
    reparameterization z = μ + σ ⊙ ε, ε ~ N(0, I), and log q of a draw is log N(ε; 0, I) − Σ log σ
    (:class:`DiagonalNormal`). Against the standard normal prior the KL is closed-form (Appendix B), so ``mean_field`` uses
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

    def forward(self, encoded: torch.Tensor) -> DiagonalNormal:
        z_loc, z_scale_raw = encoded.split(self.z_dim, dim=-1)
        return DiagonalNormal(z_loc, positive_scale(z_scale_raw, self.min_scale))
