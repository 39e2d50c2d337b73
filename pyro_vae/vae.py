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
log p(x, z) − log q(z|x). This file holds the only ``pyro.sample`` statements of the library.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn


class VAE(nn.Module):
    """A VAE composed of five parts (compose, don't inherit).

    :param prior: module, ``prior()`` -> p(z) with event shape ``(z_dim,)``. A prior built from the
        guide (``uses_guide = True``, the VampPrior) holds the same encoder and guide objects as the
        VAE, without owning them as submodules, so each parameter has one name.
    :param guide: module, ``guide(encoder(x))`` -> q(z|x), reparameterized.
    :param likelihood: module, ``likelihood(decoder(z))`` -> p(x|z) with event shape ``x_shape``.
    :param encoder: ``nn.Module`` mapping ``(..., *x_shape)`` to the guide's parameters.
    :param decoder: ``nn.Module`` mapping ``(..., z_dim)`` to ``(..., *x_shape)``.
    """

    def __init__(self, prior: nn.Module, guide: nn.Module, likelihood: nn.Module,
                 encoder: nn.Module, decoder: nn.Module):
        super().__init__()
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
        pyro.module("prior", self.prior)
        if getattr(self.prior, "uses_guide", False):
            # p(z) built from q(z|u_k) (VampPrior): the encoder and guide are parameters of the
            # model too, registered under the one name each has in the guide.
            pyro.module("encoder", self.encoder)
            pyro.module("guide", self.guide_net)
        pyro.module("decoder", self.decoder)
        pyro.module("likelihood", self.likelihood)
        size = x.shape[0] if x is not None else num_samples
        if size is None:
            raise ValueError("model() needs observed images x or a number of samples")
        with pyro.plate("data", size):
            z = pyro.sample("z", self.prior())  # the plate broadcasts p(z) over the batch
            return pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """q(z|x): one reparameterized draw z = g(ε, x) per image (site ``"z"``)."""
        pyro.module("encoder", self.encoder)
        pyro.module("guide", self.guide_net)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", self.encode(x))

    # -- plain functions used by the programs and by users -------------------------------------
    def encode(self, x: torch.Tensor) -> dist.Distribution:
        """q(z|x) as a distribution with batch shape ``x.shape[:1]``."""
        return self.guide_net(self.encoder(x))

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """New images: z ~ p(z), then x ~ p(x|z) (``mean=False``) or its mean E[x|z] (``mean=True``,
        pixel probabilities for Bernoulli), by running :meth:`model` with nothing observed."""
        trace = poutine.trace(self.model).get_trace(num_samples=n)
        site = trace.nodes["x"]
        return site["fn"].mean if mean else site["value"]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """z ~ q(z|x), then E[x|z] (or a draw x' ~ p(x|z) with ``mean=False``): the model replayed
        on the guide's z."""
        guide_trace = poutine.trace(self.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(self.model, trace=guide_trace)).get_trace(
            num_samples=x.shape[0]
        )
        site = model_trace.nodes["x"]
        return site["fn"].mean if mean else site["value"]

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device
