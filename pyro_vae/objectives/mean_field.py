"""``mean_field``: the ELBO with the KL term in closed form, :class:`pyro.infer.TraceMeanField_ELBO`."""

from __future__ import annotations

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ..registry import OBJECTIVES
from .kl_weight import KL_OPTIONS, with_kl_weight
from .particles import NUM_PARTICLES, check_num_particles
from .traces import check_reparameterized, trace_log_weights


class SyncFreeTraceMeanField_ELBO(TraceMeanField_ELBO):
    """:class:`~pyro.infer.TraceMeanField_ELBO` whose ``differentiable_loss`` never reads a value
    back to Python (Pyro's calls ``.item()`` on each particle's ELBO and checks the loss for NaN:
    host synchronizations on a GPU). Same traces and estimator,
    −(1/P) Σ_p [log p(x|z_p) − KL(q(z|x) ‖ p(z))], with the KL from ``kl_divergence`` where it has a
    closed form (:func:`~pyro_vae.objectives.traces.trace_log_weights` with ``closed_form_kl``). Like Pyro's, it needs a
    reparameterized guide; it says so with an error rather than only under validation.
    """

    def _get_trace(self, model, guide, args, kwargs):
        # Trace_ELBO's traces, without TraceMeanField_ELBO's warning about the site order: a model
        # with several layers (pyro_vae.hierarchical) orders its sites top-down and its guide
        # bottom-up, and keeps the KL terms exact by registering no closed form where the order
        # matters (its conditional priors).
        return Trace_ELBO._get_trace(self, model, guide, args, kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        loss = None
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            check_reparameterized(guide_trace)
            terms = trace_log_weights(model_trace, guide_trace, closed_form_kl=True).sum()
            loss_particle = -(terms if self.num_particles == 1 else terms / self.num_particles)
            loss = loss_particle if loss is None else loss + loss_particle
        return loss


@OBJECTIVES.register("mean_field", NUM_PARTICLES, *KL_OPTIONS,
                     summary="the ELBO with the KL term in closed form where one exists (TraceMeanField_ELBO)")
def mean_field(num_particles: int, beta: float, kl_warmup_steps: int):
    """ELBO(x) ≈ (1/P) Σ_p log p(x|z_p) − KL(q(z|x) ‖ p(z)) (SGVB estimator B, arXiv:1312.6114,
    Sec. 2.3, eq. 7). The KL comes from ``torch.distributions.kl_divergence`` where a closed form is
    registered (diagonal Gaussian vs standard normal: ½ Σ (σ² + μ² − 1 − log σ²), Appendix B) and
    falls back to a Monte Carlo estimate where none is, as TraceMeanField_ELBO does. With β ≠ 1 or
    a warm-up, the KL term is weighted (:mod:`pyro_vae.objectives.kl_weight`)."""
    mean_field_elbo = SyncFreeTraceMeanField_ELBO(num_particles=check_num_particles(num_particles),
                                                  vectorize_particles=True, max_plate_nesting=1)
    return with_kl_weight(mean_field_elbo, beta, kl_warmup_steps)
