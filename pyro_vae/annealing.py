"""Annealed importance sampling (Neal, arXiv:physics/9803008): a certified-in-expectation estimate of
log p(x), and of any normalizing constant.

**The core** (:func:`anneal`) estimates Z = ∫ γ(z) dz for an unnormalized density γ, starting from a
normalized, sampleable π₀, along the geometric path

    f_β(z) = π₀(z)^(1−β) γ(z)^β = π₀(z) · r(z)^β,   r(z) = γ(z)/π₀(z),   0 = β₀ < β₁ < … < β_T = 1.

Each chain starts at z₀ ~ π₀; at step t its weight gains (β_t − β_{t−1}) log r(z_{t−1}), then z moves
by a Hamiltonian Monte Carlo transition that leaves f_{β_t} invariant. The average of exp(log w) over
chains is an unbiased estimate of Z, so its log (log-mean-exp over chains) is a stochastic lower
bound of log Z: E[log Ẑ] ≤ log Z (Jensen), the gap closing as the chains get longer. Run backwards
from an exact sample of γ/Z, the same path gives an unbiased estimate of 1/Z, hence a stochastic
upper bound of log Z: the reverse half of BDMC (Grosse et al., arXiv:1511.02543;
:mod:`pyro_vae.bdmc`). The core takes any batched ``log_ratio`` = log γ − log π₀, so it is tested on
targets whose log Z is known.

**For a VAE** (:func:`ais`), γ is p(x, z) as the Pyro model's trace computes it, and the chains run
in the guide's base-noise space: every guide draws z = g(ε) with ε ~ N(0, I) (:func:`noise_map`),
so with π₀ = N(0, I) and r(ε) = p(x, g(ε)) / q(g(ε) | x) the path moves from q(z|x) to p(z|x)
expressed in ε, and log q(g(ε)|x) comes from g's log-Jacobian: no flow is ever inverted. The chains
are batched over images × chains on the model's device; each image has its own HMC step size,
adapted toward a target acceptance rate as the chains go (Wu et al., arXiv:1611.04273, Sec. 4).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, TransformedDistribution

from .errors import InputError
from .vae import VAE


def sigmoid_schedule(num_steps: int, radius: float = 4.0) -> torch.Tensor:
    """β_t = (σ(s_t) − σ(−R)) / (σ(R) − σ(−R)), s_t evenly spaced on [−R, R]: small steps near β = 0
    and β = 1, where the intermediate distributions change fastest (Grosse et al., Sec. 6)."""
    s = torch.sigmoid(torch.linspace(-radius, radius, num_steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


def linear_schedule(num_steps: int) -> torch.Tensor:
    """β_t = t / T."""
    return torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)


SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {"sigmoid": sigmoid_schedule, "linear": linear_schedule}


@dataclasses.dataclass
class AnnealResult:
    """One annealing run over a batch: ``log_weights`` (chains, images); the mean HMC acceptance
    per image; the step size used at every transition ``step_sizes`` (T, images); the schedule
    ``betas`` (T + 1,); and the chains' final ``states``."""

    log_weights: torch.Tensor
    acceptance: torch.Tensor
    step_sizes: torch.Tensor
    betas: torch.Tensor
    states: torch.Tensor

    def log_normalizer(self) -> torch.Tensor:
        """log Ẑ = log-mean-exp of the chains' weights, per image (a lower bound in expectation;
        for a reverse run, an estimate of −log Z's lower bound: see :mod:`pyro_vae.bdmc`)."""
        return torch.logsumexp(self.log_weights, 0) - math.log(self.log_weights.shape[0])

    def stderr(self) -> torch.Tensor:
        """Standard error of log Ẑ per image, by the delta method: s.d.(w) / (√C · mean(w))."""
        w = (self.log_weights - self.log_weights.max(0).values).exp()
        if w.shape[0] < 2:
            return torch.full_like(w[0], math.nan)
        return w.std(0) / (math.sqrt(w.shape[0]) * w.mean(0))


class _Position:
    """A batch of chain positions with log r, log π₀ and their gradients, computed once per position."""

    def __init__(self, z: torch.Tensor, log_ratio: Callable, initial: Distribution):
        with torch.enable_grad():
            z = z.detach().requires_grad_()
            ratio = log_ratio(z)
            (ratio_grad,) = torch.autograd.grad(ratio.sum(), z)
            prior = initial.log_prob(z)
            (prior_grad,) = torch.autograd.grad(prior.sum(), z)
        self.z, self.ratio, self.prior = z.detach(), ratio.detach(), prior.detach()
        self.ratio_grad, self.prior_grad = ratio_grad, prior_grad

    def log_f(self, beta: float) -> torch.Tensor:
        return self.prior + beta * self.ratio

    def grad(self, beta: float) -> torch.Tensor:
        return self.prior_grad + beta * self.ratio_grad


