"""A VAE with L ≥ 2 stochastic layers (Burda, Grosse & Salakhutdinov, arXiv:1509.00519, Sec. 5).

Generative model (the chain of Burda et al.'s two-layer architecture, generalized to L layers):

    z_L ~ p(z_L),   z_l ~ p(z_l | z_{l+1}) = N(μ_l(z_{l+1}), diag σ_l²(z_{l+1})) for l = L−1 .. 1,
    x ~ p(x | z_1) = likelihood(decoder(z_1)),

and the bottom-up guide (the recognition model of the same paper, "mirrored"):

    q(z_1, .., z_L | x) = q(z_1 | x) Π_{l≥2} q(z_l | z_{l−1}),

q(z_1|x) = guide(encoder(x)) and q(z_l|z_{l−1}) = guide_l(encoder_l(z_{l−1})). The ELBO is the one of
the one-layer VAE with all latent sites in it:

    ELBO(x) = E_q[log p(x, z_1, .., z_L) − log q(z_1, .., z_L | x)],

which every objective of :mod:`pyro_vae.objectives` estimates from the traces of the two programs
below, log w summed over the sites ``z1`` .. ``zL`` (:func:`~pyro_vae.objectives.traces.trace_log_weights`).
This file holds the ``pyro.sample`` statements of this model (those of the one-layer VAE are in
:mod:`pyro_vae.vae`).

``mean_field``: only the top site's KL, KL(q(z_L|z_{L−1}) ‖ p(z_L)), is a closed form of the ELBO's
z_L term; the term of a lower site, E[log p(z_l|z_{l+1}) − log q(z_l|·)], is not −KL(q(z_l|·) ‖
p(z_l|z_{l+1})) because the guide draws z_{l+1} *after* z_l, from it. So the conditional priors are
:class:`ConditionalNormal`, for which no closed-form KL is registered, and ``mean_field`` estimates
their terms by Monte Carlo (as TraceMeanField_ELBO does where a KL has no closed form).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.util import is_validation_enabled
from torch import nn
from torch.distributions import MultivariateNormal, register_kl

from .errors import ConfigError
from .guides.diagonal_normal import DiagonalNormal, positive_scale
from .nets import ACTIVATIONS, mlp
from .registry import MODELS, Option
from .vae import VAE


class ConditionalNormal(DiagonalNormal):
    """p(z_l | z_{l+1}) = N(μ(z_{l+1}), diag σ²(z_{l+1})): a diagonal Gaussian whose KL against the
    guide is deliberately not a closed form of the ELBO term (see the module docstring)."""


@register_kl(dist.Independent, ConditionalNormal)
@register_kl(MultivariateNormal, ConditionalNormal)
def _no_closed_form(q, p):
    raise NotImplementedError("the KL against a conditional prior p(z_l|z_{l+1}) is not the ELBO's term for a "
                              "bottom-up guide")


def _as_plated(q):
    """``q`` expanded to the shape of the enclosing plates (particles × data), as ``pyro.sample``
    would expand it, so that the site's distribution is this very object (a diagonal Gaussian
    expanded to its own shape is itself, :class:`~pyro_vae.distributions.KeepsShape`) and what the
    guide attaches to it (its draw, :func:`_path_log_prob`) is what the objectives see."""
    shape = list(q.batch_shape)
    for frame in pyro.poutine.runtime.get_plates():
        if frame.vectorized and frame.dim is not None:
            shape = [1] * max(0, -frame.dim - len(shape)) + shape
            shape[frame.dim] = frame.size
    return q.expand(torch.Size(shape))


def _feed_up(q, z: torch.Tensor) -> torch.Tensor:
    """z_l as the input of the layer above: the same numbers, but for a draw of the diagonal guide a
    node of its own, μ + σ ⊙ ε recomputed, so that a backward hook on the sample z_l (DReG's weight
    w̃, :mod:`pyro_vae.objectives.iwae_dreg`) sees only the gradient of the terms of log w at z_l
    and not again the gradient that comes down through z_{l+1}, which z_{l+1}'s own hook has
    weighted already (else the path φ → z_l → z_{l+1} would be weighted w̃³ instead of w̃²)."""
    draw = getattr(q, "_draw", None)
    if draw is None or z is not draw[0] or z._version != draw[2]:
        return z  # a value set from outside (conditioned, replayed): no path to weight
    return q.base_dist.loc + draw[1] * q.base_dist.scale


def _path_log_prob(guide: nn.Module, encoder: nn.Module, below: torch.Tensor):
    """log q_{sg φ}(z_l | z_{l−1}) as a function of z_l *and* z_{l−1}: the layer's density with its
    own parameters φ stopped (the score term dropped by STL, Roeder et al., arXiv:1703.09194) but
    still differentiated through the sample below, which is itself a reparameterized function of
    φ. (Stopping the distribution's loc and scale instead, as for q(z_1|x), would also drop
    ∂ log q(z_l|z_{l−1}) / ∂z_{l−1}, a part of the path derivative.)"""

    def path_log_prob(value: torch.Tensor) -> torch.Tensor:
        frozen = {name: p.detach() for name, p in [*encoder.named_parameters(), *encoder.named_buffers()]}
        q = guide(torch.func.functional_call(encoder, frozen, (below,)))
        if any(p.requires_grad for p in guide.parameters()):
            raise NotImplementedError("the path derivative of a layer guide with parameters of its own")
        return q.log_prob(value)

    return path_log_prob


class GaussianLayer(nn.Module):
    """An MLP from ``in_dim`` to ``[μ, r]`` of a ``out_dim`` diagonal Gaussian, σ = softplus(r) + min_scale."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dims: Sequence[int], activation: str, min_scale: float):
        super().__init__()
        self.out_dim, self.min_scale = out_dim, min_scale
        self.net = mlp([in_dim, *hidden_dims, 2 * out_dim], activation)

    def forward(self, z: torch.Tensor) -> ConditionalNormal:
        loc, raw = self.net(z).split(self.out_dim, dim=-1)
        return ConditionalNormal(loc, positive_scale(raw, self.min_scale))


