"""Inverse autoregressive flow on top of the diagonal Gaussian guide, conditioned on the encoder."""

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions import transforms
from torch import nn

from ..registry import GUIDES, Option
from .diagonal_normal import DiagonalNormalGuide


class FlowPosterior(dist.TransformedDistribution):
    """A ``TransformedDistribution`` whose ``log_prob`` first broadcasts the value to the batch shape.

    Conditioned transforms carry a context per batch element, so they cannot broadcast a value of
    batch shape ``(n, 1)`` against a context of batch ``(K,)``, which is what ``MixtureSameFamily``
    passes to its components (the VampPrior built from this guide). A value that already has the
    full shape is passed through as the same tensor, so the transforms' cache (the inverse of a
    sample this distribution drew) still applies.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        event_dims = len(self.event_shape)
        shape = torch.broadcast_shapes(value.shape[:value.dim() - event_dims], self.batch_shape) + self.event_shape
        return super().log_prob(value if value.shape == shape else value.expand(shape))


@GUIDES.register(
    "iaf",
    Option("depth", int, 2, "number of IAF steps T", minimum=1),
    Option("context_dim", int, 32, "size of the context h(x) the encoder gives every IAF step", minimum=1),
    Option("hidden_dims", int, (128,), "hidden sizes of each step's autoregressive network (each >= z_dim)",
           nargs="+", minimum=1),
    Option("min_scale", float, 1e-4, "floor added to σ(x) of the initial Gaussian", minimum=0.0),
    summary="a diagonal Gaussian refined by inverse autoregressive flow steps",
)
class IAFGuide(nn.Module):
    """Inverse autoregressive flow q(z|x) (Kingma et al., arXiv:1606.04934, Sec. 4, Algorithm 1):

        z_0 = μ_0(x) + σ_0(x) ⊙ ε,  ε ~ N(0, I);
        [m_t, s_t] = AR-NN_t(z_{t−1}, h(x)),  σ_t = sigmoid(s_t + 2),  z_t = σ_t ⊙ z_{t−1} + (1 − σ_t) ⊙ m_t;
        log q(z_T|x) = log N(z_0; μ_0, σ_0²) − Σ_t Σ_i log σ_{t,i}.

    The encoder outputs ``[z_loc, z_scale_raw, h]``: the diagonal Gaussian of
    :class:`~pyro_vae.guides.diagonal_normal.DiagonalNormalGuide` and a context h(x) that conditions
    every step. Each step is Pyro's ``ConditionalAffineAutoregressive`` with ``stable=True`` (the
    sigmoid-gated update above) on a ``ConditionalAutoRegressiveNN`` (MADE masks, Germain et al.,
    arXiv:1502.03509) with its own random ordering of the dimensions. Sampling is one network pass
    per step and z is differentiable in ε and in the encoder's output (``has_rsample``); the density
    of a sample is cached, so the ELBO never inverts the flow. The Jacobian of each step is
    triangular, log|det| = Σ_i log σ_{t,i} (the tests check it against autograd).

    KL: no closed form against any prior; every objective (``mean_field`` included, by its
    fallback) estimates it by Monte Carlo. The VampPrior refuses it as its component family: see
    :class:`pyro_vae.priors.vamp.VampPrior`.
    """

    def __init__(self, z_dim: int, depth: int, context_dim: int, hidden_dims: Sequence[int], min_scale: float):
        super().__init__()
        if depth < 1 or context_dim < 1:
            raise ValueError(f"the IAF guide needs depth >= 1 and context_dim >= 1, got {depth} and {context_dim}")
        if any(h < z_dim for h in hidden_dims):
            raise ValueError(f"the IAF's hidden sizes must be >= z_dim = {z_dim} (autoregressive masks), "
                             f"got {list(hidden_dims)}")
        self.z_dim = z_dim
        self.context_dim = context_dim
        self.base = DiagonalNormalGuide(z_dim, min_scale)
        self.steps = nn.ModuleList(
            transforms.conditional_affine_autoregressive(z_dim, context_dim, list(hidden_dims), stable=True)
            for _ in range(depth))

    def encoder_out_dim(self, z_dim: int) -> int:
        return self.base.encoder_out_dim(z_dim) + self.context_dim

    def forward(self, encoded: torch.Tensor) -> dist.Distribution:
        base_params, context = encoded.split([encoded.shape[-1] - self.context_dim, self.context_dim], dim=-1)
        return FlowPosterior(self.base(base_params), [step.condition(context) for step in self.steps])
