"""Priors p(z): one module per file, each registered in :data:`pyro_vae.registry.PRIORS`.

A prior is an :class:`torch.nn.Module` whose ``forward()`` returns a ``pyro.distributions``
distribution with ``event_shape == (z_dim,)`` and empty batch shape (the data plate broadcasts it).
"""

from . import flow, learned_normal, mixture, standard_normal, vamp  # noqa: F401  (registers)
from .flow import FlowPrior
from .learned_normal import LearnedNormalPrior
from .mixture import MixturePrior
from .standard_normal import StandardNormalPrior
from .vamp import VampPrior

__all__ = ["FlowPrior", "LearnedNormalPrior", "MixturePrior", "StandardNormalPrior", "VampPrior"]
