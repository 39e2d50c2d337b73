"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams, arXiv:1511.02543; for VAEs Wu et al.,
arXiv:1611.04273): a sandwich around log p(x) on data simulated from the model itself.

Draw z ~ p(z) and x ~ p(x|z): then z is an *exact* sample of the posterior p(z|x). Forward AIS from
q(z|x) to p(z|x) gives a stochastic lower bound of log p(x) (:func:`pyro_vae.ais`); AIS run in
reverse along the same path, from that exact sample toward q(z|x), gives an unbiased estimate of
1/p(x) and so a stochastic upper bound:

    E[log Ẑ_forward] ≤ log p(x) ≤ E[−log (1/Ẑ)_reverse].

The reverse chains reuse the forward chains' schedule and step sizes. The width of the sandwich
bounds the error of both estimates, so as the number of steps grows and the width shrinks, the
forward AIS estimate is certified. The certificate holds for the simulated images only: on real
test images there is no exact posterior sample, and the simulated width says how many steps AIS
needs on data the model finds typical (compare AIS with importance sampling on both to see how far
the real images are from that).
"""

from __future__ import annotations

import dataclasses
import math

import pyro
import torch
from pyro import poutine

from .annealing import _check_counts, _progress, anneal, frozen, noise_inverse, vae_target
from .errors import InputError
from .vae import VAE


@dataclasses.dataclass
class BDMC:
    """Per simulated image: the forward ``lower`` and reverse ``upper`` estimates of log p(x) with
    their standard errors, the images ``x`` and their exact posterior samples ``z``; on the CPU."""

    lower: torch.Tensor
    upper: torch.Tensor
    lower_stderr: torch.Tensor
    upper_stderr: torch.Tensor
    x: torch.Tensor
    z: torch.Tensor
    num_steps: int
    num_chains: int

    @property
    def width(self) -> torch.Tensor:
        """upper − lower per image: what remains uncertain about log p(x)."""
        return self.upper - self.lower


def bdmc(vae: VAE, num_images: int, num_steps: int = 500, num_chains: int = 16, *, batch_size: int = 100,
         schedule: str = "sigmoid", leapfrog_steps: int = 5, step_size: float = 0.1, target_acceptance: float = 0.65,
         progress: bool = False) -> BDMC:
    """The BDMC sandwich on ``num_images`` images simulated from ``vae`` (the global generator draws
    them: seed it for reproducible images)."""
    if not isinstance(vae, VAE):
        raise InputError(f"bdmc needs a pyro_vae.VAE (e.g. pyro_vae.load(path)), got {type(vae).__name__}")
    _check_counts(num_images=num_images, num_steps=num_steps, num_chains=num_chains, batch_size=batch_size,
                  leapfrog_steps=leapfrog_steps)
    options = {"schedule": schedule, "leapfrog_steps": leapfrog_steps, "step_size": step_size,
               "target_acceptance": target_acceptance, "progress": progress}
    was_training = vae.training
    vae.eval()
    parts = []
    try:
        with frozen(vae), pyro.validation_enabled(False):
            for start in _progress(range(0, num_images, batch_size), progress and num_images > batch_size, "BDMC"):
                parts.append(_batch(vae, min(batch_size, num_images - start), num_steps, num_chains, options))
    finally:
        vae.train(was_training)
    return BDMC(*(torch.cat([part[i] for part in parts]).cpu() for i in range(6)), num_steps, num_chains)


def _exact_noise(vae: VAE, x: torch.Tensor, model_trace) -> torch.Tensor:
    """The model's own draw of the latents, mapped to the guide's noise space: ε = g⁻¹(z). For several
    layers, each site's ε_l = (z_l − μ_l)/σ_l under q(z_l|z_{l−1}) at the model's z_{l−1} (the guide
    run conditioned on the model's values; its layers are diagonal Gaussians)."""
    if len(vae.latent_sites) == 1:
        return noise_inverse(vae.encode(x))(model_trace.nodes["z"]["value"])
    values = {name: model_trace.nodes[name]["value"] for name in vae.latent_sites}
    guide_trace = poutine.trace(poutine.condition(vae.guide, data=values)).get_trace(x)
    parts = []
    for name in vae.latent_sites:
        base = guide_trace.nodes[name]["fn"].base_dist
        parts.append((values[name] - base.loc) / base.scale)
    return torch.cat(parts, -1)


def _batch(vae: VAE, n: int, num_steps: int, num_chains: int, options: dict) -> tuple:
    with torch.no_grad():
        trace = poutine.trace(vae.model).get_trace(num_samples=n)
        x = trace.nodes["x"]["value"]
        z = torch.cat([trace.nodes[name]["value"] for name in vae.latent_sites], -1)
    initial, log_ratio = vae_target(vae, x, num_chains)
    forward = anneal(initial, log_ratio, num_steps, **options)
    with torch.no_grad():
        exact = _exact_noise(vae, x, trace)  # the exact posterior sample, in the guide's noise space
    backward = anneal(initial, log_ratio, num_steps, **{**options, "progress": False}, reverse=True,
                      step_sizes=forward.step_sizes, start=exact.expand(num_chains, *exact.shape))
    # the reverse weights estimate 1/p(x): log of their mean is a lower bound of −log p(x)
    upper = -(torch.logsumexp(backward.log_weights, 0) - math.log(num_chains))
    return forward.log_normalizer(), upper, forward.stderr(), backward.stderr(), x, z
