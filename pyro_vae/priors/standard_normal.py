"""The prior of the derivation: p(z) = N(0, I)."""

import pyro.distributions as dist
import torch
from torch import nn

from ..registry import PRIORS


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

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)
