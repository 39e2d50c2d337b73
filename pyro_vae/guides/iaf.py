"""Inverse autoregressive flow on top of the diagonal Gaussian guide, conditioned on the encoder."""

import functools
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions import transforms
from pyro.distributions.transforms.utils import clamp_preserve_gradients
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn
from torch.nn import functional as F

from ..registry import GUIDES, Option
from .diagonal_normal import DiagonalNormalGuide


class FlowPosterior(dist.TransformedDistribution):
    """q(z|x) as a base distribution pushed through autoregressive steps, z = T(z_0), with the path
    derivative of its log-density that the STL and DReG estimators need.

    ``rsample`` keeps the chain z_0, z_1, …, z_T of its last draw, from which :meth:`path_log_prob`
    computes ∇_z log q(z) at fixed parameters without inverting the flow.
    """

    _chain: tuple = ()

    def rsample(self, sample_shape: tuple = ()) -> torch.Tensor:
        return self._push(self.base_dist.rsample(sample_shape))

    def reparameterize(self, eps: torch.Tensor) -> torch.Tensor:
        """z = T(μ₀ + σ₀ ⊙ ε) for given standard normal noise ε of the shape of a sample: what
        :meth:`rsample` does with fresh noise (used by :class:`pyro_vae.noise.GuideNoise`)."""
        return self._push(self.base_dist.reparameterize(eps))

    def _push(self, z: torch.Tensor) -> torch.Tensor:
        """z_T from a base sample z_0, through every step (each caches its input and output),
        keeping the chain z_0 .. z_T for :meth:`path_log_prob`."""
        chain = [z]
        for transform in self.transforms:
            z = transform(z)
            chain.append(z)
        self._chain = tuple(chain)
        return z

    def path_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log q(z) whose gradient flows only through the sample z, as if q's parameters were
        constants: the value of ``log_prob(z)``, with gradient ∇_z log q(z) · ∂z (the path derivative
        of Roeder et al., arXiv:1703.09194; Tucker et al., arXiv:1810.04152).

        Through the cache, ``log_prob`` of a drawn sample is a function of z_0 and the parameters,
        so its gradient is the *total* derivative and never passes through z itself. Here
        ∇_z log q(z) is carried forward along the chain instead (the recursion of Vaitl et al.,
        arXiv:2403.15881, Sec. 3): with g_0 = ∇ log q_0(z_0) and J_t = ∂z_t/∂z_{t−1},

            log q_t(z_t) = log q_{t−1}(z_{t−1}) − log abs(det J_t(z_{t−1}))
            ⇒  g_t = J_tᵀ⁻¹ (g_{t−1} − ∇_{z_{t−1}} log abs(det J_t(z_{t−1}))),

        where J_t is lower triangular in the step's autoregressive order, so each g_t is one
        triangular solve. J_t and ∇ log abs(det J_t) come from forward-mode derivatives of the step
        (one batched Jacobian-vector product per latent dimension, no sequential loop, no value read
        back). The result is sg(log q(z)) + (z − sg(z)) · sg(g_T).
        """
        if not self._chain or value is not self._chain[-1]:
            raise ValueError("path_log_prob needs the sample this distribution drew last (its chain z_0..z_T)")
        with torch.no_grad():
            score = self._path_score()
        return self.log_prob(value).detach() + ((value - value.detach()) * score).sum(-1)

    def _path_score(self) -> torch.Tensor:
        """g_T = ∇_z log q(z) at the last sample, parameters held fixed (see :meth:`path_log_prob`)."""
        with torch.enable_grad():
            z0 = self._chain[0].detach().requires_grad_()
            (score,) = torch.autograd.grad(self.base_dist.log_prob(z0).sum(), z0)
        for transform, z_in in zip(self.transforms, self._chain[:-1]):
            order = transform.arn.permutation
            jacobian_t, log_det_grad = step_jacobian(transform, z_in.detach(), order)  # Jᵀ upper triangular
            rhs = (score[..., order] - log_det_grad).unsqueeze(-1)
            solved = torch.linalg.solve_triangular(jacobian_t, rhs, upper=True).squeeze(-1)
            score = torch.empty_like(solved).index_copy_(-1, order, solved)
        return score


def affine_step(transform: transforms.AffineAutoregressive, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One of Pyro's ``AffineAutoregressive`` steps as a pure function of its input, bypassing the
    transform's cache: (z_out, log abs(det ∂z_out/∂z)). Stable form (the IAF guide's):
    σ = sigmoid(s + b), z_out = σ ⊙ z + (1 − σ) ⊙ m, log abs(det) = Σ log σ; plain form: z_out = exp(s) ⊙ z + m,
    log abs(det) = Σ s (s clamped as Pyro clamps it). ``tests/test_guides.py`` checks it against the transform."""
    mean, raw = transform.arn(z)
    if transform.stable:
        logit = raw + transform.sigmoid_bias
        scale = torch.sigmoid(logit)
        return scale * z + (1 - scale) * mean, F.logsigmoid(logit).sum(-1)
    log_scale = clamp_preserve_gradients(raw, transform.log_scale_min_clip, transform.log_scale_max_clip)
    return log_scale.exp() * z + mean, log_scale.sum(-1)


