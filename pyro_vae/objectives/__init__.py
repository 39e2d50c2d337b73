"""Objectives: registry name -> a configured :class:`pyro.infer.ELBO`.

Every objective is built with ``max_plate_nesting=1`` (the data plate). Without it Pyro runs the
model and guide once to guess the nesting, which consumes random numbers and breaks same-seed
identities. Particles are vectorized: with ``num_particles = P`` the model and guide run once on
a ``(P, batch)`` plate, which the networks support (they accept arbitrary leading dimensions).

The training loop sees only ``objective(model, guide)``: Pyro's :class:`~pyro.infer.elbo.ELBOModule`,
a ``torch.nn.Module`` whose output is the differentiable loss −ELBO summed over the batch.
"""

from ..registry import OBJECTIVES
from . import elbo, elbo_stl, iwae, iwae_dreg, mean_field, renyi  # noqa: F401  (registers)


def make_objective(name: str, options=None):
    """The Pyro ELBO registered as ``name``, with ``options`` (e.g. ``{"num_particles": 5}``)."""
    return OBJECTIVES.build(name, options)


__all__ = ["OBJECTIVES", "make_objective"]