class HierarchicalVAE(VAE):
    """L ≥ 2 stochastic layers (module docstring). The x ↔ z_1 pieces (``encoder``, ``decoder``,
    ``guide``, ``likelihood``) are those of :class:`~pyro_vae.vae.VAE`; ``prior`` is p(z_L);
    ``upper_guides[l]`` is q(z_{l+2}|z_{l+1}) and ``upper_priors[l]`` is p(z_{l+1}|z_{l+2}) (0-based).

    :meth:`encode` is q(z_1|x) (so the latent plot and :func:`~pyro_vae.evaluate.latent_means` show
    the lowest layer); :meth:`layer_means` gives E_q[z_l|x] of every layer.
    """

    def __init__(self, prior: nn.Module, guide: nn.Module, likelihood: nn.Module, encoder: nn.Module,
                 decoder: nn.Module, x_shape: Sequence[int], upper_guides: Sequence[nn.Module],
                 upper_encoders: Sequence[nn.Module], upper_priors: Sequence[nn.Module]):
        super().__init__(prior, guide, likelihood, encoder, decoder, x_shape)
        self.upper_guides = nn.ModuleList(upper_guides)
        self.upper_encoders = nn.ModuleList(upper_encoders)
        self.upper_priors = nn.ModuleList(upper_priors)
        self.latent_sites = tuple(f"z{l}" for l in range(1, len(upper_guides) + 2))

    def model(self, x: torch.Tensor | None = None, num_samples: int | None = None) -> torch.Tensor:
        """p(x, z_1..z_L) = p(z_L) Π p(z_l|z_{l+1}) p(x|z_1); sites ``zL`` .. ``z1`` and ``x``, in
        ``pyro.plate("data")`` (no subsample scale)."""
        self._check_model_input(x, num_samples)
        pyro.module("prior", self.prior)
        pyro.module("upper_priors", self.upper_priors)
        pyro.module("decoder", self.decoder)
        pyro.module("likelihood", self.likelihood)
        size = x.shape[0] if x is not None else num_samples
        with pyro.plate("data", size, device=x.device if x is not None else None):
            z = pyro.sample(self.latent_sites[-1], self.prior())
            for level in range(len(self.upper_priors) - 1, -1, -1):
                z = pyro.sample(self.latent_sites[level], self.upper_priors[level](z))
            return pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """q(z_1|x) Π q(z_l|z_{l−1}): reparameterized draws, sites ``z1`` .. ``zL``; returns z_L."""
        self._check_x(x, "x", values=is_validation_enabled())
        pyro.module("encoder", self.encoder)
        pyro.module("guide", self.guide_net)
        pyro.module("upper_encoders", self.upper_encoders)
        pyro.module("upper_guides", self.upper_guides)
        with pyro.plate("data", x.shape[0], device=x.device):
            q = _as_plated(self.encode(x))
            z = pyro.sample(self.latent_sites[0], q)
            for level, (encoder, guide) in enumerate(zip(self.upper_encoders, self.upper_guides, strict=True)):
                q_above = _as_plated(guide(encoder(_feed_up(q, z))))
                q_above.path_log_prob = _path_log_prob(guide, encoder, z)
                q, z = q_above, pyro.sample(self.latent_sites[level + 1], q_above)
            return z

    #: whether :meth:`initialize_from_data` sets the output bias (the model option ``data_output_bias``)
    data_output_bias = False

    @torch.no_grad()
    def initialize_from_data(self, mean_image: torch.Tensor) -> None:
        """With ``data_output_bias``: the bias of the decoder's last linear layer set to
        logit(mean pixel intensity of the training images), clamped to [10⁻³, 1 − 10⁻³], so that the
        untrained model's p(x|z) is the data's mean image (Burda et al., arXiv:1509.00519, Sec. 5,
        following the initialization of the output bias to the marginal statistics). The decoder's
        output is the Bernoulli logits there. Called by the run before any step (also on resume,
        so the untrained reference model is the same); on device, nothing read back."""
        if not self.data_output_bias:
            return
        last = [m for m in self.decoder.modules() if isinstance(m, nn.Linear)][-1]
        if last.bias is None or last.bias.numel() != mean_image.numel():
            raise ConfigError("model_options", "data_output_bias needs a decoder whose last layer is linear with "
                              "one output per pixel: use net=mlp, or drop --data-output-bias", option="data_output_bias")
        last.bias.copy_(torch.logit(mean_image.reshape(-1).clamp(1e-3, 1 - 1e-3)).to(last.bias))

    def top_posterior(self, x: torch.Tensor) -> dist.Distribution:
        """q(z_L | z_{L−1}) along the chain of the guide's means (no random numbers drawn): what the
        run's KL line compares with p(z_L)."""
        q = self.encode(x)
        for encoder, guide in zip(self.upper_encoders, self.upper_guides, strict=True):
            q = guide(encoder(q.mean))
        return q

    @torch.no_grad()
    def layer_means(self, x: torch.Tensor, num_samples: int = 64) -> list[torch.Tensor]:
        """E_q[z_l|x] for l = 1..L, each ``(N, d_l)``: exact for z_1; for l ≥ 2 the average over
        ``num_samples`` draws of z_{l−1} of the mean of q(z_l|z_{l−1}) (Rao–Blackwellized)."""
        q = self.encode(x)
        means = [q.mean]
        z = q.sample((num_samples,))
        for encoder, guide in zip(self.upper_encoders, self.upper_guides, strict=True):
            q = guide(encoder(z))
            means.append(q.mean.mean(0))
            z = q.sample()
        return means


