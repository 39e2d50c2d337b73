"""A normalizing-flow prior: N(0, I) pushed through a stack of autoregressive transforms."""

from collections.abc import Sequence

import pyro.distributions as dist
from pyro.distributions import transforms
from torch import nn

from ..registry import PRIORS, Option
from .standard_normal import StandardNormalPrior

#: name -> Pyro helper building one autoregressive layer ``(input_dim, hidden_dims)``.
LAYERS = {"affine": transforms.affine_autoregressive, "spline": transforms.spline_autoregressive}


@PRIORS.register(
    "flow",
    Option("depth", int, 2, "number of autoregressive layers", minimum=1),
    Option("hidden_dims", int, (128,), "hidden sizes of each layer's autoregressive network (each >= z_dim)",
           nargs="+", minimum=1),
    Option("layer", str, "affine", "affine (masked autoregressive flow) or spline (neural spline flow)",
           choices=tuple(LAYERS)),
    summary="N(0, I) pushed through learned autoregressive flows (MAF or spline)",
)
class FlowPrior(nn.Module):
    """Flow prior p(z) = N(f(z); 0, I) · abs(det ∂f/∂z), f = f_L ∘ … ∘ f_1, each f_l autoregressive.

    With ``layer = affine``, f_l(z)_i = μ_i(z_<i) + exp(α_i(z_<i)) · z_i: a masked autoregressive
    flow (Papamakarios et al., arXiv:1705.07057), the autoregressive-flow prior of Chen et al.
    (arXiv:1611.02731); with ``layer = spline``, monotone rational-quadratic splines
    (Durkan et al., arXiv:1906.04032). Each layer orders the dimensions by its own random
    permutation. Built from Pyro's ``AffineAutoregressive`` / ``SplineAutoregressive`` used in the
    inverse direction (``.inv``), so that log p(z), needed at every guide sample, is one network pass
    per layer; drawing z ~ p(z) (only for new images) is z_dim sequential passes, and works in
    float32 only (Pyro 1.9.2's autoregressive inverse starts from float32 zeros).

    It has no closed-form mean: the tests compare its sample moments with moments integrated from
    its own density. The KL term against every guide is Monte Carlo, and ``mean_field`` falls back
    to that estimate.
    """

    def __init__(self, z_dim: int, depth: int, hidden_dims: Sequence[int], layer: str):
        super().__init__()
        if depth < 1:
            raise ValueError(f"the flow prior needs depth >= 1, got {depth}")
        if any(h < z_dim for h in hidden_dims):
            raise ValueError(f"the flow's hidden sizes must be >= z_dim = {z_dim} (autoregressive masks), "
                             f"got {list(hidden_dims)}")
        self.z_dim = z_dim
        self.base = StandardNormalPrior(z_dim)
        self.layers = nn.ModuleList(LAYERS[layer](z_dim, list(hidden_dims)) for _ in range(depth))

    def forward(self) -> dist.Distribution:
        return dist.TransformedDistribution(self.base(), [layer.inv for layer in self.layers])
