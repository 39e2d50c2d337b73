"""KL(q(z|x) ‖ p(z)) in closed form: the pairs torch and Pyro lack, and which pairs have one.

``TraceMeanField_ELBO`` (the ``mean_field`` objective) asks ``torch.distributions.kl_divergence``
for the KL term of each latent site and, where no closed form is registered for the pair
(``NotImplementedError``), uses the Monte Carlo estimate log q(z|x) − log p(z) at the sampled z
instead, exactly as ``Trace_ELBO`` does. Registering a closed form here therefore changes what
``mean_field`` computes (a lower-variance estimate of the same ELBO), never what it estimates.
"""

from __future__ import annotations

import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence, register_kl


@register_kl(MultivariateNormal, Independent)
def kl_mvn_diagonal_normal(q: MultivariateNormal, p: Independent) -> torch.Tensor:
    """KL(N(m, LLᵀ) ‖ N(μ, diag σ²)), the full-rank guide against a diagonal Gaussian prior
    (standard or learned), for q with scale_tril L (lower triangular, positive diagonal):

        KL = ½ [ Σ_ij L_ij² / σ_i² + Σ_i (μ_i − m_i)² / σ_i² − d + Σ_i log σ_i² − 2 Σ_i log L_ii ],

    the Gaussian KL ½[tr(Σ_p⁻¹ Σ_q) + (μ_p − μ_q)ᵀ Σ_p⁻¹ (μ_p − μ_q) − d + log det Σ_p − log det Σ_q]
    with Σ_q = LLᵀ, Σ_p = diag σ². Not registered by torch 2.13 or Pyro 1.9 (``kl_divergence``
    raised ``NotImplementedError``). Raises ``NotImplementedError`` unless p is ``Normal`` over one
    reinterpreted dimension, so that other ``Independent`` priors still fall back to Monte Carlo.
    """
    if not isinstance(p.base_dist, Normal) or p.reinterpreted_batch_ndims != 1:
        raise NotImplementedError(f"no closed-form KL of MultivariateNormal against {p}")
    variance = p.base_dist.scale.pow(2)
    scale_tril = q.scale_tril
    trace = (scale_tril.pow(2) / variance.unsqueeze(-1)).sum((-2, -1))
    mahalanobis = ((p.base_dist.loc - q.loc).pow(2) / variance).sum(-1)
    log_det_p = variance.log().sum(-1)
    log_det_q = 2 * scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (trace + mahalanobis - q.event_shape[0] + log_det_p - log_det_q)


def has_closed_form_kl(q: torch.distributions.Distribution, p: torch.distributions.Distribution) -> bool:
    """Whether ``kl_divergence(q, p)`` has a closed form, asked the way ``TraceMeanField_ELBO``
    asks it (the prior broadcast to the guide's batch shape by the data plate)."""
    try:
        kl_divergence(q, p.expand(q.batch_shape))
    except NotImplementedError:
        return False
    return True


def describe_kl_term(q: torch.distributions.Distribution, p: torch.distributions.Distribution) -> str:
    """One line for a run's output: how the objectives get KL(q(z|x) ‖ p(z)) for this guide and prior."""
    pair = f"{type(q).__name__} ‖ {type(p).__name__}"
    if has_closed_form_kl(q, p):
        return (f"KL(q(z|x) ‖ p(z)) [{pair}]: closed form (torch.distributions.kl_divergence); "
                "mean_field uses it, elbo estimates it by Monte Carlo")
    return (f"KL(q(z|x) ‖ p(z)) [{pair}]: no closed form; every objective estimates it by Monte Carlo "
            "(mean_field falls back to log q(z|x) − log p(z) at the sampled z, as TraceMeanField_ELBO does)")