def _hmc(position: _Position, beta: float, step_size: torch.Tensor, leapfrog_steps: int, log_ratio: Callable,
         initial: Distribution) -> tuple[_Position, torch.Tensor]:
    """One HMC transition leaving f_β invariant, for every chain at once; ``step_size`` broadcasts
    against the positions' batch shape (one per image). Returns the new positions and acceptance."""
    momentum = torch.randn_like(position.z)
    step = step_size.unsqueeze(-1)
    p = momentum + 0.5 * step * position.grad(beta)
    new = position
    for leap in range(leapfrog_steps):
        new = _Position(new.z + step * p, log_ratio, initial)
        if leap < leapfrog_steps - 1:
            p = p + step * new.grad(beta)
    p = p + 0.5 * step * new.grad(beta)
    log_accept = (new.log_f(beta) - 0.5 * p.pow(2).sum(-1)) - (position.log_f(beta) - 0.5 * momentum.pow(2).sum(-1))
    accept = torch.rand_like(log_accept).log() < log_accept  # NaN compares False: rejected
    keep = accept.unsqueeze(-1)
    merged = _Position.__new__(_Position)
    for name in ("z", "ratio_grad", "prior_grad"):
        setattr(merged, name, torch.where(keep, getattr(new, name), getattr(position, name)))
    for name in ("ratio", "prior"):
        setattr(merged, name, torch.where(accept, getattr(new, name), getattr(position, name)))
    return merged, accept.to(position.z.dtype)


def anneal(initial: Distribution, log_ratio: Callable[[torch.Tensor], torch.Tensor], num_steps: int, *,
           schedule: str | torch.Tensor = "sigmoid", leapfrog_steps: int = 5, step_size: float = 0.1,
           target_acceptance: float = 0.65, step_sizes: torch.Tensor | None = None, reverse: bool = False,
           start: torch.Tensor | None = None, progress: bool = False) -> AnnealResult:
    """Annealed importance sampling from π₀ = ``initial`` (batch shape (chains, images), normalized)
    to γ = π₀ · exp(``log_ratio``).

    :param schedule: a name in :data:`SCHEDULES` or the T + 1 values β₀ = 0 … β_T = 1.
    :param step_sizes: (T, images) step sizes to use instead of adapting them (the reverse chain of
        BDMC reuses the forward chain's).
    :param reverse: run from β = 1 to β = 0 starting at ``start``, exact samples of γ/Z; the
        weights then estimate 1/Z.
    """
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise InputError(f"unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)}")
        betas = SCHEDULES[schedule](num_steps)
    else:
        betas = torch.as_tensor(schedule, dtype=torch.float64)
    if num_steps < 1 or len(betas) != num_steps + 1 or betas[0] != 0 or betas[-1] != 1 or (betas.diff() < 0).any():
        raise InputError(f"the schedule needs {num_steps + 1} increasing values from 0 to 1")
    if reverse and start is None:
        raise InputError("a reverse run starts from exact samples of the target: pass start")
    z = start if start is not None else initial.sample()
    batch = z.shape[:-1]
    size = torch.full(batch[-1:], float(step_size), dtype=z.dtype, device=z.device)
    log_w = torch.zeros(batch, dtype=z.dtype, device=z.device)
    accepted = torch.zeros(batch, dtype=z.dtype, device=z.device)
    used = torch.empty(num_steps, *batch[-1:], dtype=z.dtype, device=z.device)
    position = _Position(z, log_ratio, initial)
    order = range(num_steps, 0, -1) if reverse else range(1, num_steps + 1)
    bar = _progress(order, progress, "AIS" + (" (reverse)" if reverse else ""))
    for t in bar:
        beta_from, beta_to = (betas[t], betas[t - 1]) if reverse else (betas[t - 1], betas[t])
        log_w = log_w + (beta_to - beta_from).item() * position.ratio
        index = t - 1
        if step_sizes is not None:
            size = step_sizes[index].to(z.dtype)
        used[index] = size
        position, accept = _hmc(position, beta_to.item(), size, leapfrog_steps, log_ratio, initial)
        accepted = accepted + accept
        if step_sizes is None:  # toward the target acceptance, per image
            rate = accept.mean(tuple(range(accept.dim() - 1)))
            size = (size * torch.exp(0.5 * (rate - target_acceptance))).clamp(1e-4, 5.0)
    return AnnealResult(log_w, (accepted / num_steps).mean(tuple(range(accepted.dim() - 1))), used, betas,
                        position.z)


def _progress(iterable, enabled: bool, description: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, unit="step", leave=False)


# -- the VAE ----------------------------------------------------------------------------------------------

