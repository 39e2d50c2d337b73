"""Evaluation: chunking changes nothing, the summary is honest, PSIS k̂ is per image."""

import importlib
import math

import pytest
import torch

from pyro_vae import build_vae, evaluate, make_config
from pyro_vae.evaluate import log_weights, psis_khat


def small_vae():
    return build_vae(make_config((1, 6, 6), 3, options={"net": {"hidden_dims": [16]}}))


def test_chunking_over_particles_changes_only_memory_not_the_estimate():
    """Chunks of 7 particles give fresh, independent draws (no chunk repeats another) whose
    log-weights have the same distribution as one draw of all K: the means agree within error."""
    vae = small_vae()
    x = torch.bernoulli(torch.full((4, 1, 6, 6), 0.3))
    k = 4000
    whole = log_weights(vae, x, k)
    chunked = log_weights(vae, x, k, chunk_size=7)
    assert whole.shape == chunked.shape == (k, 4)
    assert not torch.equal(chunked[:7], chunked[7:14])
    stderr = torch.sqrt(whole.var(0) / k + chunked.var(0) / k)
    assert ((whole.mean(0) - chunked.mean(0)).abs() < 4 * stderr).all()


@pytest.mark.parametrize("prior,guide,extra", [("standard_normal", "diagonal_normal", 0), ("vamp", "diagonal_normal", 2 * 50),
                                               ("vamp", "full_rank", 50 + 2 * 32 * 3), ("mixture", "diagonal_normal", 2 * 50)])
def test_evaluation_chunks_count_the_priors_components(prior, guide, extra, monkeypatch):
    """A chunk holds MAX_ROWS decoder rows' worth of numbers: a mixture prior whose log-density holds
    ``extra`` numbers per row (2K for diagonal components, K + 2 · 32 · z_dim for full-rank ones scored
    32 at a time, K = 50)
    shrinks it by 1 + extra / pixels, and log_weights draws its particles in chunks of that size."""
    module = importlib.import_module("pyro_vae.evaluate")  # the package attribute is the function

    options = {"num_components": 50} if prior in ("vamp", "mixture") else {}
    vae = build_vae(make_config((1, 6, 6), 3, prior=prior, guide=guide,
                                options={"prior": options, "net": {"hidden_dims": [16]}}))
    rows = module.chunk_rows(vae, torch.device("cpu"))
    assert rows == int(module.MAX_ROWS["cpu"] / (1 + extra / 36))
    sizes = []
    original = module.sample_traces
    monkeypatch.setattr(module, "sample_traces", lambda v, x, k: sizes.append(k) or original(v, x, k))
    x = torch.bernoulli(torch.full((4, 1, 6, 6), 0.3))
    assert log_weights(vae, x, 2 * rows).shape == (2 * rows, 4)
    assert max(sizes) == rows // 4 and sum(sizes) == 2 * rows


def test_memory_estimate_counts_the_mixture_priors_components():
    from pyro_vae import RunConfig
    from pyro_vae.resources import estimate_memory

    def estimate(prior, components):
        config = RunConfig(prior=prior, prior_options={"num_components": components} if components else {})
        return estimate_memory(config, config.model_config((1, 28, 28)), 1000, 1000, 100, train=True)

    small, large, standard = estimate("vamp", 10), estimate("vamp", 1010), estimate("standard_normal", 0)
    rows = 128  # the default batch, one particle
    assert large.training_step - small.training_step == rows * 1000 * 8 * 2
    assert large.evaluation - small.evaluation == 100 * 1000 * 8
    assert standard.training_step == rows * 784 * 4 * 2


def test_evaluation_summary():
    vae = small_vae()
    x = torch.bernoulli(torch.full((30, 1, 6, 6), 0.3))
    result = evaluate(vae, x, num_samples=200, batch_size=7, psis=True)
    assert result.elbo.shape == result.log_likelihood.shape == result.khat.shape == (30,)
    assert (result.log_likelihood >= result.elbo).all()  # log-mean-exp ≥ mean of the same weights
    summary = result.summary()
    assert summary["num_images"] == 30 and summary["num_samples"] == 200
    expected_se = result.elbo.std().item() / math.sqrt(30)
    assert math.isclose(summary["elbo_stderr"], expected_se, rel_tol=1e-6)


