"""``iwae_dreg``: the IWAE bound with the doubly-reparameterized gradient for the guide."""

from __future__ import annotations

import torch

from ..bounds import log_mean_exp
from ..registry import OBJECTIVES
from .particles import NUM_PARTICLES, check_num_particles
from .renyi import RenyiBound
from .traces import trace_log_weights


class IWAE_DReG(RenyiBound):
    """IWAE bound L_K (value as :class:`RenyiBound` with α = 0) with the doubly-reparameterized
    gradient estimator of Tucker, Lawson, Gu & Maddison (arXiv:1810.04152, eq. 6) for the guide.

    With normalized weights w̃_k = w_k / Σ_j w_j and z_k = g_φ(ε_k, x), the gradient is

    * model parameters θ: Σ_k w̃_k ∂_θ log p_θ(x, z_k), the IWAE gradient;
    * guide parameters φ: Σ_k w̃_k² ∂_z [log p(x, z_k) − log q(z_k|x)] · ∂z_k/∂φ (DReG),

    with the same expectation as the IWAE gradient, but no score term ∂_φ log q_φ(z) for the guide,
    so its signal-to-noise ratio does not decay as K grows (Rainforth et al., arXiv:1802.04537).

    How: the surrogate Σ_k sg(w̃_k) · log w_k^path (log q differentiated only through z, see
    :mod:`pyro_vae.objectives.traces`) gives the first item; a backward hook on each latent sample
    z_k multiplies the gradient flowing back through z_k by w̃_k, which turns w̃_k into w̃_k² on every
    path through the sample (the second item). Gradients that reach parameters directly through
    log p at fixed z keep the weight w̃_k. So parameters *shared* by model and guide (an encoder
    that a VampPrior also uses) get both parts, each with its right weight, and stay unbiased.
    Costs one extra ``log_prob`` per guide site, at the detached z; still one backward pass.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        model_trace, guide_trace = self.traces(model, guide, *args, **kwargs)
        log_w = trace_log_weights(model_trace, guide_trace, path_only=True)
        value = -log_mean_exp(log_w.detach(), dim=0).sum()
        if not log_w.requires_grad:  # evaluation under torch.no_grad()
            return value
        w_norm = torch.softmax(log_w.detach(), dim=0)  # (K, batch)
        for site in guide_trace.nodes.values():
            if site["type"] == "sample" and site["value"].requires_grad:
                _scale_gradient_by(site["value"], w_norm, self.num_particles)
        surrogate = -(w_norm * log_w).sum()
        return value + surrogate - surrogate.detach()


def _scale_gradient_by(z: torch.Tensor, w_norm: torch.Tensor, num_particles: int) -> None:
    """Multiply the gradient arriving at the sample ``z`` (``(K, batch, *event)``) by w̃."""
    weight = w_norm if num_particles > 1 else w_norm[0]  # Pyro adds no particle dim for K = 1
    weight = weight.reshape(weight.shape + (1,) * (z.dim() - weight.dim()))
    z.register_hook(lambda grad: grad * weight)


@OBJECTIVES.register("iwae_dreg", NUM_PARTICLES, summary="IWAE with doubly-reparameterized guide gradients")
def iwae_dreg(num_particles: int) -> IWAE_DReG:
    """IWAE bound with doubly-reparameterized guide gradients (arXiv:1810.04152)."""
    return IWAE_DReG(0.0, check_num_particles(num_particles))
