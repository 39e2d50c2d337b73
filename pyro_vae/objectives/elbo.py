"""``elbo``: the Monte Carlo ELBO of the derivation, :class:`pyro.infer.Trace_ELBO`."""

from pyro.infer import Trace_ELBO

from ..registry import OBJECTIVES
from .kl_weight import KL_OPTIONS, with_kl_weight
from .particles import NUM_PARTICLES, check_num_particles


@OBJECTIVES.register("elbo", NUM_PARTICLES, *KL_OPTIONS)
def elbo(num_particles: int, beta: float, kl_warmup_steps: int):
    """ELBO(x) ≈ (1/P) Σ_p [log p(x, z_p) − log q(z_p|x)], z_p = μ + σ ⊙ ε_p (SGVB estimator A,
    arXiv:1312.6114, Sec. 2.3, eq. 6): both the likelihood and the KL term are sampled. With β ≠ 1 or a warm-up, the KL term is
    weighted (:mod:`pyro_vae.objectives.kl_weight`)."""
    trace_elbo = Trace_ELBO(num_particles=check_num_particles(num_particles), vectorize_particles=True,
                            max_plate_nesting=1)
    return with_kl_weight(trace_elbo, beta, kl_warmup_steps)
