"""Likelihoods p(x|z): one module per file, each registered in :data:`pyro_vae.registry.LIKELIHOODS`.

A likelihood maps the decoder's output (one number per pixel, ``(..., *x_shape)``) to a distribution
over x whose event shape is one whole image, ``x_shape``. Its class attribute ``data`` says which
data it is a density for: ``"binary"`` (needs binarized images) or ``"continuous"``.
"""

from . import bernoulli, continuous_bernoulli, gaussian  # noqa: F401  (registers)
from .bernoulli import BernoulliLikelihood
from .continuous_bernoulli import ContinuousBernoulliLikelihood
from .gaussian import GaussianLikelihood

__all__ = ["BernoulliLikelihood", "ContinuousBernoulliLikelihood", "GaussianLikelihood"]
