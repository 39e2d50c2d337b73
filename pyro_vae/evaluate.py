"""Evaluation: test ELBO and the importance-sampled test log-likelihood, in nats per image.

For each image x we draw z_1..z_K ~ q(z|x) by running the Pyro guide under a particle plate,
replay the Pyro model on them (:func:`sample_traces`), and read the log-weights

    log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x)

from the two traces with :func:`~pyro_vae.objectives.traces.trace_log_weights`, the function the
training objectives use too: the model and guide stay the single source of the math. From the one
set of K log-weights per image:

* ELBO(x) ≈ (1/K) Σ_k log w_k, the Monte Carlo form of :func:`pyro_vae.bounds.elbo_terms`;
* log p(x) ≈ L_K = log (1/K) Σ_k w_k (:func:`pyro_vae.bounds.iwae_bound`), the
  importance-sampled estimate of Burda et al. (arXiv:1509.00519, Sec. 5; K = 5000 there), a
  lower bound in expectation that tightens as K grows.

Images are processed in batches and particles in chunks, so the networks' memory stays bounded for
any K; the K log-weights of each batch of images (K × batch numbers) are kept for PSIS and the
bounds. Everything runs on the model's device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Sequence

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import Independent

from . import noise
from .bounds import iwae_bound, iwae_bounds
from .errors import InputError
from .objectives.traces import trace_log_weights
from .stats import mean_and_stderr
from .vae import VAE

#: Default bound on (particles × images) evaluated at once, by device type. On the CPU, chunks of
#: 5,000 decoder rows ran 1.8–1.9× faster than chunks of 25,000 and peaked 7–25% lower, in three
#: runs of ``benchmarks/eval_cost.py`` (docs/benchmarks.md). Other devices use :data:`DEFAULT_MAX_ROWS`,
#: not yet tuned by measurement.
MAX_ROWS = {"cpu": 5_000}
DEFAULT_MAX_ROWS = 25_000


#: PSIS k̂ is computed only from this many log-weights per image or more: its Pareto fit uses the
#: largest min(K/5, 3√K) weights, too few to judge below about 100 samples.
MIN_PSIS_SAMPLES = 100


@torch.no_grad()
def sample_traces(vae: VAE, x: torch.Tensor, num_samples: int):
    """Draw ``num_samples`` z per image from the guide and replay the model on them: the pair of
    traces (model, guide), log-densities computed. A ``pyro.plate("particles", K, dim=-2)`` around
    both programs vectorizes the K draws, so every site has batch shape ``(K, batch)``. The plates'
    own sites are pruned, as Pyro's ELBOs prune them."""
    with pyro.plate("particles", num_samples, dim=-2):
        guide_trace = poutine.trace(vae.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    model_trace, guide_trace = prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    return model_trace, guide_trace


def chunk_rows(vae: VAE, device: torch.device) -> int:
    """How many (particles × images) rows to evaluate at once: :data:`MAX_ROWS` decoder rows, fewer
    when the prior's log-density holds more numbers per row than the decoder's output does. A
    mixture prior declares that count as ``numbers_per_value`` (2K for the
    :class:`~pyro_vae.gaussian_mixture.GaussianMixture` of K diagonal Gaussians, K + 2 · 32 · z_dim
    for full-rank ones, scored 32 components at a time); a row then counts as
    1 + numbers_per_value / pixels decoder rows."""
    max_rows = MAX_ROWS.get(device.type, DEFAULT_MAX_ROWS)
    extra = getattr(vae.prior(), "numbers_per_value", 0)
    pixels = math.prod(vae.x_shape) if vae.x_shape else 1
    return max(1, int(max_rows / (1 + extra / pixels)))


@torch.no_grad()
def log_weights(vae: VAE, x: torch.Tensor, num_samples: int, chunk_size: int | None = None) -> torch.Tensor:
    """All ``(K, batch)`` log-weights log w_k = log p(x, z_k) − log q(z_k|x) for a batch
    (:func:`~pyro_vae.objectives.traces.trace_log_weights` of :func:`sample_traces`), computed
    ``chunk_size`` particles at a time."""
    _check_positive(num_samples, "num_samples")
    if chunk_size is not None:
        _check_positive(chunk_size, "chunk_size")
    chunk_size = chunk_size or max(1, chunk_rows(vae, x.device) // max(1, x.shape[0]))
    chunks = []
    for start in range(0, num_samples, chunk_size):
        chunks.append(trace_log_weights(*sample_traces(vae, x, min(chunk_size, num_samples - start))))
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
        """Means over images with their standard errors (:func:`pyro_vae.stats.mean_and_stderr`);
        ``khat_share_above_0.7`` is ``None`` when k̂ was not computed."""
        elbo, elbo_stderr = mean_and_stderr(self.elbo)
        log_likelihood, log_likelihood_stderr = mean_and_stderr(self.log_likelihood)
        bounds = {k: mean_and_stderr(v) for k, v in self.bounds.items()}
        return {
            "elbo": elbo, "elbo_stderr": elbo_stderr,
            "log_likelihood": log_likelihood, "log_likelihood_stderr": log_likelihood_stderr,
            "num_samples": self.num_samples, "num_images": self.elbo.shape[0],
            "khat_share_above_0.7": None if self.khat is None else (self.khat > 0.7).double().mean().item(),
            "bounds": {k: mean for k, (mean, _) in bounds.items()},
            "bounds_stderr": {k: stderr for k, (_, stderr) in bounds.items()},
        }

    @classmethod
    def concat(cls, parts: Sequence[Evaluation]) -> Evaluation:
        """The evaluations of consecutive parts of a data set, as one (e.g. the shards of processes)."""
        parts = [p for p in parts if p.elbo.shape[0]] or list(parts[:1])
        first = parts[0]
        return cls(torch.cat([p.elbo for p in parts]), torch.cat([p.log_likelihood for p in parts]),
                   first.num_samples, None if first.khat is None else torch.cat([p.khat for p in parts]),
                   {k: torch.cat([p.bounds[k] for p in parts]) for k in first.bounds})

    def non_finite(self) -> torch.Tensor:
        """Indices of the images whose ELBO or log-likelihood estimate is NaN or infinite."""
        return (~(torch.isfinite(self.elbo) & torch.isfinite(self.log_likelihood))).nonzero().flatten()


@torch.no_grad()
def evaluate(vae: VAE, data: torch.Tensor, num_samples: int = 1, batch_size: int = 100,
             chunk_size: int | None = None, psis: bool = False, ks: Sequence[int] = (),
             progress: bool = False, seed: int | None = None, batches: range | None = None) -> Evaluation:
    """ELBO and L_K (K = ``num_samples``) for every image of ``data`` (already on the device);
    with ``psis`` the PSIS k̂ of each image's log-weights (:func:`psis_khat`, K ≥ 100); with ``ks``
    the bounds E[L_K'] for each K' in ``ks``, all from the same K log-weights
    (:func:`pyro_vae.bounds.iwae_bounds`).

    With ``seed``, batch b of images (``data[b·batch_size : (b+1)·batch_size]``) draws its z from
    the global generator seeded by (``seed``, b) (:func:`pyro_vae.noise.seeded`), so its results do
    not depend on which other batches are evaluated, nor where; without it the draws continue the
    global stream. ``batches`` evaluates only those batch indices (a shard; default all), and the
    result holds their images in order.

    With ``num_samples = 1`` the log-likelihood column equals the ELBO column: use K ≥ 1000 for a
    log-likelihood worth reporting (the literature uses 5000).

    :raises InputError: for images the model is not a density over (:meth:`VAE.check_images`), or
        a count that is not a positive integer.
    """
    if not isinstance(vae, VAE):
        raise InputError(f"evaluate needs a pyro_vae.VAE (e.g. pyro_vae.load(path)), got {type(vae).__name__}")
    vae.check_images(data, "data")
    _check_positive(num_samples, "num_samples")
    _check_positive(batch_size, "batch_size")
    ks = list(ks)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_samples:
            raise InputError(f"ks: each K must be an integer in 1..num_samples = {num_samples}, got {k!r}")
    if psis and num_samples < MIN_PSIS_SAMPLES:
        raise InputError(f"psis=True needs num_samples >= {MIN_PSIS_SAMPLES} (k̂ is fitted to the largest "
                         f"weights), got {num_samples}")
    was_training = vae.training
    vae.eval()
    elbos, log_likelihoods, khats, bounds = [], [], [], []
    indices = range(-(-data.shape[0] // batch_size)) if batches is None else batches
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc=f"evaluate (K={num_samples})", unit="batch", leave=False)
    try:
        for index in indices:
            start = index * batch_size
            with noise.seeded((seed, noise.EVALUATION, index), data.device) if seed is not None \
                    else contextlib.nullcontext():
                log_w = log_weights(vae, data[start:start + batch_size], num_samples, chunk_size)
            elbos.append(log_w.mean(0))
            log_likelihoods.append(iwae_bound(log_w))
            if psis:
                khats.append(psis_khat(log_w))
            bounds.append(iwae_bounds(log_w, ks))
    finally:
        vae.train(was_training)
    if not elbos:  # an empty shard
        empty = torch.empty(0)
        return Evaluation(empty, empty.clone(), num_samples, empty.clone() if psis else None,
                          {k: empty.clone() for k in ks})
    return Evaluation(torch.cat(elbos).cpu(), torch.cat(log_likelihoods).cpu(), num_samples,
                      torch.cat(khats) if psis else None,
                      {k: torch.cat([b[k] for b in bounds]).cpu() for k in ks})


def _check_positive(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")


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
def active_units_per_layer(vae: VAE, x: torch.Tensor, threshold: float = 1e-2, batch_size: int = 100,
                           num_samples: int = 64) -> list[int] | None:
    """For a model with several stochastic layers (``layer_means``, :mod:`pyro_vae.hierarchical`):
    the active units of each layer z_1 .. z_L, A_j = Cov_x(E_q[z_j|x]) > ``threshold`` as in
    :func:`active_units` (Burda et al., arXiv:1509.00519, Sec. 5.2, count them per layer); ``None``
    for the one-layer VAE. E_q[z_l|x] for l ≥ 2 is a ``num_samples`` average
    (:meth:`~pyro_vae.hierarchical.HierarchicalVAE.layer_means`)."""
    if not hasattr(vae, "layer_means"):
        return None
    batches = [vae.layer_means(x[start:start + batch_size], num_samples) for start in range(0, x.shape[0], batch_size)]
    return [int((torch.cat(layer).var(dim=0, unbiased=True) > threshold).sum()) for layer in zip(*batches, strict=True)]


@torch.no_grad()
def kl_per_site(vae: VAE, x: torch.Tensor, batch_size: int = 100, num_samples: int = 16) -> dict[str, float]:
    """E_x E_q[log q(z_l|·) − log p(z_l|·)] for each latent site (``vae.latent_sites``), in nats per
    image: the ELBO's KL(q(z|x) ‖ p(z)) split into one term per layer (for one layer, the KL term
    itself), each a Monte Carlo average over ``num_samples`` draws per image from the traces of the
    two programs (the terms of :func:`~pyro_vae.objectives.traces.trace_log_weights`)."""
    totals = dict.fromkeys(vae.latent_sites, 0.0)
    for start in range(0, x.shape[0], batch_size):
        batch = x[start:start + batch_size]
        with pyro.plate("particles", num_samples, dim=-2):
            guide_trace = poutine.trace(vae.guide).get_trace(batch)
            model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(batch)
        for name in vae.latent_sites:
            q_term = guide_trace.nodes[name]["fn"].log_prob(guide_trace.nodes[name]["value"])
            p_term = model_trace.nodes[name]["fn"].log_prob(model_trace.nodes[name]["value"])
            totals[name] += float((q_term - p_term).mean(0).sum())
    return {name: total / x.shape[0] for name, total in totals.items()}


@torch.no_grad()
def kl_per_dimension(vae: VAE, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor | None:
    """E_x[KL(q(z_j|x) ‖ p(z_j))] for each latent unit j, in closed form, where q and p both factorize
    over units with a registered KL (e.g. diagonal Gaussian vs standard normal); else ``None`` (also
    for a model with several stochastic layers, whose KL per layer is :func:`kl_per_site`)."""
    if len(getattr(vae, "latent_sites", ("z",))) > 1:  # several layers: see kl_per_site
        return None
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
