"""Evaluation: chunking changes nothing, the summary is honest, PSIS k̂ is per image."""

import math

import pyro
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
