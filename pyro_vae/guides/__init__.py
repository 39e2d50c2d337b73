"""Guides q(z|x): one module per file, each registered in :data:`pyro_vae.registry.GUIDES`.

A guide maps the encoder's output (``(..., encoder_out_dim)``) to a *reparameterized* distribution
over z (``has_rsample=True``, event shape ``(z_dim,)``), so that z = g(ε, x) and gradients of the
ELBO flow through the sample into the encoder (Kingma & Welling, arXiv:1312.6114, Sec. 2.4).
Each guide states ``encoder_out_dim(z_dim)``, the size of encoder output it needs.
"""

from . import diagonal_normal, full_rank, iaf  # noqa: F401  (registers)
from .diagonal_normal import DiagonalNormalGuide
from .full_rank import FullRankNormalGuide
from .iaf import IAFGuide

__all__ = ["DiagonalNormalGuide", "FullRankNormalGuide", "IAFGuide"]
