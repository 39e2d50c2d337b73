"""The inference gap in its parts (Cremer, Li & Duvenaud, arXiv:1801.03558):

    log p(x) − ELBO[q_amortized] = (log p(x) − ELBO[q*])            the approximation gap
                                  + (ELBO[q*] − ELBO[q_amortized])   the amortization gap,

where q_amortized(z|x) is the guide as the encoder gives it and q* the best member of the *same*
family for this x alone. q* is found by optimizing local variational parameters, one set per image:
the encoder's output for that image (everything the guide's distribution depends on per image;
the guide's own shared weights, such as an IAF's networks, stay as trained), initialized at the
encoder's value and optimized with stochastic gradient ascent on the reparameterized ELBO.
log p(x) comes from AIS (:func:`pyro_vae.ais`).

The approximation gap is what the guide family costs (a diagonal Gaussian cannot follow a
correlated posterior); the amortization gap is what one encoder for all images costs. Both are ≥ 0
up to estimation error: the first because q* is a member of the family whose ELBO is ≤ log p(x), the
second because q* maximizes the ELBO over the family the encoder also outputs.
"""

from __future__ import annotations

import dataclasses
import math

import pyro
import torch

from .annealing import AIS, _check_counts, _progress, ais, frozen, log_joint
from .errors import InputError
from .stats import mean_and_stderr
from .vae import VAE


@dataclasses.dataclass
class InferenceGaps:
    """Per image (nats): the ``approximation`` and ``amortization`` gaps, the terms they come from
    (``log_likelihood`` by AIS, ``elbo_optimized`` of q*, ``elbo_amortized`` of the encoder's q), and
    the standard errors of the ELBO estimates; on the CPU."""

    approximation: torch.Tensor
    amortization: torch.Tensor
    log_likelihood: torch.Tensor
    elbo_optimized: torch.Tensor
    elbo_amortized: torch.Tensor
    elbo_optimized_stderr: torch.Tensor
    elbo_amortized_stderr: torch.Tensor
    log_likelihood_stderr: torch.Tensor

    def summary(self) -> dict:
        """Means over images with their standard errors (over images), nats per image."""
        return {name: mean_and_stderr(getattr(self, name)) for name in
                ("approximation", "amortization", "log_likelihood", "elbo_optimized", "elbo_amortized")}


def _elbo(vae: VAE, x: torch.Tensor, encoded: torch.Tensor, num_samples: int, chunk: int = 500):
    """Per-image ELBO of the guide distribution ``vae.guide_net(encoded)`` from ``num_samples`` draws,
    and its standard error."""
    values = []
    with torch.no_grad():
        q = vae.guide_net(encoded)
        for start in range(0, num_samples, chunk):
            z = q.rsample((min(chunk, num_samples - start),))
            values.append(log_joint(vae, x, z) - q.log_prob(z))
    values = torch.cat(values)
    return values.mean(0), values.std(0) / math.sqrt(num_samples)


def optimize_locally(vae: VAE, x: torch.Tensor, num_steps: int = 1000, num_particles: int = 32, lr: float = 1e-2,
                     progress: bool = False) -> torch.Tensor:
    """The encoder outputs that maximize each image's ELBO, starting from the encoder's: Adam on
    −Σ_images (1/P) Σ_p [log p(x, z_p) − log q(z_p|x)], z_p ~ q reparameterized; the model and the
    guide's shared weights are held fixed."""
    with torch.no_grad():
        encoded = vae.encoder(x).detach().clone()
    encoded.requires_grad_()
    optimizer = torch.optim.Adam([encoded], lr=lr)
    for _ in _progress(range(num_steps), progress, "local ELBO"):
        optimizer.zero_grad()
        q = vae.guide_net(encoded)
        z = q.rsample((num_particles,))
        loss = -(log_joint(vae, x, z) - q.log_prob(z)).mean(0).sum()
        loss.backward()
        optimizer.step()
    return encoded.detach()


def inference_gaps(vae: VAE, x: torch.Tensor, *, num_steps: int = 500, num_chains: int = 16,
                   optimize_steps: int = 1000, num_particles: int = 32, lr: float = 1e-2, elbo_samples: int = 5000,
                   log_likelihood: AIS | None = None, progress: bool = False) -> InferenceGaps:
    """The approximation and amortization gaps of each image of ``x`` (see the module's description).
    ``log_likelihood`` reuses an AIS result for these images; otherwise AIS runs with ``num_steps``
    and ``num_chains``. The ELBOs are estimated from ``elbo_samples`` draws each."""
    if not isinstance(vae, VAE):
        raise InputError(f"inference_gaps needs a pyro_vae.VAE, got {type(vae).__name__}")
    if len(vae.latent_sites) > 1:
        raise InputError("inference_gaps optimizes one guide distribution per image and is not implemented for a "
                         f"model with several latent layers ({', '.join(vae.latent_sites)}); use ais and the "
                         "ELBO for the total gap")
    vae.check_images(x, "x")
    _check_counts(optimize_steps=optimize_steps, num_particles=num_particles, elbo_samples=elbo_samples)
    if log_likelihood is None:
        log_likelihood = ais(vae, x, num_steps, num_chains, progress=progress)
    elif log_likelihood.log_likelihood.shape != (len(x),):
        raise InputError(f"log_likelihood holds {log_likelihood.log_likelihood.shape[0]} images, x {len(x)}")
    was_training = vae.training
    vae.eval()
    try:
        with frozen(vae), pyro.validation_enabled(False):
            with torch.no_grad():
                amortized = vae.encoder(x)
            optimized = optimize_locally(vae, x, optimize_steps, num_particles, lr, progress)
            elbo_amortized, amortized_stderr = _elbo(vae, x, amortized, elbo_samples)
            elbo_optimized, optimized_stderr = _elbo(vae, x, optimized, elbo_samples)
    finally:
        vae.train(was_training)
    log_px = log_likelihood.log_likelihood.to(elbo_optimized)
    return InferenceGaps(*(t.cpu() for t in (log_px - elbo_optimized, elbo_optimized - elbo_amortized, log_px,
                                             elbo_optimized, elbo_amortized, optimized_stderr, amortized_stderr,
                                             log_likelihood.stderr.to(log_px))))
