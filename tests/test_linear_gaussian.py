"""A linear-Gaussian VAE, where everything is exact, as the oracle for the Pyro model and guide.

Model: z ~ N(0, I_d), x | z ~ N(Wz + b, σ² I_D), so p(x) = N(x; b, WWᵀ + σ²I) exactly and the
posterior is p(z|x) = N(m, S) with S = (I + WᵀW/σ²)⁻¹, m = S Wᵀ(x − b)/σ².
Guide: q(z|x) = N(Ax + c, diag s²), a linear encoder. For it, in closed form,
    E_q[log p(x|z)] = −(‖x − Wμ − b‖² + Σ_j s_j² ‖W_j‖²)/(2σ²) − (D/2) log 2πσ²,
    ELBO = E_q[log p(x|z)] − KL(q ‖ p(z)),   and   log p(x) − ELBO = KL(q ‖ p(z|x)).
"""

import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

from pyro_vae import VAE, log_weights, make_objective
from pyro_vae.bounds import gaussian_kl, iwae_bound
from pyro_vae.evaluate import sample_traces
from pyro_vae.guides import DiagonalNormalGuide
from pyro_vae.likelihoods import GaussianLikelihood
from pyro_vae.objectives.traces import trace_log_weights
from pyro_vae.priors import StandardNormalPrior

D, Z, SIGMA = 5, 2, 0.5


