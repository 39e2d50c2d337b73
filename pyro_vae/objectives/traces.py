"""Log-weights from a pair of Pyro traces: the quantity every bound here is built from.

For particles z_k ~ q(z|x) (a vectorized particle plate of size K on the left of the data plate):

    log w_k(x) = Σ_{model sites} log p(·) − Σ_{guide sites} log q(·) = log p(x, z_k) − log q(z_k|x),

one number per particle and image, shape ``(K, batch)``. Site scales (``poutine.scale``) apply to
each site's term, as Pyro applies them; the data plate carries no subsample scale here.

``path_only=True`` replaces each guide term log q_φ(z) by a copy with the same value whose gradient
flows only through the sample z = g_φ(ε) and not through q's own parameters (the *score* term
∂_φ log q_φ(z) at fixed z, whose expectation is zero):

    log q_path = log q_φ(z) − log q_φ(sg(z)) + sg(log q_φ(sg(z))),

(sg = stop-gradient). This is how the sticking-the-landing and doubly-reparameterized estimators
drop the score term without a ``.detach()`` on Pyro distributions (pyro-ppl/pyro #2598). The price
is one more ``log_prob`` per guide site, at sg(z). Either way the gradient reaches the parameters
only through z, which is where DReG's backward hook re-weights it.

A guide distribution may instead provide ``path_log_prob(z)`` with the same value and gradient.
The flow guide does (:meth:`pyro_vae.guides.iaf.FlowPosterior.path_log_prob`): for a flow, log q of
its own sample comes from the transforms' cache as a function of the base noise, so its gradient
never passes through z (DReG's hook would miss it, which biased DReG for the IAF guide), and
log q_φ(sg(z)) at a new tensor would invert the flow, z_dim sequential network passes.
"""

from __future__ import annotations

import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from torch.distributions import kl_divergence


def check_reparameterized(guide_trace) -> None:
    for site in guide_trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"] and not site["fn"].has_rsample:
            raise NotImplementedError(
                f"guide site {site['name']!r} is not reparameterized; this objective needs "
                "z = g(ε, x) (has_rsample=True)"
            )


def _path_only(site) -> torch.Tensor:
    if hasattr(site["fn"], "path_log_prob"):
        return scale_and_mask(site["fn"].path_log_prob(site["value"]), site["scale"], site["mask"])
    at_detached = scale_and_mask(site["fn"].log_prob(site["value"].detach()), site["scale"], site["mask"])
    return site["log_prob"] - at_detached + at_detached.detach()


def closed_form_kl_terms(model_trace, guide_trace) -> dict:
    """KL(q ‖ p) at each latent site where ``kl_divergence`` has a closed form for the pair, as
    TraceMeanField_ELBO asks it (q the guide's distribution, p the model's, both with the plates'
    batch shape), scaled and masked like the site's log-density. Sites without one are left out."""
    terms = {}
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"] and name in guide_trace.nodes:
            q_site = guide_trace.nodes[name]
            try:
                kl = kl_divergence(q_site["fn"], site["fn"])
            except NotImplementedError:
                continue
            terms[name] = scale_and_mask(kl, q_site["scale"], q_site["mask"])
    return terms


def trace_log_weights(model_trace, guide_trace, path_only: bool = False,
                      closed_form_kl: bool = False) -> torch.Tensor:
    """log w = log p(x, z) − log q(z|x) per particle and image, ``(K, batch)``, from traces whose
    log-densities are computed. Particles come first: Pyro's ELBOs add their vectorized particle
    plate only when K > 1, so a trace without a particle dimension gets one here. This is the one
    place the library computes log w; training objectives and evaluation both call it.

    With ``closed_form_kl``, each latent site whose KL has a closed form
    (:func:`closed_form_kl_terms`) contributes −KL(q ‖ p) in place of log p(z) − log q(z): the
    per-image terms log p(x|z) − KL(q(z|x) ‖ p(z)) of TraceMeanField_ELBO. These are no longer
    importance log-weights; their mean over particles is the ELBO, with its KL term exact.
    """
    sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
    kl_terms = closed_form_kl_terms(model_trace, guide_trace) if closed_form_kl else {}
    log_w = None  # summed in order, without a leading 0 + (one tensor operation fewer)
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample":
            term = torch_sum(-kl_terms[name] if name in kl_terms else site["log_prob"], sum_dims)
            log_w = term if log_w is None else log_w + term
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and name not in kl_terms:
            term = torch_sum(_path_only(site) if path_only else site["log_prob"], sum_dims)
            log_w = -term if log_w is None else log_w - term
    return log_w if log_w.dim() >= 2 else log_w.unsqueeze(0)


def is_reparameterized(guide_trace) -> bool:
    """Whether every latent site of the guide was drawn as z = g(ε, x) (``has_rsample``)."""
    return all(site["fn"].has_rsample for site in guide_trace.nodes.values()
               if site["type"] == "sample" and not site["is_observed"])