def step_jacobian(transform, z: torch.Tensor, order: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Jᵀ, the transposed Jacobian Jᵀ[..., j, i] = ∂z_out_i/∂z_j, and ∇_z log abs(det J) of an affine
    autoregressive step at ``z``, with the coordinates taken in ``order`` (default: as they are).
    In the step's autoregressive order (``transform.arn.permutation``) Jᵀ is upper triangular.

    For a step on Pyro's MADE network (``ConditionalAutoRegressiveNN``, the IAF guide's), in closed
    form from the network's masked weights (:func:`made_step_jacobian`); for any other network, by
    forward-mode differentiation along each coordinate direction at once (``torch.func.vmap`` of
    ``torch.func.jvp``; the rows of a batch are independent, so one direction serves them all)."""
    if not isinstance(transform, transforms.AffineAutoregressive):
        raise NotImplementedError(f"the path derivative of a flow knows affine autoregressive steps, not "
                                  f"{type(transform).__name__}")
    dim = z.shape[-1]
    order = torch.arange(dim, device=z.device) if order is None else order
    made = _made_of(transform)
    if made is not None:
        return made_step_jacobian(transform, *made, z, order)
    directions = torch.eye(dim, dtype=z.dtype, device=z.device).reshape(dim, *(1,) * (z.dim() - 1), dim)

    def derivative(direction):
        return torch.func.jvp(lambda point: affine_step(transform, point), (z,), (direction.expand_as(z),))[1]

    z_out_dot, log_det_dot = torch.func.vmap(derivative)(directions)  # (direction j, ..., i), (j, ...)
    jacobian_t = z_out_dot.movedim(0, -2)
    return jacobian_t[..., order, :][..., :, order], log_det_dot.movedim(0, -1)[..., order]


def _made_of(transform) -> tuple[ConditionalAutoRegressiveNN, torch.Tensor | None] | None:
    """(the MADE network, its context or ``None``) behind a step, when it is Pyro's, without a skip
    layer, with one mean and one scale per dimension; else ``None``."""
    network, context = transform.arn, None
    if isinstance(network, functools.partial):  # ConditionalAffineAutoregressive.condition(context)
        network, context = network.func, network.keywords.get("context")
    if (isinstance(network, ConditionalAutoRegressiveNN) and network.skip_layer is None
            and list(network.param_dims) == [1, 1]):
        return network, context
    return None


def made_step_jacobian(transform, made: ConditionalAutoRegressiveNN, context: torch.Tensor | None,
                       z: torch.Tensor, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`step_jacobian` of an affine step on a MADE network (Germain et al., arXiv:1502.03509),
    in closed form.

    With pre-activations a_l = W_l h_{l−1} + b_l (masked weights, h_0 = [context, z]), slopes
    f'(a_l) of the nonlinearity and the network's outputs [m; s] = W_out h_L + b_out (mean, raw scale),

        (∂[m; s]/∂z)ᵀ = W_1[:, z]ᵀ diag(f'(a_1)) W_2ᵀ ⋯ diag(f'(a_L)) W_outᵀ,

    a product taken from the left, so that each factor is a shared weight matrix (one matrix
    multiplication per layer over all rows at once). Then, elementwise in the output coordinate i,
    Jᵀ = diag(∂z_out/∂z at fixed m, s) + (∂m/∂z)ᵀ diag(∂z_out/∂m) + (∂s/∂z)ᵀ diag(∂z_out/∂s) and
    ∇_z log abs(det J) = (∂s/∂z)ᵀ ∂ log abs(det J)/∂s. The weights are permuted to ``order`` before the
    products, never the (…, D, D) result."""
    dim = z.shape[-1]
    inputs = z if context is None else torch.cat([context.expand(*z.shape[:-1], context.shape[-1]), z], dim=-1)
    weights = [layer.weight * layer.mask for layer in made.layers]
    h, slopes = inputs, []
    for layer, weight in zip(made.layers[:-1], weights[:-1]):
        a = F.linear(h, weight, layer.bias)
        slopes.append(torch.func.jvp(made.f, (a,), (torch.ones_like(a),))[1])
        h = made.f(a)
    mean, raw = F.linear(h, weights[-1], made.layers[-1].bias).unflatten(-1, (2, dim)).unbind(-2)
    z, mean, raw = z[..., order], mean[..., order], raw[..., order]
    if transform.stable:
        scale = torch.sigmoid(raw + transform.sigmoid_bias)
        by_mean, by_raw, log_det_by_raw = 1 - scale, (z - mean) * scale * (1 - scale), 1 - scale
    else:
        scale = clamp_preserve_gradients(raw, transform.log_scale_min_clip, transform.log_scale_max_clip).exp()
        by_mean, by_raw, log_det_by_raw = None, z * scale, None
    product = weights[0][:, -dim:][:, order].T * slopes[0].unsqueeze(-2)  # (..., D, H_1)
    for weight, slope in zip(weights[1:-1], slopes[1:]):
        product = (product @ weight.T) * slope.unsqueeze(-2)
    w_out = weights[-1].unflatten(0, (2, dim))[:, order].flatten(0, 1)  # rows [m; s] in ``order``
    derivative_t = product @ w_out.T  # (..., D, 2D): (∂[m; s]/∂z)ᵀ
    mean_t, raw_t = derivative_t.split(dim, dim=-1)
    jacobian_t = torch.diag_embed(scale) + raw_t * by_raw.unsqueeze(-2)
    jacobian_t = jacobian_t + (mean_t if by_mean is None else mean_t * by_mean.unsqueeze(-2))
    log_det_grad = raw_t.sum(-1) if log_det_by_raw is None else (raw_t @ log_det_by_raw.unsqueeze(-1)).squeeze(-1)
    return jacobian_t, log_det_grad


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
