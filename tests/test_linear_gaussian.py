"""The linear-Gaussian VAE (pyro_vae.linear_gaussian), where everything is exact, as the oracle for
the Pyro model and guide: z ~ N(0, I_d), x | z ~ N(Wz + b, σ² I_D), p(x) = N(b, WWᵀ + σ²I), and for
the linear guide N(Ax + c, diag s²) the ELBO and KL(q ‖ p(z|x)) in closed form."""

import math

import pytest
import torch

from pyro_vae import log_weights, make_objective
from pyro_vae.bounds import iwae_bound
from pyro_vae.evaluate import sample_traces
from pyro_vae.linear_gaussian import LinearGaussianVAE
from pyro_vae.objectives.traces import trace_log_weights

D, Z, SIGMA = 5, 2, 0.5


class LinearGaussian(LinearGaussianVAE):
    """The tests' instance: D = 5, d = 2, σ = 0.5, W with orthogonal columns (so the diagonal guide
    can be exact), and three data points ``x`` drawn from p(x)."""

    def __init__(self, exact_guide: bool, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
        super().__init__(q[:, :Z] * torch.tensor([2.0, 0.7], dtype=torch.float64),
                         torch.randn(D, generator=g, dtype=torch.float64), SIGMA)
        if not exact_guide:  # a guide that is off: shifted, rotated, too wide on one axis
            A, c, s = self.exact_guide()
            self.set_guide(A + 0.05 * torch.randn(Z, D, generator=g, dtype=torch.float64), c + 0.2,
                           s * torch.tensor([1.5, 0.7], dtype=torch.float64))
        self.x = self.marginal().sample((3,))


def test_elbo_identity_holds_in_closed_form():
    """log p(x) − KL(q ‖ p(z|x)) = E_q[log p(x|z)] − KL(q ‖ p(z))."""
    lg = LinearGaussian(exact_guide=False)
    torch.testing.assert_close(lg.log_px(lg.x) - lg.kl_to_posterior(lg.x), lg.elbo(lg.x), rtol=0, atol=1e-10)
    assert (lg.kl_to_posterior(lg.x) > 0.1).all()  # the guide really is off


def test_exact_guide_makes_every_importance_weight_equal_p_x():
    lg = LinearGaussian(exact_guide=True)
    log_w = log_weights(lg.vae, lg.x, num_samples=50)
    torch.testing.assert_close(log_w, lg.log_px(lg.x).expand(50, -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(lg.kl_to_posterior(lg.x), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-6)


def test_monte_carlo_elbo_matches_closed_form_and_lies_below_log_px():
    lg = LinearGaussian(exact_guide=False)
    n = 20_000
    log_w = log_weights(lg.vae, lg.x, num_samples=n)
    estimate, stderr = log_w.mean(0), log_w.std(0) / math.sqrt(n)
    assert ((estimate - lg.elbo(lg.x)).abs() < 4 * stderr).all()
    # the gap is the KL to the posterior, measured, within the same error
    assert ((lg.log_px(lg.x) - estimate - lg.kl_to_posterior(lg.x)).abs() < 4 * stderr).all()
    assert (estimate + 4 * stderr < lg.log_px(lg.x)).all()


def test_importance_sampled_log_likelihood_converges_to_log_px():
    lg = LinearGaussian(exact_guide=False)
    n = 50_000
    log_w = log_weights(lg.vae, lg.x, num_samples=n)
    estimate = iwae_bound(log_w)
    # Delta method: L_K = log mean(w) has standard error ≈ sd(w)/(√K · mean(w)).
    w = (log_w - estimate).exp()
    stderr = w.std(0) / math.sqrt(n)
    assert ((estimate - lg.log_px(lg.x)).abs() < 5 * stderr).all()
    gap = lg.log_px(lg.x) - lg.elbo(lg.x)
    assert ((estimate - lg.log_px(lg.x)).abs() < 0.05 * gap).all()


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
    assert (means[-1] < lg.log_px(lg.x) + 3 * errors[-1]).all()


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
    assert abs(-loss - lg.elbo(lg.x).sum().item()) < 4 * stderr.item()
