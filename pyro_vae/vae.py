"""The variational autoencoder as a Pyro model and guide (Kingma & Welling, arXiv:1312.6114).

Generative model (Sec. 2.1):   z ~ p(z),   x ~ p(x|z) = likelihood(decoder(z)),
so p(x) = ∫ p(x|z) p(z) dz, which is intractable for a neural decoder.

Guide (Sec. 2.2):               z ~ q(z|x) = guide(encoder(x)),
an amortized approximation of the posterior p(z|x).

Objective (Sec. 2.2, eq. 3): for every x,

    log p(x) = KL(q(z|x) ‖ p(z|x)) + ELBO(x),
    ELBO(x)  = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)) = E_q[log p(x, z) − log q(z|x)] ≤ log p(x),

which :class:`pyro.infer.Trace_ELBO` estimates from the two Pyro programs below: it runs
:meth:`VAE.guide`, replays :meth:`VAE.model` on the guide's z and averages
log p(x, z) − log q(z|x). This file holds the ``pyro.sample`` statements of the one-layer VAE (the model
``"vae"``; those of the model with several stochastic layers are in :mod:`pyro_vae.hierarchical`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import is_validation_enabled
from torch import nn
from torch.distributions import constraints

from .errors import InputError

#: How a likelihood's support reads in an error message.
_SUPPORTS = {constraints.boolean: "{0, 1} (binary images)", constraints.unit_interval: "[0, 1] (grey levels)",
             constraints.real: "the real numbers"}


class VAE(nn.Module):
    """A VAE composed of five parts (compose, don't inherit).

    :param prior: module, ``prior()`` -> p(z) with event shape ``(z_dim,)``. A prior built from the
        guide (``uses_guide = True``, the VampPrior) holds the same encoder and guide objects as the
        VAE, without owning them as submodules, so each parameter has one name.
    :param guide: module, ``guide(encoder(x))`` -> q(z|x), reparameterized.
    :param likelihood: module, ``likelihood(decoder(z))`` -> p(x|z) with event shape ``x_shape``.
    :param encoder: ``nn.Module`` mapping ``(..., *x_shape)`` to the guide's parameters.
    :param decoder: ``nn.Module`` mapping ``(..., z_dim)`` to ``(..., *x_shape)``.
    :param x_shape: the shape of one image, e.g. ``(1, 28, 28)``; images passed to the model, the
        guide, :meth:`reconstruct` and :func:`pyro_vae.evaluate` must be ``(N, *x_shape)``.

    Inputs are checked where they enter: the dtype, shape and device of ``x`` on every call of
    :meth:`model` and :meth:`guide` (metadata only, no value is read, so no GPU synchronization),
    and its values against the likelihood's support (:meth:`check_images`) at the entry points and
    whenever Pyro's validation is on.
    """

    #: the latent sample sites of :meth:`model` and :meth:`guide`, bottom (next to x) first
    latent_sites: tuple[str, ...] = ("z",)

    def __init__(self, prior: nn.Module, guide: nn.Module, likelihood: nn.Module,
                 encoder: nn.Module, decoder: nn.Module, x_shape: Sequence[int] | None = None):
        super().__init__()
        self.x_shape = tuple(int(s) for s in x_shape) if x_shape is not None else None
        self.prior = prior
        # ``guide`` is the method below (Pyro's word for q); the module that builds q is ``guide_net``.
        self.guide_net = guide
        self.likelihood = likelihood
        self.encoder = encoder
        self.decoder = decoder
        self.config: dict | None = None  # filled by pyro_vae.build.build_vae, kept in checkpoints

    # -- the two Pyro programs -----------------------------------------------------------------
    def model(self, x: torch.Tensor | None = None, num_samples: int | None = None) -> torch.Tensor:
        """p(x, z) = p(z) p(x|z), for a batch: ``x`` observed, or ``num_samples`` new draws.

        Sites: ``"z"`` (latent) and ``"x"`` (observed when ``x`` is given), inside
        ``pyro.plate("data")``. The plate makes the images conditionally independent and carries
        no subsample scale: the loss is the sum over the batch.
        """
        self._check_model_input(x, num_samples)
        pyro.module("prior", self.prior)
        if getattr(self.prior, "uses_guide", False):
            # p(z) built from q(z|u_k) (VampPrior): the encoder and guide are parameters of the
            # model too, registered under the one name each has in the guide.
            pyro.module("encoder", self.encoder)
            pyro.module("guide", self.guide_net)
        pyro.module("decoder", self.decoder)
        pyro.module("likelihood", self.likelihood)
        size = x.shape[0] if x is not None else num_samples
        with pyro.plate("data", size, device=x.device if x is not None else None):
            z = pyro.sample("z", self.prior())  # the plate broadcasts p(z) over the batch
            return pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def _check_model_input(self, x: torch.Tensor | None, num_samples: int | None) -> None:
        """The model's input: images ``x`` (metadata; values too when Pyro's validation is on), or a
        count of new draws."""
        if x is not None:
            self._check_x(x, "x", values=is_validation_enabled())
        else:
            _check_count(num_samples, "num_samples")

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """q(z|x): one reparameterized draw z = g(ε, x) per image (site ``"z"``)."""
        self._check_x(x, "x", values=is_validation_enabled())
        pyro.module("encoder", self.encoder)
        pyro.module("guide", self.guide_net)
        with pyro.plate("data", x.shape[0], device=x.device):
            return pyro.sample("z", self.encode(x))

    # -- plain functions used by the programs and by users -------------------------------------
    def encode(self, x: torch.Tensor) -> dist.Distribution:
        """q(z|x) as a distribution with batch shape ``x.shape[:1]``."""
        return self.guide_net(self.encoder(x))

    def top_posterior(self, x: torch.Tensor) -> dist.Distribution:
        """The guide's distribution of the top latent site, which the objectives compare with
        ``prior()``: here q(z|x) itself."""
        return self.encode(x)

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """New images: z ~ p(z), then x ~ p(x|z) (``mean=False``) or its mean E[x|z] (``mean=True``,
        pixel probabilities for Bernoulli), by running :meth:`model` with nothing observed."""
        _check_count(n, "n")
        trace = poutine.trace(self.model).get_trace(num_samples=n)
        site = trace.nodes["x"]
        return site["fn"].mean if mean else site["value"]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """z ~ q(z|x), then E[x|z] (or a draw x' ~ p(x|z) with ``mean=False``): the model replayed
        on the guide's z."""
        self.check_images(x)
        guide_trace = poutine.trace(self.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(self.model, trace=guide_trace)).get_trace(
            num_samples=x.shape[0]
        )
        site = model_trace.nodes["x"]
        return site["fn"].mean if mean else site["value"]

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    # -- input contracts -----------------------------------------------------------------------
    def check_images(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise :class:`~pyro_vae.errors.InputError`, saying what is expected, unless ``x`` is a
        batch of images this model is a density over: a floating tensor of shape ``(N, *x_shape)``,
        N ≥ 1, with the model's dtype and device, finite, inside the likelihood's support ({0, 1}
        for Bernoulli, [0, 1] for the continuous Bernoulli). The value checks read ``x`` (one
        synchronization on a GPU), so training steps do not call this; entry points do."""
        self._check_x(x, name, values=True)

    def _check_x(self, x, name: str, values: bool) -> None:
        if not torch.is_tensor(x):
            raise InputError(f"{name} must be a torch.Tensor of images, got {type(x).__name__}")
        if not x.is_floating_point():
            hint = ": convert with x.float() / 255" if x.dtype == torch.uint8 else ""
            raise InputError(f"{name} has dtype {x.dtype}; images must be floating point in [0, 1]{hint}")
        if self.x_shape is not None and x.shape[1:] != self.x_shape or x.dim() == 0:
            expected = f"(N, {', '.join(map(str, self.x_shape))})" if self.x_shape else "(N, ...)"
            hint = ""
            if self.x_shape is not None and x.dim() >= 1 and math.prod(x.shape[1:]) == math.prod(self.x_shape):
                hint = f": reshape with x.reshape(-1, {', '.join(map(str, self.x_shape))})"
            raise InputError(f"{name} has shape {tuple(x.shape)}; this model takes images of shape {expected}{hint}")
        if x.shape[0] == 0:
            raise InputError(f"{name} holds no images (shape {tuple(x.shape)}); pass at least one")
        parameter = next(self.encoder.parameters(), None)  # the encoder's first: a short search, every step
        if parameter is None:
            parameter = next(self.parameters(), None)
        if parameter is not None:
            if x.dtype != parameter.dtype:
                raise InputError(f"{name} has dtype {x.dtype} but the model's parameters are {parameter.dtype}: "
                                 f"convert with x.to({parameter.dtype}) (or the model with vae.to({x.dtype}))")
            if x.device != parameter.device:
                raise InputError(f"{name} is on {x.device} but the model is on {parameter.device}: "
                                 f"move it with x.to(vae.device)")
        if values and x.device.type != "meta":
            self._check_support(x, name)

    def _check_support(self, x: torch.Tensor, name: str) -> None:
        finite = torch.isfinite(x).flatten(1).all(1)
        if not finite.all():
            bad = (~finite).nonzero()[0, 0].item()
            raise InputError(f"{name}: {int((~finite).sum())} of {len(x)} images hold NaN or infinite values "
                             f"(the first is image {bad}); images must be finite")
        with torch.no_grad():  # the support does not depend on the decoder's output: zeros will do
            support = self.likelihood(torch.zeros_like(x[0])).support
            inside = support.check(x).reshape(len(x))
        if not inside.all():
            bad = (~inside).nonzero()[0, 0].item()
            base = getattr(support, "base_constraint", support)
            where = _SUPPORTS.get(base, repr(base))
            fix = (": binarize them (torch.bernoulli(x)) or use a likelihood for grey levels (continuous_bernoulli, "
                   "gaussian)" if base is constraints.boolean else "")
            raise InputError(f"{name}: {int((~inside).sum())} of {len(x)} images have values outside {where}, the "
                             f"support of the {type(self.likelihood).__name__.removesuffix('Likelihood')} likelihood (the first is image {bad})"
                             f"{fix}")


def _check_count(n, name: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"{name} must be a positive integer (how many images), got {n!r}")
