"""A learned mixture of K diagonal Gaussians as the prior."""

import torch
from torch import nn

from ..gaussian_mixture import GaussianMixture
from ..registry import PRIORS, Option


@PRIORS.register(
    "mixture",
    Option("num_components", int, 10, "K, the number of Gaussian components of p(z)", minimum=1),
    summary="a learned mixture of K diagonal Gaussians",
)
class MixturePrior(nn.Module):
    """Mixture of Gaussians p(z) = Σ_k π_k N(z; μ_k, diag σ_k²), with learned weights π = softmax(a),
    means μ_k and scales σ_k = exp(log σ_k) (a :class:`~pyro_vae.gaussian_mixture.GaussianMixture`,
    whose log-density is two matrix products; the mixture-of-Gaussians prior
    of Dilokthanakul et al., arXiv:1611.02648, and the baseline of Tomczak & Welling,
    arXiv:1705.07120, Sec. 3).

    A multimodal prior lets q(z|x) form clusters without paying a KL penalty for leaving N(0, I).
    The means start at draws from N(0, I) (so the K components differ), the scales at 1, the
    weights equal. The KL term against any guide has no closed form (the log of a sum): it is
    estimated by Monte Carlo, and ``mean_field`` falls back to that estimate.
    """

    def __init__(self, z_dim: int, num_components: int):
        super().__init__()
        if num_components < 1:
            raise ValueError(f"the mixture needs at least one component, got num_components={num_components}")
        self.z_dim = z_dim
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.loc = nn.Parameter(torch.randn(num_components, z_dim))
        self.log_scale = nn.Parameter(torch.zeros(num_components, z_dim))

    def forward(self) -> GaussianMixture:
        return GaussianMixture(self.logits, self.loc, scale=self.log_scale.exp())
