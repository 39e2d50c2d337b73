"""``elbo_stl``: the ELBO with the sticking-the-landing gradient estimator."""

from __future__ import annotations

import torch
from pyro.infer import Trace_ELBO

from ..registry import OBJECTIVES
from .particles import NUM_PARTICLES, check_num_particles
from .traces import check_reparameterized, trace_log_weights


class STL_ELBO(Trace_ELBO):
    """The ELBO (value as :class:`~pyro.infer.Trace_ELBO`) with the sticking-the-landing gradient of
    Roeder, Wu & Duvenaud (arXiv:1703.09194, Sec. 3):

        ∇ ELBO ≈ (1/P) Σ_p ∇ [log p(x, z_p) − log q_{sg(φ)}(z_p)],   z_p = g_φ(ε_p, x),

    the total derivative with the score term ∂_φ log q_φ(z) (zero in expectation) removed: log q is
    differentiated only through the sample. Unbiased; when q equals the posterior the gradient is
    exactly zero for every sample. Parameters shared with the model stay unbiased too, because only
    a zero-mean term is dropped.
    """

    def __init__(self, num_particles: int):
        super().__init__(num_particles=num_particles, max_plate_nesting=1, vectorize_particles=True)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        (model_trace, guide_trace), = self._get_traces(model, guide, args, kwargs)
        check_reparameterized(guide_trace)
        log_w = trace_log_weights(model_trace, guide_trace, path_only=True)
        return -log_w.sum() / log_w.shape[0]

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


@OBJECTIVES.register("elbo_stl", NUM_PARTICLES, summary="the ELBO with the sticking-the-landing guide gradient")
def elbo_stl(num_particles: int) -> STL_ELBO:
    """ELBO with the sticking-the-landing gradient (arXiv:1703.09194)."""
    return STL_ELBO(check_num_particles(num_particles))
