"""Gaussian likelihood with a fixed or learned per-pixel σ: why "MSE" is a likelihood."""

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ..registry import LIKELIHOODS, Option


def _inverse_softplus(y: float) -> float:
    """softplus⁻¹(y) = y + log(1 − e^(−y)), in plain floats (no tensor: the likelihood can be built on any device)."""
    return y + math.log(-math.expm1(-y))


@LIKELIHOODS.register(
    "gaussian",
    Option("scale", float, 0.1, "σ of p(x|z) = N(f(z), σ²I); the initial value when learned", minimum=0.0,
           strict=True),
    Option("learn_scale", bool, False, "learn one σ per pixel (with the floor --gaussian-min-scale)"),
    Option("min_scale", float, 0.01, "floor of a learned σ", minimum=0.0),
    summary="N(f(z), σ²I): the squared error as a log-likelihood",
)
class GaussianLikelihood(nn.Module):
    """p(x|z) = N(x; f(z), σ² I) (arXiv:1312.6114, Appendix C.2, "Gaussian MLP as decoder").

    log p(x|z) = −‖x − f(z)‖² / (2σ²) − (D/2) log(2πσ²),

    so with a fixed σ, maximizing the expected log-likelihood is minimizing the squared error
    ‖x − f(z)‖² scaled by 1/(2σ²): "MSE" is this likelihood, and σ sets its weight against the KL
    term. ``f(z)`` is the decoder's output itself (no squashing).

    With ``learn_scale`` each pixel has its own learned σ_i = min_scale + softplus(r_i). The floor
    matters: MNIST's border pixels are constant, and without it σ_i → 0 and log p(x|z) → +∞.
    """

    data = "continuous"

    def __init__(self, x_shape: Sequence[int], scale: float, learn_scale: bool, min_scale: float):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"the Gaussian scale σ must be > 0, got {scale}")
        if learn_scale and not 0 <= min_scale < scale:
            raise ValueError(f"need 0 <= min_scale < scale, got min_scale={min_scale}, scale={scale}")
        self.x_shape = tuple(x_shape)
        self.min_scale = min_scale if learn_scale else 0.0
        raw = torch.full(self.x_shape, _inverse_softplus(scale - self.min_scale))
        if learn_scale:
            self.x_scale_raw = nn.Parameter(raw)
        else:
            self.register_buffer("x_scale_raw", raw)

    @property
    def x_scale(self) -> torch.Tensor:
        """σ, per pixel, shape ``x_shape``."""
        return self.min_scale + F.softplus(self.x_scale_raw)

    def forward(self, x_loc: torch.Tensor) -> dist.Distribution:
        return dist.Normal(x_loc, self.x_scale).to_event(len(self.x_shape))