@MODELS.register(
    "hierarchical",
    Option("upper_z_dims", int, (50,), "latent sizes of the layers above z1 (z2, z3, ...)", flag="--upper-z-dims",
           nargs="+", minimum=1),
    Option("upper_hidden_dims", int, (100, 100), "hidden sizes of each upper layer's MLPs (both directions)",
           flag="--upper-hidden-dims", nargs="+", minimum=1),
    Option("upper_activation", str, "tanh", "activation of the upper layers' MLPs", flag="--upper-activation",
           choices=tuple(sorted(ACTIVATIONS))),
    Option("upper_min_scale", float, 1e-4, "floor added to σ of every upper Gaussian", flag="--upper-min-scale",
           minimum=0.0),
    Option("data_output_bias", bool, False, "start the decoder's output bias at the logit of the training images' "
           "mean (Burda et al.)", flag="--data-output-bias"),
    summary="L ≥ 2 stochastic layers, bottom-up guide q(z1|x) q(z2|z1)... (Burda et al. 2015, Sec. 5)",
)
def hierarchical(build, z_dim: int, upper_z_dims: Sequence[int], upper_hidden_dims: Sequence[int],
                 upper_activation: str, upper_min_scale: float, data_output_bias: bool) -> HierarchicalVAE:
    """A :class:`HierarchicalVAE`: ``build(kind, **context)`` builds one configured piece; the guide
    piece is built once per layer (each layer's Gaussian), the prior for the top layer."""
    dims = [z_dim, *upper_z_dims]
    guide = build("guide", z_dim=dims[0])
    likelihood = build("likelihood", z_dim=dims[0])
    encoder, decoder = build("net", z_dim=dims[0], encoder_out_dim=guide.encoder_out_dim(dims[0]))
    upper_guides, upper_encoders, upper_priors = [], [], []
    for below, above in itertools.pairwise(dims):
        layer_guide = build("guide", z_dim=above)
        upper_guides.append(layer_guide)
        upper_encoders.append(mlp([below, *upper_hidden_dims, layer_guide.encoder_out_dim(above)], upper_activation))
        upper_priors.append(GaussianLayer(above, below, list(reversed(upper_hidden_dims)), upper_activation,
                                          upper_min_scale))
    prior = build("prior", z_dim=dims[-1])
    vae = HierarchicalVAE(prior, guide, likelihood, encoder, decoder, build.x_shape, upper_guides,
                          upper_encoders, upper_priors)
    vae.data_output_bias = data_output_bias
    return vae