def noise_map(q: Distribution) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """For a guide's q(z|x), the map ε ↦ (z = g(ε), log q(z|x)) with ε ~ N(0, I): the reparameterization
    every guide uses, with log q from g's log-Jacobian, log q(g(ε)) = log N(ε; 0, I) − log abs(det ∂g/∂ε).
    Covers the library's guides: a diagonal Gaussian, a full-rank Gaussian, and a flow on top of one
    (a ``TransformedDistribution``, such as the IAF guide), whose transforms run forward only."""
    standard = Normal(0.0, 1.0)
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1:
        loc, scale = q.base_dist.loc, q.base_dist.scale

        def diagonal(eps):
            return loc + scale * eps, (standard.log_prob(eps) - scale.log()).sum(-1)

        return diagonal
    if isinstance(q, MultivariateNormal):
        loc, tril = q.loc, q.scale_tril

        def full_rank(eps):
            z = loc + (tril @ eps.unsqueeze(-1)).squeeze(-1)
            return z, standard.log_prob(eps).sum(-1) - tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)

        return full_rank
    if isinstance(q, TransformedDistribution):
        base = noise_map(q.base_dist)

        def flow(eps):
            z, log_q = base(eps)
            for transform in q.transforms:
                y = transform(z)
                log_q = log_q - _sum_event(transform.log_abs_det_jacobian(z, y), transform, z)
                z = y
            return z, log_q

        return flow
    raise InputError(f"AIS runs in the guide's noise space and knows diagonal and full-rank Gaussians and flows "
                     f"on them; this guide gives a {type(q).__name__}")


def noise_inverse(q: Distribution) -> Callable[[torch.Tensor], torch.Tensor]:
    """The inverse of :func:`noise_map`: z ↦ ε with g(ε) = z. Only the reverse chains of BDMC need it
    (to start at an exact posterior sample); a flow's transforms are inverted with their own
    ``inv``, which for an autoregressive flow takes one pass per latent dimension."""
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1:
        return lambda z: (z - q.base_dist.loc) / q.base_dist.scale
    if isinstance(q, MultivariateNormal):
        return lambda z: torch.linalg.solve_triangular(q.scale_tril, (z - q.loc).unsqueeze(-1), upper=False).squeeze(-1)
    if isinstance(q, TransformedDistribution):
        base = noise_inverse(q.base_dist)

        def flow(z):
            for transform in reversed(q.transforms):
                z = transform.inv(z)
            return base(z)

        return flow
    raise InputError(f"no inverse noise map for a {type(q).__name__} guide")


def _sum_event(log_det: torch.Tensor, transform, z: torch.Tensor) -> torch.Tensor:
    """A transform's log abs(det J) summed to one number per z (elementwise transforms return it per entry)."""
    return log_det.sum(-1) if log_det.dim() == z.dim() else log_det


