"""Priors p(z): one module per file, each registered in :data:`pyro_vae.registry.PRIORS`.

A prior is an :class:`torch.nn.Module` whose ``forward()`` returns a ``pyro.distributions``
distribution with ``event_shape == (z_dim,)`` and empty batch shape (the data plate broadcasts it).
"""

from . import standard_normal  # noqa: F401  (registers)
from .standard_normal import StandardNormalPrior

__all__ = ["StandardNormalPrior"]