def test_psis_khat_is_per_image_and_flags_heavy_tails():
    generator = torch.Generator().manual_seed(0)
    k = 2000
    light = 0.1 * torch.randn(k, 3, generator=generator, dtype=torch.float64)  # nearly equal weights
    # log w = log of Pareto(α = 0.5) draws: shape k = 1/α = 2, far past the 0.7 threshold
    heavy = -torch.rand(k, 2, generator=generator, dtype=torch.float64).log() / 0.5
    khat = psis_khat(torch.cat([light, heavy], dim=1))
    assert khat.shape == (5,)  # one per image, not one per particle
    assert (khat[:3] < 0.5).all() and (khat[3:] > 0.7).all()


def test_iwae_bounds_from_one_set_of_samples():
    from pyro_vae.bounds import iwae_bound, iwae_bounds

    log_w = torch.randn(100, 3, dtype=torch.float64)
    bounds = iwae_bounds(log_w, [1, 10, 100])
    torch.testing.assert_close(bounds[1], log_w.mean(0))  # K = 1: the ELBO estimate
    torch.testing.assert_close(bounds[100], iwae_bound(log_w))  # K = all samples: one L_K
    torch.testing.assert_close(bounds[10], torch.stack([iwae_bound(g) for g in log_w.split(10)]).mean(0))


def _psis_proposal(scale_factor):
    """Exact-posterior mean with the posterior scale times ``scale_factor``, on the linear-Gaussian model."""
    from .test_linear_gaussian import LinearGaussian

    lg = LinearGaussian(exact_guide=True)
    with torch.no_grad():
        bias = lg.vae.encoder.bias
        bias[2:] = (lg.s * scale_factor).expm1().log()  # softplus⁻¹ of the new scale
    return lg


@pytest.mark.parametrize("scale_factor", [0.5, 0.3])
def test_psis_khat_estimates_the_exact_tail_index_of_a_too_narrow_proposal(scale_factor):
    """A proposal N(μ, (r·s)²) against the exact posterior N(μ, s²) of the 2-D latent: with
    ε = (z − μ)/(r·s), log w = (1 − r²)/2 · Σ_j ε_j² + const = (1 − r²)/2 · χ²₂ + const, and χ²₂/2 is
    exponential, so w is exactly Pareto with tail index k = 1 − r² (0.75 and 0.91, beyond the
    0.7 at which PSIS declares IS unreliable). The mean k̂ over 30 independent rows × 5000 draws lies within 4 standard errors of k,
    plus 0.02 for the estimator's weak prior towards 0.5 (about 220 tail draws)."""
    proposal = _psis_proposal(scale_factor)
    khat = psis_khat(log_weights(proposal.vae, proposal.x.repeat(10, 1), 5000))
    k = 1 - scale_factor ** 2
    standard_error = khat.std() / len(khat) ** 0.5
    assert abs(khat.mean() - k) < 4 * standard_error + 0.02, (khat.mean(), k, standard_error)


def test_psis_passes_an_over_dispersed_proposal():
    """Scale 1.2 × the posterior's: log w = (1 − 1.44)/2 · χ²₂ + const is bounded above, so the
    weights have no heavy tail, and every k̂ is below 0.5. (The exact posterior gives constant
    weights, for which k̂ is undefined.)"""
    proposal = _psis_proposal(1.2)
    khat = psis_khat(log_weights(proposal.vae, proposal.x.repeat(10, 1), 5000))
    assert (khat < 0.5).all(), khat


def test_active_units_and_kl_per_dimension():
    from pyro_vae.bounds import gaussian_kl
    from pyro_vae.evaluate import active_units, kl_per_dimension

    from .test_linear_gaussian import LinearGaussian

    lg = LinearGaussian(exact_guide=False)
    x = torch.randn(500, 5, dtype=torch.float64) * 2 + lg.b
    count, activity = active_units(lg.vae, x)
    assert count == 2 and activity.shape == (2,)
    with torch.no_grad():
        lg.vae.encoder.weight[1] = 0.0  # z_1's posterior mean no longer depends on x
    count, activity = active_units(lg.vae, x)
    assert count == 1 and activity[1] < 1e-20
    q = lg.vae.encode(x)
    per_dim = kl_per_dimension(lg.vae, x)
    torch.testing.assert_close(per_dim.sum(), gaussian_kl(q.base_dist.loc, q.base_dist.scale).mean())