def log_joint(vae: VAE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(x, z) from the Pyro model's trace, for z of shape (chains, images, z_dim): the model
    stays the single source of the math."""
    with pyro.plate("particles", z.shape[0], dim=-2):
        trace = poutine.trace(poutine.condition(vae.model, data={"z": z})).get_trace(x)
    trace = prune_subsample_sites(trace)
    trace.compute_log_prob()
    return sum(site["log_prob"] for site in trace.nodes.values() if site["type"] == "sample")


@contextlib.contextmanager
def frozen(vae: VAE) -> Iterator[None]:
    """The model's parameters without gradients while the block runs (AIS differentiates z only)."""
    flags = [(p, p.requires_grad) for p in vae.parameters()]
    try:
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


@dataclasses.dataclass
class AIS:
    """Per-image AIS estimates: ``log_likelihood`` (log-mean-exp over chains, a stochastic lower
    bound of log p(x)), its ``stderr``, the mean HMC ``acceptance``, and the chains' ``log_weights``
    (chains, images); all on the CPU."""

    log_likelihood: torch.Tensor
    stderr: torch.Tensor
    acceptance: torch.Tensor
    log_weights: torch.Tensor
    num_steps: int
    num_chains: int


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


def ais(vae: VAE, x: torch.Tensor, num_steps: int = 500, num_chains: int = 16, *, batch_size: int = 100,
        schedule: str = "sigmoid", leapfrog_steps: int = 5, step_size: float = 0.1, target_acceptance: float = 0.65,
        progress: bool = False) -> AIS:
    """log p(x) per image by AIS from q(z|x) to p(z|x) (see the module's description): ``num_chains``
    chains of ``num_steps`` HMC transitions per image, ``batch_size`` images at a time.

    Cost: num_steps × leapfrog_steps evaluations of log p(x, z) and its gradient for
    num_chains × images latent vectors; memory is bounded by ``batch_size``.
    """
    if not isinstance(vae, VAE):
        raise InputError(f"ais needs a pyro_vae.VAE (e.g. pyro_vae.load(path)), got {type(vae).__name__}")
    vae.check_images(x, "x")
    _check_counts(num_steps=num_steps, num_chains=num_chains, batch_size=batch_size, leapfrog_steps=leapfrog_steps)
    results = []
    batches = range(0, len(x), batch_size)
    for start in _progress(batches, progress and len(batches) > 1, "AIS batches"):
        results.append(_ais_batch(vae, x[start:start + batch_size], num_steps, num_chains, schedule=schedule,
                                  leapfrog_steps=leapfrog_steps, step_size=step_size,
                                  target_acceptance=target_acceptance, progress=progress))
    return AIS(torch.cat([r.log_normalizer() for r in results]).cpu(), torch.cat([r.stderr() for r in results]).cpu(),
               torch.cat([r.acceptance for r in results]).cpu(), torch.cat([r.log_weights for r in results], 1).cpu(),
               num_steps, num_chains)


class _GivenNoise:
    """The noise source of :class:`~pyro_vae.noise.GuideNoise` for AIS: the slice of one ε vector that
    belongs to each latent site (stream = the site's index in ``vae.latent_sites``)."""

    key = ()  # not None: GuideNoise draws every site from here

    def __init__(self, eps: torch.Tensor, sizes: list[int]):
        self.parts = eps.split(sizes, dim=-1)

    def eps(self, batch_shape, event_shape, device, dtype, stream: int = 0) -> torch.Tensor:
        return self.parts[stream]


def site_sizes(vae: VAE, x: torch.Tensor) -> list[int]:
    """The event size of each latent site of ``vae`` (``vae.latent_sites``), from one guide trace
    (in a forked random-number stream: nothing outside moves)."""
    with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        trace = poutine.trace(vae.guide).get_trace(x[:1])
    return [trace.nodes[name]["fn"].event_shape[-1] for name in vae.latent_sites]


def layered_traces(vae: VAE, x: torch.Tensor, eps: torch.Tensor, sizes: list[int]):
    """The guide run with its latent sites z_l = g_l(ε_l, z_{l−1}, x) from the slices ε_l of ``eps``
    ``(chains, images, Σ d_l)`` and the model replayed on them: the traces (model, guide), log
    densities computed."""
    from .noise import GuideNoise

    with pyro.plate("particles", eps.shape[0], dim=-2), GuideNoise(_GivenNoise(eps, sizes), vae.latent_sites):
        guide_trace = poutine.trace(vae.guide).get_trace(x)
    with pyro.plate("particles", eps.shape[0], dim=-2):
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    guide_trace, model_trace = prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    return model_trace, guide_trace


def vae_target(vae: VAE, x: torch.Tensor, num_chains: int) -> tuple[Distribution, Callable]:
    """π₀ = N(0, I) over (chains, images, z_dim) and log r(ε) = log p(x, g(ε)) − log q(g(ε)|x).

    For a model with several latent sites (:mod:`pyro_vae.hierarchical`) ε is the concatenation of
    every site's noise, (ε_1, .., ε_L), z_l = g_l(ε_l, z_{l−1}, x) the guide's chain, and log r(ε) =
    log p(x, z_1..z_L) − log q(z_1..z_L|x) (:func:`~pyro_vae.objectives.traces.trace_log_weights`):
    HMC moves all layers' noise at once."""
    if len(vae.latent_sites) > 1:
        from .objectives.traces import trace_log_weights

        sizes = site_sizes(vae, x)
        zeros = torch.zeros(num_chains, len(x), sum(sizes), dtype=x.dtype, device=x.device)

        def layered_log_ratio(eps):
            return trace_log_weights(*layered_traces(vae, x, eps, sizes))

        return Independent(Normal(zeros, torch.ones_like(zeros)), 1), layered_log_ratio
    with torch.no_grad():
        q = vae.encode(x)
    reparameterize = noise_map(q)
    z_dim = q.event_shape[-1]
    zeros = torch.zeros(num_chains, len(x), z_dim, dtype=x.dtype, device=x.device)
    initial = Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def log_ratio(eps):
        z, log_q = reparameterize(eps)
        return log_joint(vae, x, z) - log_q

    return initial, log_ratio


def _ais_batch(vae: VAE, x: torch.Tensor, num_steps: int, num_chains: int, **options) -> AnnealResult:
    was_training = vae.training
    vae.eval()
    try:
        with frozen(vae), pyro.validation_enabled(False):
            initial, log_ratio = vae_target(vae, x, num_chains)
            return anneal(initial, log_ratio, num_steps, **options)
    finally:
        vae.train(was_training)
