"""The equations of the derivation as plain tensor code.

These functions are what evaluation uses and what the tests use as oracles; Pyro's objectives
must agree with them. Notation: for one image x and S draws z_s ~ q(z|x), the log-weights are
``log_w[s] = log p(x|z_s) + log p(z_s) − log q(z_s|x)`` (samples on dimension 0).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


def gaussian_kl(z_loc: torch.Tensor, z_scale: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ_j (σ_j² + μ_j² − 1 − log σ_j²)
    (Kingma & Welling, arXiv:1312.6114, Appendix B), summed over the last dimension."""
    variance = z_scale.pow(2)
    return 0.5 * (variance + z_loc.pow(2) - 1.0 - variance.log()).sum(-1)


def gaussian_log_likelihood(x: torch.Tensor, x_loc: torch.Tensor, x_scale: torch.Tensor,
                            event_dims: int) -> torch.Tensor:
    """log N(x; f(z), σ²I) = −‖x − f(z)‖² / (2σ²) − (D/2) log(2πσ²) for scalar σ, and
    Σ_i [−(x_i − f_i)² / (2σ_i²) − ½ log(2πσ_i²)] per pixel in general; summed over the last
    ``event_dims`` dimensions (one image). The squared error is the only term that depends on z:
    "MSE" is this log-likelihood up to the scale 1/(2σ²) and a constant."""
    x_scale = torch.as_tensor(x_scale, dtype=x_loc.dtype, device=x_loc.device).expand_as(x_loc)
    per_pixel = -(x - x_loc).pow(2) / (2 * x_scale.pow(2)) - 0.5 * torch.log(2 * math.pi * x_scale.pow(2))
    return per_pixel.flatten(-event_dims).sum(-1) if event_dims else per_pixel


class ELBOTerms(NamedTuple):
    """Monte Carlo estimates of the two terms of ELBO = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z))."""

    expected_log_likelihood: torch.Tensor
    kl: torch.Tensor
    elbo: torch.Tensor


def elbo_terms(log_likelihood: torch.Tensor, log_prior: torch.Tensor, log_guide: torch.Tensor) -> ELBOTerms:
    """ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)), averaged over the samples on dimension 0:

    E_q[log p(x|z)] ≈ mean_s log p(x|z_s),   KL ≈ mean_s [log q(z_s|x) − log p(z_s)].
    """
    expected = log_likelihood.mean(0)
    kl = (log_guide - log_prior).mean(0)
    return ELBOTerms(expected, kl, expected - kl)


def log_mean_exp(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/K) Σ_k exp(v_k) over ``dim`` (K its size), computed stably as logsumexp − log K: the
    average of K weights, in log space. Every bound here that averages importance weights uses it."""
    return torch.logsumexp(values, dim=dim) - math.log(values.shape[dim])


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """L_K = log (1/K) Σ_k w_k = logsumexp_k(log w_k) − log K over dimension 0
    (Burda, Grosse & Salakhutdinov, arXiv:1509.00519, eq. 8). With K = 1 it is the one-sample ELBO;
    E[L_1] ≤ E[L_K] ≤ E[L_{K+1}] ≤ log p(x), and L_K → log p(x) as K → ∞. With K = 5000 it is the
    importance-sampled estimate of log p(x) used to report test log-likelihoods."""
    return log_mean_exp(log_w, dim=0)


def iwae_bounds(log_w: torch.Tensor, ks) -> dict:
    """{K: per-image estimate of E[L_K]} from one set of S log-weights per image (``(S, batch)``):
    the S samples are split into ⌊S/K⌋ disjoint groups of K, L_K is computed on each group and the
    groups are averaged. Every K uses the same draws, so the estimates are directly comparable."""
    num_samples = log_w.shape[0]
    bounds = {}
    for k in ks:
        if not 1 <= k <= num_samples:
            raise ValueError(f"K={k} needs 1 <= K <= {num_samples} (the number of samples drawn)")
        groups = num_samples // k
        grouped = log_w[: groups * k].reshape(groups, k, *log_w.shape[1:])
        bounds[k] = log_mean_exp(grouped, dim=1).mean(0)
    return bounds
