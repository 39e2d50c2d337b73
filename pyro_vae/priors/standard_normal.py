"""The prior of the derivation: p(z) = N(0, I)."""

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence, register_kl

from ..bounds import gaussian_kl
from ..distributions import HALF_LOG_2PI, KeepsShape
from ..registry import PRIORS


class StandardNormal(KeepsShape, dist.Independent):
    """N(z; 0, I) over the last dimension, ``Normal(0, 1).to_event(1)`` (the same Pyro distribution,
    so every KL rule for it applies), with its log-density written out:

        log p(z) = −½ ‖z‖² − (D/2) log 2π,

    one pass over z where ``Normal.log_prob`` takes about ten tensor operations per call.

    :param like: a tensor of the shape (``(..., D)``), dtype and device wanted; only its metadata is
        read, so the distribution is standard whatever its values.
    """

    def __init__(self, like: torch.Tensor, validate_args: bool | None = None):
        base = dist.Normal(torch.zeros_like(like), torch.ones_like(like), validate_args=validate_args)
        super().__init__(base, 1, validate_args=validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return -0.5 * value.square().sum(-1) - value.shape[-1] * HALF_LOG_2PI


@register_kl(Independent, StandardNormal)
def kl_diagonal_standard_normal(q: Independent, p: StandardNormal) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) of Appendix B (:func:`pyro_vae.bounds.gaussian_kl`), the term
    ``mean_field`` takes in closed form for the default guide and prior; any other q goes to
    torch's rule for independent pairs."""
    if isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1:
        kl = gaussian_kl(q.base_dist.loc, q.base_dist.scale)
        return kl.expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))
    return kl_divergence(q, Independent(p.base_dist, p.reinterpreted_batch_ndims))


@PRIORS.register("standard_normal", summary="N(0, I), the prior of the derivation")
class StandardNormalPrior(nn.Module):
    """Standard normal prior p(z) = N(z; 0, I) (Kingma & Welling, arXiv:1312.6114, Sec. 3).

    No parameters. The KL term against the diagonal Gaussian guide is closed-form
    (Appendix B: KL = ½ Σ_j (σ_j² + μ_j² − 1 − log σ_j²)), and so is the one against the full-rank
    guide (:func:`pyro_vae.kl.kl_mvn_diagonal_normal`): ``mean_field`` uses them. Against the IAF
    guide it is Monte Carlo (``mean_field`` falls back).
    ``loc`` and ``scale`` are buffers so that ``vae.to(device)`` moves them (``loc`` gives the
    distribution its shape, dtype and device; both stay in the state dict, as checkpoints hold them).
    """

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self) -> StandardNormal:
        return StandardNormal(self.loc)
