"""``elbo``: the Monte Carlo ELBO of the derivation, :class:`pyro.infer.Trace_ELBO`."""

from __future__ import annotations

import torch
from pyro.infer import Trace_ELBO

from ..registry import OBJECTIVES
from .kl_weight import KL_OPTIONS, with_kl_weight
from .particles import NUM_PARTICLES, check_num_particles
from .traces import is_reparameterized, trace_log_weights


class SyncFreeTrace_ELBO(Trace_ELBO):
    """:class:`~pyro.infer.Trace_ELBO`, whose ``differentiable_loss`` (the loss of Pyro's module form,
    ``objective(model, guide)(x)``, which training calls) never reads a value back to Python.

    Same traces, same estimator: −(1/P) Σ_p [log p(x, z_p) − log q(z_p|x)] from the vectorized
    pair of traces (:func:`~pyro_vae.objectives.traces.trace_log_weights`). Pyro's version computes the
    same number but calls ``.item()`` on each site's log-probability and on the loss and checks it
    for NaN, four to five host synchronizations per training step on a GPU. ``loss`` and
    ``loss_and_grads`` (used by ``SVI.step``) are Pyro's, unchanged. A guide with a non-reparameterized
    site gets Pyro's score-function surrogate, and its synchronizations. Without Pyro's NaN check,
    :func:`pyro_vae.train.fit` checks the loss it sums at each progress refresh and epoch end.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        loss = None
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            if is_reparameterized(guide_trace):
                log_w = trace_log_weights(model_trace, guide_trace)  # (P, batch), or (1, batch)
                loss_particle = -(log_w.sum() if self.num_particles == 1 else log_w.sum() / self.num_particles)
            else:
                value, surrogate = self._differentiable_loss_particle(model_trace, guide_trace)
                loss_particle = (value + (surrogate - surrogate.detach())) / self.num_particles
            loss = loss_particle if loss is None else loss + loss_particle
        return loss


@OBJECTIVES.register("elbo", NUM_PARTICLES, *KL_OPTIONS,
                     summary="the ELBO, Pyro's Trace_ELBO (KL term by Monte Carlo)")
def elbo(num_particles: int, beta: float, kl_warmup_steps: int):
    """ELBO(x) ≈ (1/P) Σ_p [log p(x, z_p) − log q(z_p|x)], z_p = μ + σ ⊙ ε_p (SGVB estimator A,
    arXiv:1312.6114, Sec. 2.3, eq. 6): both the likelihood and the KL term are sampled. With β ≠ 1 or a warm-up, the KL term is
    weighted (:mod:`pyro_vae.objectives.kl_weight`)."""
    estimator = SyncFreeTrace_ELBO(num_particles=check_num_particles(num_particles), vectorize_particles=True,
                                   max_plate_nesting=1)
    return with_kl_weight(estimator, beta, kl_warmup_steps)
