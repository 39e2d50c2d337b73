"""The prior of the derivation: p(z) = N(0, I)."""

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence, register_kl

from ..bounds import gaussian_kl
from ..distributions import HALF_LOG_2PI
from ..registry import PRIORS


class StandardNormal(dist.Independent):
    """N(z; 0, I) over the last dimension, ``Normal(0, 1).to_event(1)`` (the same Pyro distribution,
    so every KL rule for it applies), with its log-density written out:

        log p(z) = −½ ‖z‖² − (D/2) log 2π,

    one pass over z where ``Normal.log_prob`` takes about ten tensor operations per call.
    Build it from zeros and ones (:meth:`StandardNormalPrior.forward` passes its buffers); the
    values are not checked, as that would read them back from the device.
    """

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
    ``loc`` and ``scale`` are buffers so that ``vae.to(device)`` moves them.
    """

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self) -> StandardNormal:
        return StandardNormal(dist.Normal(self.loc, self.scale), 1)
