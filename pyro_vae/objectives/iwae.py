"""``iwae``: the importance-weighted bound of Burda, Grosse & Salakhutdinov (arXiv:1509.00519)."""

import warnings

from ..registry import OBJECTIVES
from .particles import NUM_PARTICLES, check_num_particles
from .renyi import RenyiBound


@OBJECTIVES.register("iwae", NUM_PARTICLES, summary="the importance-weighted bound L_K of Burda et al.")
def iwae(num_particles: int) -> RenyiBound:
    """IWAE bound L_K = log (1/K) Σ_k p(x, z_k)/q(z_k|x), K = num_particles (arXiv:1509.00519, eq. 8):
    RenyiELBO(alpha=0). ELBO = L_1 ≤ L_K ≤ L_{K+1} ≤ log p(x)."""
    if check_num_particles(num_particles) == 1:
        warnings.warn("iwae with num_particles=1 is exactly the ELBO; pass --num-particles K > 1 "
                      "(the paper uses K = 5 and 50)", stacklevel=2)
    return RenyiBound(0.0, num_particles)
