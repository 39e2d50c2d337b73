"""Evaluation: test ELBO and the importance-sampled test log-likelihood, in nats per image.

For each image x we draw z_1..z_K ~ q(z|x) by running the Pyro guide under a particle plate,
replay the Pyro model on them, and read the log-weights

    log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x)

from the two traces (so the model and guide stay the single source of the math). From the one
set of K log-weights per image:

* ELBO(x) ≈ (1/K) Σ_k log w_k (:func:`pyro_vae.bounds.elbo_terms`);
* log p(x) ≈ L_K = logsumexp_k(log w_k) − log K (:func:`pyro_vae.bounds.iwae_bound`), the
  importance-sampled estimate of Burda et al. (arXiv:1509.00519, Sec. 5; K = 5000 there), a
  lower bound in expectation that tightens as K grows.

Images are processed in batches and particles in chunks, so memory stays bounded for any K;
everything runs on the model's device.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence

import pyro
import torch
from pyro import poutine
from torch.distributions import Independent

from .bounds import elbo_terms, iwae_bound, iwae_bounds
from .vae import VAE

#: Default bound on (particles × images) evaluated at once, by device type. On the CPU, chunks of
#: 5,000 decoder rows ran 1.8–1.9× faster than chunks of 25,000 and peaked 7–25% lower, in three
#: runs of ``benchmarks/eval_cost.py`` (docs/benchmarks.md). Other devices use :data:`DEFAULT_MAX_ROWS`,
#: not yet tuned by measurement.
MAX_ROWS = {"cpu": 5_000}
DEFAULT_MAX_ROWS = 25_000


@dataclasses.dataclass
class LogWeightTerms:
    """Per-sample, per-image terms, each of shape ``(K, batch)``."""

    log_likelihood: torch.Tensor  # log p(x|z_k)
    log_prior: torch.Tensor       # log p(z_k)
    log_guide: torch.Tensor       # log q(z_k|x)

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_likelihood + self.log_prior - self.log_guide


@torch.no_grad()
def log_weight_terms(vae: VAE, x: torch.Tensor, num_samples: int) -> LogWeightTerms:
    """Draw ``num_samples`` z per image from the guide and score them under the model.

    A ``pyro.plate("particles", K, dim=-2)`` around both programs vectorizes the K draws: the
    ``"z"`` site gets batch shape ``(K, batch)``.
    """
    with pyro.plate("particles", num_samples, dim=-2):
        guide_trace = poutine.trace(vae.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    z = guide_trace.nodes["z"]["value"]
    return LogWeightTerms(
        log_likelihood=model_trace.nodes["x"]["fn"].log_prob(x),
        log_prior=model_trace.nodes["z"]["fn"].log_prob(z),
        log_guide=guide_trace.nodes["z"]["fn"].log_prob(z),
    )


@torch.no_grad()
def log_weights(vae: VAE, x: torch.Tensor, num_samples: int, chunk_size: int | None = None) -> torch.Tensor:
    """All ``(K, batch)`` log-weights for a batch, computed ``chunk_size`` particles at a time."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    max_rows = MAX_ROWS.get(x.device.type, DEFAULT_MAX_ROWS)
    chunk_size = chunk_size or max(1, max_rows // max(1, x.shape[0]))
    chunks = []
    for start in range(0, num_samples, chunk_size):
        chunks.append(log_weight_terms(vae, x, min(chunk_size, num_samples - start)).log_w)
    return torch.cat(chunks, dim=0)


@dataclasses.dataclass
class Evaluation:
    """Per-image results on a data set (nats; log-densities, so negative for binary images)."""

    elbo: torch.Tensor            # (N,) ELBO estimate per image, from K samples
    log_likelihood: torch.Tensor  # (N,) L_K per image
    num_samples: int              # K
    khat: torch.Tensor | None = None  # (N,) PSIS k̂ of each image's K log-weights
    bounds: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)  # {K': (N,) E[L_K']}

    def summary(self) -> dict:
        n = self.elbo.shape[0]
        extra = {} if self.khat is None else {"khat_share_above_0.7": (self.khat > 0.7).double().mean().item()}
        extra["bounds"] = {k: v.mean().item() for k, v in self.bounds.items()}
        extra["bounds_stderr"] = {k: _stderr(v) for k, v in self.bounds.items()}
        return {**extra,
            "elbo": self.elbo.mean().item(),
            "elbo_stderr": _stderr(self.elbo),
            "log_likelihood": self.log_likelihood.mean().item(),
            "log_likelihood_stderr": _stderr(self.log_likelihood),
            "num_samples": self.num_samples,
            "num_images": n,
        }


def _stderr(values: torch.Tensor) -> float:
    n = values.shape[0]
    return (values.std(unbiased=True) / math.sqrt(n)).item() if n > 1 else float("nan")


