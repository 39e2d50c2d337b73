"""``renyi``: the Rényi variational bound, and the class behind ``iwae`` and ``iwae_dreg``."""

from __future__ import annotations

import pyro.infer
import torch

from ..bounds import log_mean_exp
from ..registry import OBJECTIVES, Option
from .particles import NUM_PARTICLES, check_num_particles
from .traces import check_reparameterized, trace_log_weights


class RenyiBound(pyro.infer.RenyiELBO):
    """Pyro's :class:`~pyro.infer.RenyiELBO`, plus a ``differentiable_loss`` so it runs in Pyro's
    module form (``objective(model, guide)(x)`` is the loss tensor) like every other objective.

    L_α(x) = 1/(1−α) · log (1/K) Σ_k w_k^{1−α},   w_k = p(x, z_k)/q(z_k|x),   z_k ~ q(z|x)

    (Li & Turner, arXiv:1602.02311, eq. 12). α = 0 is the IWAE bound L_K of Burda et al.
    (arXiv:1509.00519, eq. 8); α → 1 is the ELBO. The logsumexp over the K particles is taken
    per image, inside the data plate. For a reparameterized guide the gradient of this loss is
    Pyro's surrogate gradient Σ_k w̃_k ∇ log w_k (w̃ the normalized weights w_k^{1−α}/Σ_j w_j^{1−α}),
    and its value equals :meth:`loss`.
    """

    def __init__(self, alpha: float, num_particles: int):
        super().__init__(alpha=alpha, num_particles=num_particles, max_plate_nesting=1,
                         vectorize_particles=True)

    def traces(self, model, guide, *args, **kwargs):
        """One vectorized pair of traces: every site has the particle dimension ``K`` on the left."""
        (model_trace, guide_trace), = self._get_traces(model, guide, args, kwargs)
        check_reparameterized(guide_trace)
        return model_trace, guide_trace

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """L_α per image from ``(K, batch)`` log-weights."""
        scaled = (1.0 - self.alpha) * log_w
        return log_mean_exp(scaled, dim=0) / (1.0 - self.alpha)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        model_trace, guide_trace = self.traces(model, guide, *args, **kwargs)
        return -self.bound(trace_log_weights(model_trace, guide_trace)).sum()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


@OBJECTIVES.register(
    "renyi",
    NUM_PARTICLES,
    Option("alpha", float, 0.5, "order α of the Rényi bound (0: IWAE; 1 would be the ELBO)", flag="--alpha"),
    summary="the Rényi bound L_α of Li & Turner",
)
def renyi(num_particles: int, alpha: float) -> RenyiBound:
    """Rényi bound L_α with K = num_particles importance samples (arXiv:1602.02311)."""
    if alpha == 1:
        raise ValueError("the Rényi bound of order alpha=1 is the ELBO, for which Pyro's RenyiELBO has "
                         "no formula: use --objective elbo (or mean_field) instead")
    return RenyiBound(alpha, check_num_particles(num_particles))
