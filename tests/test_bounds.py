"""The closed forms of the derivation against torch/Pyro and against Monte Carlo."""

import math

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence
from torch.nn import functional as F

from pyro_vae.bounds import elbo_terms, gaussian_kl, gaussian_log_likelihood, iwae_bound
from pyro_vae.likelihoods import BernoulliLikelihood, GaussianLikelihood


def _random_gaussian(batch=4, z_dim=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch, z_dim, generator=generator, dtype=torch.float64)
    scale = torch.rand(batch, z_dim, generator=generator, dtype=torch.float64) * 2 + 0.1
    return loc, scale


def test_gaussian_kl_equals_torch_kl_divergence():
    loc, scale = _random_gaussian()
    q = dist.Normal(loc, scale).to_event(1)
    p = dist.Normal(torch.zeros_like(loc), torch.ones_like(scale)).to_event(1)
    torch.testing.assert_close(gaussian_kl(loc, scale), kl_divergence(q, p), rtol=1e-12, atol=1e-12)


def test_gaussian_kl_equals_monte_carlo_within_standard_error():
    loc, scale = _random_gaussian(batch=3)
    q = dist.Normal(loc, scale).to_event(1)
    p = dist.Normal(torch.zeros_like(loc), torch.ones_like(scale)).to_event(1)
    n = 200_000
    z = q.sample((n,))
    log_ratio = q.log_prob(z) - p.log_prob(z)  # KL = E_q[log q − log p]
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    assert ((estimate - gaussian_kl(loc, scale)).abs() < 4 * stderr).all()


def test_gaussian_kl_is_zero_only_at_the_prior():
    assert gaussian_kl(torch.zeros(5), torch.ones(5)).item() == 0.0
    loc, scale = _random_gaussian()
    assert (gaussian_kl(loc, scale) > 0).all()


@pytest.mark.parametrize("learn_scale", [False, True])
def test_gaussian_likelihood_is_scaled_squared_error(learn_scale):
    x_shape = (1, 4, 4)
    likelihood = GaussianLikelihood(x_shape, scale=0.3, learn_scale=learn_scale, min_scale=0.01).double()
    if learn_scale:  # distinct per-pixel σ
        with torch.no_grad():
            likelihood.x_scale_raw.copy_(torch.linspace(-2, 2, 16).reshape(x_shape))
    x_loc = torch.randn(5, *x_shape, dtype=torch.float64)
    x = torch.randn(5, *x_shape, dtype=torch.float64)
    sigma = likelihood.x_scale
    expected = gaussian_log_likelihood(x, x_loc, sigma, event_dims=3)
    torch.testing.assert_close(likelihood(x_loc).log_prob(x), expected, rtol=1e-12, atol=1e-10)
    if not learn_scale:  # the textbook form with one σ: −‖x − f‖²/2σ² − (D/2) log 2πσ²
        d = 16
        textbook = -((x - x_loc) ** 2).flatten(1).sum(1) / (2 * 0.3 ** 2) - d / 2 * math.log(2 * math.pi * 0.3 ** 2)
        torch.testing.assert_close(expected, textbook, rtol=1e-6, atol=1e-6)


def test_learned_gaussian_scale_has_a_floor():
    likelihood = GaussianLikelihood((1, 2, 2), scale=0.5, learn_scale=True, min_scale=0.02)
    with torch.no_grad():
        likelihood.x_scale_raw.fill_(-1e4)  # what constant border pixels drive it towards
    assert torch.allclose(likelihood.x_scale, torch.full((1, 2, 2), 0.02))
    assert torch.isfinite(likelihood(torch.zeros(1, 1, 2, 2)).log_prob(torch.zeros(1, 1, 2, 2))).all()


def test_bernoulli_likelihood_is_minus_binary_cross_entropy_with_logits():
    x_logits = torch.randn(3, 1, 5, 5, dtype=torch.float64) * 5
    x = torch.bernoulli(torch.full_like(x_logits, 0.4))
    log_prob = BernoulliLikelihood((1, 5, 5))(x_logits).log_prob(x)
    bce = F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").flatten(1).sum(1)
    torch.testing.assert_close(log_prob, -bce)


def test_iwae_bound_of_one_sample_is_the_log_weight_and_of_equal_weights_the_weight():
    log_w = torch.randn(1, 7, dtype=torch.float64)
    torch.testing.assert_close(iwae_bound(log_w), log_w[0])
    constant = torch.full((50, 3), -2.5, dtype=torch.float64)
    torch.testing.assert_close(iwae_bound(constant), torch.full((3,), -2.5, dtype=torch.float64))
    log_w = torch.randn(100, 4, dtype=torch.float64)
    assert (iwae_bound(log_w) >= log_w.mean(0)).all()  # Jensen: log mean exp ≥ mean log


def test_elbo_terms_add_up():
    ll, lp, lq = (torch.randn(10, 3, dtype=torch.float64) for _ in range(3))
    terms = elbo_terms(ll, lp, lq)
    torch.testing.assert_close(terms.elbo, (ll + lp - lq).mean(0))
    torch.testing.assert_close(terms.elbo, terms.expected_log_likelihood - terms.kl)