@torch.no_grad()
def evaluate(vae: VAE, data: torch.Tensor, num_samples: int = 1, batch_size: int = 100,
             chunk_size: int | None = None, psis: bool = False, ks: Sequence[int] = (),
             progress: bool = False) -> Evaluation:
    """ELBO and L_K (K = ``num_samples``) for every image of ``data`` (already on the device);
    with ``psis`` the PSIS k̂ of each image's log-weights (:func:`psis_khat`); with ``ks`` the
    bounds E[L_K'] for each K' in ``ks``, all from the same K log-weights
    (:func:`pyro_vae.bounds.iwae_bounds`).

    With ``num_samples = 1`` the log-likelihood column equals the ELBO column: use K ≥ 1000 for a
    log-likelihood worth reporting (the literature uses 5000).
    """
    if data.shape[0] == 0:
        raise ValueError("cannot evaluate on an empty data set")
    was_training = vae.training
    vae.eval()
    elbos, log_likelihoods, khats, bounds = [], [], [], []
    batches = range(0, data.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"evaluate (K={num_samples})", unit="batch", leave=False)
    try:
        for start in batches:
            log_w = log_weights(vae, data[start:start + batch_size], num_samples, chunk_size)
            elbos.append(log_w.mean(0))
            log_likelihoods.append(iwae_bound(log_w))
            if psis:
                khats.append(psis_khat(log_w))
            bounds.append(iwae_bounds(log_w, ks))
    finally:
        vae.train(was_training)
    return Evaluation(torch.cat(elbos).cpu(), torch.cat(log_likelihoods).cpu(), num_samples,
                      torch.cat(khats) if psis else None,
                      {k: torch.cat([b[k] for b in bounds]).cpu() for k in ks})


@torch.no_grad()
def elbo_decomposition(vae: VAE, x: torch.Tensor, num_samples: int = 100):
    """Per-image E_q[log p(x|z)], KL(q ‖ p(z)) and ELBO estimated from ``num_samples`` draws
    (:func:`pyro_vae.bounds.elbo_terms`): the two terms the derivation trades off."""
    terms = log_weight_terms(vae, x, num_samples)
    return elbo_terms(terms.log_likelihood, terms.log_prior, terms.log_guide)


def psis_khat(log_w: torch.Tensor) -> torch.Tensor:
    """Pareto-smoothed importance sampling k̂ per image (Vehtari et al., arXiv:1507.02646; Yao et al.,
    arXiv:1802.02538) from ``(K, batch)`` log-weights; k̂ > 0.7 means the importance-sampled
    log p(x) of that image is unreliable. Uses ``arviz.psislw``, which takes samples on the
    *last* axis, hence the transpose.
    """
    with warnings.catch_warnings():  # arviz 0.23 announces its 1.0 refactor on import
        warnings.simplefilter("ignore", FutureWarning)
        try:
            from arviz import psislw
        except ImportError:  # arviz >= 1.0 moved it
            from arviz_stats import psislw  # type: ignore[no-redef]
    _, khat = psislw(log_w.detach().double().cpu().numpy().T)
    return torch.as_tensor(khat)


@torch.no_grad()
def latent_means(vae: VAE, x: torch.Tensor, batch_size: int = 100, num_samples: int = 1000) -> torch.Tensor:
    """E_q[z|x] per image, ``(N, z_dim)``: the guide's mean, or, for a guide without a closed-form
    mean (a flow), the average of ``num_samples`` draws, whose Monte Carlo variance per coordinate is
    Var_q(z_j|x) / ``num_samples``."""
    means = []
    for start in range(0, x.shape[0], batch_size):
        q = vae.encode(x[start:start + batch_size])
        try:
            means.append(q.mean)
        except NotImplementedError:
            means.append(q.sample((num_samples,)).mean(0))
    return torch.cat(means)


@torch.no_grad()
def active_units(vae: VAE, x: torch.Tensor, threshold: float = 1e-2, **kwargs):
    """Burda et al. (arXiv:1509.00519, Sec. 5.2): unit j is active when A_j = Cov_x(E_q[z_j|x]) >
    ``threshold`` (10⁻²), i.e. the posterior mean of z_j moves with the data. Returns the count
    and the per-unit A_j. ``kwargs`` go to :func:`latent_means`; for a flow guide (no closed-form
    mean) its sampling noise adds about E_x[Var_q(z_j|x)] / num_samples to A_j: ≤ 10⁻³ for a unit
    whose posterior variance is ≤ 1 at the default 1000 samples, a tenth of the threshold (64
    samples would add up to 0.016 and count collapsed units as active)."""
    activity = latent_means(vae, x, **kwargs).var(dim=0, unbiased=True).cpu()
    return int((activity > threshold).sum()), activity


@torch.no_grad()
def kl_per_dimension(vae: VAE, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor | None:
    """E_x[KL(q(z_j|x) ‖ p(z_j))] for each latent unit j, in closed form, where q and p both factorize
    over units with a registered KL (e.g. diagonal Gaussian vs standard normal); else ``None``."""
    prior = vae.prior()
    if not isinstance(prior, Independent):  # a mixture or a flow: no per-unit factorization
        return None
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        q = vae.encode(x[start:start + batch_size])
        if not isinstance(q, Independent):  # full-rank or flow guide: no per-unit factorization
            return None
        try:
            total = total + torch.distributions.kl_divergence(q.base_dist, prior.base_dist).sum(0)
        except (AttributeError, NotImplementedError):
            return None
    return (total / x.shape[0]).cpu()