class LinearGaussian:
    def __init__(self, exact_guide: bool, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        # Orthogonal columns make WᵀW, hence the posterior covariance, diagonal: then the
        # diagonal guide can equal the posterior exactly.
        q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
        self.W = q[:, :Z] * torch.tensor([2.0, 0.7], dtype=torch.float64)
        self.b = torch.randn(D, generator=g, dtype=torch.float64)
        self.S = torch.linalg.inv(torch.eye(Z, dtype=torch.float64) + self.W.T @ self.W / SIGMA ** 2)
        A = self.S @ self.W.T / SIGMA ** 2
        c = -A @ self.b
        s = self.S.diagonal().sqrt()
        if not exact_guide:  # a guide that is off: shifted, rotated, too wide on one axis
            A = A + 0.05 * torch.randn(Z, D, generator=g, dtype=torch.float64)
            c = c + 0.2
            s = s * torch.tensor([1.5, 0.7], dtype=torch.float64)
        self.A, self.c, self.s = A, c, s
        encoder, decoder = nn.Linear(D, 2 * Z).double(), nn.Linear(Z, D).double()
        with torch.no_grad():
            encoder.weight.copy_(torch.cat([A, torch.zeros(Z, D, dtype=torch.float64)]))
            encoder.bias.copy_(torch.cat([c, s.expm1().log()]))  # softplus⁻¹(s)
            decoder.weight.copy_(self.W)
            decoder.bias.copy_(self.b)
        self.vae = VAE(prior=StandardNormalPrior(Z).double(), guide=DiagonalNormalGuide(Z, min_scale=0.0),
                       likelihood=GaussianLikelihood((D,), SIGMA, False, 0.0).double(),
                       encoder=encoder, decoder=decoder)
        self.x = MultivariateNormal(self.b, self.W @ self.W.T + SIGMA ** 2 * torch.eye(D, dtype=torch.float64)
                                    ).sample((3,))

    def log_px(self):
        cov = self.W @ self.W.T + SIGMA ** 2 * torch.eye(D, dtype=torch.float64)
        return MultivariateNormal(self.b, cov).log_prob(self.x)

    def guide_params(self):
        return self.x @ self.A.T + self.c, self.s.expand(self.x.shape[0], Z)

    def exact_elbo(self):
        mu, s = self.guide_params()
        residual = ((self.x - mu @ self.W.T - self.b) ** 2).sum(-1)
        trace = (s ** 2 * (self.W ** 2).sum(0)).sum(-1)
        expected_ll = -(residual + trace) / (2 * SIGMA ** 2) - D / 2 * math.log(2 * math.pi * SIGMA ** 2)
        return expected_ll - gaussian_kl(mu, s)

    def kl_to_posterior(self):
        mu, s = self.guide_params()
        m = (self.x - self.b) @ (self.S @ self.W.T / SIGMA ** 2).T
        q = MultivariateNormal(mu, torch.diag_embed(s ** 2))
        return kl_divergence(q, MultivariateNormal(m, self.S))


def test_elbo_identity_holds_in_closed_form():
    """log p(x) − KL(q ‖ p(z|x)) = E_q[log p(x|z)] − KL(q ‖ p(z))."""
    lg = LinearGaussian(exact_guide=False)
    torch.testing.assert_close(lg.log_px() - lg.kl_to_posterior(), lg.exact_elbo(), rtol=0, atol=1e-10)
    assert (lg.kl_to_posterior() > 0.1).all()  # the guide really is off


def test_exact_guide_makes_every_importance_weight_equal_p_x():
    lg = LinearGaussian(exact_guide=True)
    log_w = log_weights(lg.vae, lg.x, num_samples=50)
    torch.testing.assert_close(log_w, lg.log_px().expand(50, -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(lg.kl_to_posterior(), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-6)


def test_monte_carlo_elbo_matches_closed_form_and_lies_below_log_px():
    lg = LinearGaussian(exact_guide=False)
    n = 20_000
    log_w = log_weights(lg.vae, lg.x, num_samples=n)
    estimate, stderr = log_w.mean(0), log_w.std(0) / math.sqrt(n)
    assert ((estimate - lg.exact_elbo()).abs() < 4 * stderr).all()
    # the gap is the KL to the posterior, measured, within the same error
    assert ((lg.log_px() - estimate - lg.kl_to_posterior()).abs() < 4 * stderr).all()
    assert (estimate + 4 * stderr < lg.log_px()).all()


def test_importance_sampled_log_likelihood_converges_to_log_px():
    lg = LinearGaussian(exact_guide=False)
    n = 50_000
    log_w = log_weights(lg.vae, lg.x, num_samples=n)
    estimate = iwae_bound(log_w)
    # Delta method: L_K = log mean(w) has standard error ≈ sd(w)/(√K · mean(w)).
    w = (log_w - estimate).exp()
    stderr = w.std(0) / math.sqrt(n)
    assert ((estimate - lg.log_px()).abs() < 5 * stderr).all()
    gap = lg.log_px() - lg.exact_elbo()
    assert ((estimate - lg.log_px()).abs() < 0.05 * gap).all()


def test_bound_rises_with_k_towards_log_px():
    """E[L_1] < E[L_10] < E[L_100] ≤ log p(x), each E[L_K] averaged over disjoint groups of K."""
    lg = LinearGaussian(exact_guide=False)
    n = 100_000
    log_w = log_weights(lg.vae, lg.x, num_samples=n)
    means, errors = [], []
    for k in (1, 10, 100):
        bounds = iwae_bound(log_w.reshape(k, n // k, -1))  # (groups, batch)
        means.append(bounds.mean(0))
        errors.append(bounds.std(0) / math.sqrt(n // k))
    for lower, upper, e1, e2 in zip(means, means[1:], errors, errors[1:]):
        assert (upper - lower > 3 * torch.sqrt(e1 ** 2 + e2 ** 2)).all()
    assert (means[-1] < lg.log_px() + 3 * errors[-1]).all()


@pytest.mark.parametrize("objective", ["elbo", "mean_field"])
def test_pyro_objectives_estimate_the_exact_elbo(objective):
    """Trace_ELBO (sampled KL) and TraceMeanField_ELBO (closed-form KL) agree in expectation:
    both −loss ≈ Σ_batch ELBO(x) within Monte Carlo error."""
    lg = LinearGaussian(exact_guide=False)
    n = 20_000
    loss = make_objective(objective, {"num_particles": n}).loss(lg.vae.model, lg.vae.guide, lg.x)
    # standard error of the particle average, from the per-particle terms of each estimator
    traces = sample_traces(lg.vae, lg.x, n)
    per_particle = trace_log_weights(*traces, closed_form_kl=objective == "mean_field").sum(-1)
    stderr = per_particle.std() / math.sqrt(n)
    assert abs(-loss - lg.exact_elbo().sum().item()) < 4 * stderr.item()
