"""Inverse autoregressive flow on top of the diagonal Gaussian guide, conditioned on the encoder."""

import functools
import math
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
        triangular solve (:func:`step_score`; for the IAF guide's MADE steps, blockwise from the
        network's weights without forming J_t; no value is read back). The result is
        sg(log q(z)) + (z − sg(z)) · sg(g_T).
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
            score = step_score(transform, z_in.detach(), score)
        return score


def step_score(transform, z: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """g_out = J⁻ᵀ (g_in − ∇_z log abs(det J)) for an affine autoregressive step at its input ``z``
    (g_in = ``score``): ∇ log q carried through one step, parameters held fixed. For Pyro's MADE
    network (the IAF guide's), :func:`made_step_score`; for any other network, the Jacobian by
    forward-mode differentiation (:func:`step_jacobian`) and one triangular solve."""
    if not isinstance(transform, transforms.AffineAutoregressive):
        raise NotImplementedError(f"the path derivative of a flow knows affine autoregressive steps, not "
                                  f"{type(transform).__name__}")
    made = _made_of(transform)
    if made is not None:
        return made_step_score(transform, *made, z, score)
    order = transform.arn.permutation
    jacobian_t, log_det_grad = step_jacobian(transform, z, order)  # Jᵀ upper triangular in this order
    rhs = (score[..., order] - log_det_grad).unsqueeze(-1)
    solved = torch.linalg.solve_triangular(jacobian_t, rhs, upper=True).squeeze(-1)
    return torch.empty_like(solved).index_copy_(-1, order, solved)


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

    By forward-mode differentiation along each coordinate direction at once (``torch.func.vmap`` of
    ``torch.func.jvp``; the rows of a batch are independent, so one direction serves them all): D
    Jacobian-vector products, the route for a step on any network (a MADE step has the cheaper
    :func:`made_step_score`, which never forms J)."""
    dim = z.shape[-1]
    order = torch.arange(dim, device=z.device) if order is None else order
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


def made_step_score(transform, made: ConditionalAutoRegressiveNN, context: torch.Tensor | None, z: torch.Tensor,
                    score: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """One step of the path-derivative recursion for an affine step on a MADE network (Germain et al.,
    arXiv:1502.03509): g_out = J⁻ᵀ (g_in − ∇_z log abs(det J)) at the step's input ``z``, with
    g_in = ``score`` = ∇ log q of the input. Exact (a triangular solve, no iteration), without forming J.

    With pre-activations a_l = W_l h_{l−1} + b_l (masked weights, h_0 = [context, z]), slopes
    f'(a_l) and the network's outputs [m; s] = W_out h_L + b_out (mean, raw scale),

        (∂[m; s]/∂z)ᵀ = W_1[:, z]ᵀ diag(f'(a_1)) W_2ᵀ ⋯ diag(f'(a_L)) W_outᵀ,

    and Jᵀ = diag(∂z_out/∂z at fixed m, s) + (∂m/∂z)ᵀ diag(∂z_out/∂m) + (∂s/∂z)ᵀ diag(∂z_out/∂s),
    ∇_z log abs(det J) = (∂s/∂z)ᵀ ∂ log abs(det J)/∂s. Both products with a vector are one backward
    pass through the network (a vector-Jacobian product, the cost of a forward pass).

    In the step's autoregressive order Jᵀ is upper triangular, so Jᵀ u = r is solved backwards in
    blocks of ``block`` coordinates (default ≈ √(2D)): for each block, the right-hand side loses what
    the coordinates already solved contribute, Σ_{q solved} Jᵀ[p, q] u_q, which is the network's
    vector-Jacobian product with output cotangents diag(∂z_out/∂[m; s]) u on the solved coordinates
    (the masks make it vanish on the others); the block's own b × b corner of Jᵀ is the product above
    restricted to the block's inputs and outputs; then one small triangular solve. Per sample that
    is about D·b·H multiply-adds for the corners and D/b backward passes, where forming all of Jᵀ
    costs D·2D·H: the full Jacobian is never built.
    """
    dim = z.shape[-1]
    batch = z.shape[:-1]
    block = max(1, math.isqrt(2 * dim)) if block is None else block
    order = made.permutation
    inputs = z if context is None else torch.cat([context.expand(*batch, context.shape[-1]), z], dim=-1)
    weights = [layer.weight * layer.mask for layer in made.layers]
    h, slopes = inputs.reshape(-1, inputs.shape[-1]), []
    for layer, weight in zip(made.layers[:-1], weights[:-1]):
        a = F.linear(h, weight, layer.bias)
        slopes.append(torch.func.jvp(made.f, (a,), (torch.ones_like(a),))[1])
        h = made.f(a)
    mean, raw = F.linear(h, weights[-1], made.layers[-1].bias).unflatten(-1, (2, dim)).unbind(-2)
    z, mean, raw = z.reshape(-1, dim)[:, order], mean[:, order], raw[:, order]  # autoregressive order from here
    if transform.stable:
        scale = torch.sigmoid(raw + transform.sigmoid_bias)
        by_mean, by_raw, log_det_by_raw = 1 - scale, (z - mean) * scale * (1 - scale), 1 - scale
    else:
        scale = clamp_preserve_gradients(raw, transform.log_scale_min_clip, transform.log_scale_max_clip).exp()
        by_mean, by_raw, log_det_by_raw = torch.ones_like(scale), z * scale, torch.ones_like(scale)
    w_first = weights[0][:, -dim:][:, order]  # (H_1, D): the inputs z, in order
    w_mean, w_raw = weights[-1].unflatten(0, (2, dim))[:, order].unbind(0)  # (D, H_L) each, outputs in order
    hidden = list(zip(weights[1:-1], slopes[1:]))  # (W_l, f'(a_l)) for l = 2 .. L

    def to_inputs(g: torch.Tensor, columns: slice) -> torch.Tensor:
        """A cotangent g at the last hidden layer (before its slope) back to the inputs ``columns``."""
        for weight, slope in reversed(hidden):
            g = (g * slope) @ weight
        return (g * slopes[0]) @ w_first[:, columns]

    rhs = score.reshape(-1, dim)[:, order] - to_inputs(log_det_by_raw @ w_raw, slice(None))
    solved, behind = [], None  # behind: Σ over solved q of diag(∂z_out/∂[m; s]) u_q, at the last hidden layer
    for end in range(dim, 0, -block):
        part = slice(max(0, end - block), end)
        r = rhs[:, part] if behind is None else rhs[:, part] - to_inputs(behind, part)
        outputs = torch.cat([w_mean[part], w_raw[part]])  # (2b, H_L)
        following = [weight for weight, _ in hidden] + [outputs]  # W_2 .. W_L, then the block's outputs
        # the first two factors as one shared tensor, C[h, p, k] = W_1[h, z_p] W_next[k, h], so that
        # the first product is one matrix multiplication by the slopes, with no (N, b, H_1) tensor
        first = w_first[:, part].unsqueeze(-1) * following[0].T.unsqueeze(1)
        corner = (slopes[0] @ first.flatten(1)).unflatten(-1, first.shape[1:])
        for weight, slope in zip(following[1:], slopes[1:]):
            corner = (corner * slope.unsqueeze(-2)) @ weight.T
        mean_t, raw_t = corner.chunk(2, dim=-1)  # (N, b, b) each: (∂m/∂z)ᵀ and (∂s/∂z)ᵀ of the block
        corner = mean_t * by_mean[:, None, part] + raw_t * by_raw[:, None, part]
        corner.diagonal(dim1=-2, dim2=-1).add_(scale[:, part])
        u = torch.linalg.solve_triangular(corner, r.unsqueeze(-1), upper=True).squeeze(-1)
        solved.append(u)
        contribution = torch.cat([by_mean[:, part] * u, by_raw[:, part] * u], dim=-1) @ outputs
        behind = contribution if behind is None else behind + contribution
    u = torch.cat(solved[::-1], dim=-1)
    return torch.empty_like(u).index_copy_(-1, order, u).reshape(*batch, dim)


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
