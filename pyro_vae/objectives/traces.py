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
is one more ``log_prob`` per guide site, at sg(z). For a flow guide (IAF) that call cannot use the
transform's cache of the forward pass, because sg(z) is a new tensor: it must invert the flow,
which is far slower (measured by the issue's author: 4.0 ms against 0.1 ms).
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
    at_detached = scale_and_mask(site["fn"].log_prob(site["value"].detach()), site["scale"], site["mask"])
    return site["log_prob"] - at_detached + at_detached.detach()


def trace_log_weights(model_trace, guide_trace, num_particles: int, path_only: bool = False) -> torch.Tensor:
    """log w = log p(x, z) − log q(z|x) per particle and image, ``(K, batch)``. (Pyro adds the
    vectorized particle plate only when K > 1; for K = 1 the particle dimension is added here.)"""
    sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
    log_w = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            log_w = log_w + torch_sum(site["log_prob"], sum_dims)
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            log_q = _path_only(site) if path_only else site["log_prob"]
            log_w = log_w - torch_sum(log_q, sum_dims)
    return log_w.unsqueeze(0) if num_particles == 1 else log_w


def is_reparameterized(guide_trace) -> bool:
    """Whether every latent site of the guide was drawn as z = g(ε, x) (``has_rsample``)."""
    return all(site["fn"].has_rsample for site in guide_trace.nodes.values()
               if site["type"] == "sample" and not site["is_observed"])


def trace_elbo(model_trace, guide_trace, closed_form_kl: bool = False) -> torch.Tensor:
    """The ELBO of one (possibly vectorized) pair of traces, summed over every plate, as a tensor:

        Σ_{model sites} log p(·) − Σ_{guide sites} log q(·) = Σ log p(x, z) − log q(z|x)   (Trace_ELBO),

    and with ``closed_form_kl=True``, for each latent site where ``kl_divergence(q, p)`` has a
    closed form, its pair of terms replaced by −KL(q ‖ p) (TraceMeanField_ELBO; elsewhere the
    sampled terms stay). For a reparameterized guide this is both the value and the differentiable
    surrogate of Pyro's estimator. Unlike Pyro's own ``differentiable_loss`` it never reads a value
    back to Python (``.item()``, a NaN check): on a GPU each such read is a host synchronization
    per training step. The training loop checks the loss for NaN once per progress refresh.
    """
    elbo = 0.0
    kl_sites = set()
    if closed_form_kl:
        for name, site in model_trace.nodes.items():
            if site["type"] == "sample" and not site["is_observed"] and name in guide_trace.nodes:
                q_site = guide_trace.nodes[name]
                try:
                    kl = kl_divergence(q_site["fn"], site["fn"])
                except NotImplementedError:
                    continue
                elbo = elbo - scale_and_mask(kl, q_site["scale"], q_site["mask"]).sum()
                kl_sites.add(name)
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for name, site in trace.nodes.items():
            if site["type"] == "sample" and name not in kl_sites:
                elbo = elbo + sign * site["log_prob_sum"]
    return elbo
