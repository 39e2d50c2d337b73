"""Every registered prior is a normalized density on R^z_dim whose samples follow it; the VampPrior
is the average of the guide's densities at its pseudo-inputs.

The priors are taken a little away from their initialization (every parameter of the VAE moved by
N(0, 0.05²) noise, the encoder included, which the VampPrior is built from), so that a learned
prior is not tested only where it equals N(0, I).
"""

import functools
import math

import pyro.distributions as dist
import pytest
import torch

from pyro_vae import GUIDES, PRIORS, ConfigError, build_vae, make_config

X_SHAPE = (1, 6, 6)
BOX, N_FINE = 8.0, 800  # the integration grid: [-8, 8]², 800 midpoints per axis (spacing 0.02)
N_SAMPLES = 100_000

#: each registered prior with its defaults (the VampPrior with 5 pseudo-inputs), and the flow prior's
#: other layer type
PRIOR_CASES = [(name, {"num_components": 5} if name == "vamp" else {}) for name in PRIORS.names()]
PRIOR_CASES.append(("flow", {"layer": "spline"}))
CASE_IDS = [name + "".join(f"-{v}" for v in options.values()) for name, options in PRIOR_CASES]


def perturbed_vae(prior, prior_options, guide="diagonal_normal", z_dim=2, seed=0):
    torch.manual_seed(seed)
    config = make_config(X_SHAPE, z_dim, prior=prior, guide=guide,
                         options={"prior": prior_options, "net": {"hidden_dims": [16]}})
    vae = build_vae(config)
    with torch.no_grad():
        for parameter in vae.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return vae


@functools.cache
def integrated(prior, options_items):
    """(fine, coarse) grid moments of the perturbed prior, computed once per case."""
    p = perturbed_vae(prior, dict(options_items)).prior()
    return grid_moments(p, N_FINE), grid_moments(p, N_FINE // 2)


def grid_moments(p, n):
    """Midpoint-rule integrals over the box, n points per axis (float64 sums): the total mass
    ∫ p(z) dz, and the mean and variance of the density normalized by that mass."""
    h = 2 * BOX / n
    t = -BOX + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    z = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = p.log_prob(z.float()).double().exp() * h * h
    total = mass.sum()
    mean = (mass[:, None] * z).sum(0) / total
    return total, mean, (mass[:, None] * (z - mean) ** 2).sum(0) / total


@pytest.mark.parametrize("prior,options", PRIOR_CASES, ids=CASE_IDS)
def test_prior_is_a_distribution_over_one_latent_vector(prior, options):
    p = perturbed_vae(prior, options, z_dim=4).prior()
    assert p.batch_shape == () and p.event_shape == (4,)
    with torch.no_grad():
        z = p.sample((7,))
        assert z.shape == (7, 4)
        assert p.log_prob(z).shape == (7,)
        # broadcast by the data plate and a particle plate, as in the model
        assert p.expand((3, 5)).log_prob(torch.randn(3, 5, 4)).shape == (3, 5)


@pytest.mark.parametrize("prior,options", PRIOR_CASES, ids=CASE_IDS)
def test_prior_density_integrates_to_one(prior, options):
    """∫ p(z) dz = 1 over a grid for z_dim = 2.

    Tolerance: the midpoint rule's error at spacing h is estimated by how much the integral changes
    when h halves (the error of a smooth integrand shrinks at least 4× per halving, so the change
    bounds it); 3× that change plus 10⁻⁵ for float32 densities and the tail outside the box, which
    holds none of 20,000 draws (asserted). A missing Jacobian term or normalizer moves the integral
    by far more than that, at every spacing.
    """
    p = perturbed_vae(prior, options).prior()
    with torch.no_grad():
        assert (p.sample((20_000,)).abs() < BOX).all()
    (fine, _, _), (coarse, _, _) = integrated(prior, tuple(options.items()))
    discretization = abs(fine - coarse).item()
    assert discretization < 5e-3, "the grid does not resolve the density"
    assert abs(fine.item() - 1.0) < 3 * discretization + 1e-5


@pytest.mark.parametrize("prior,options", PRIOR_CASES, ids=CASE_IDS)
def test_prior_samples_follow_its_density(prior, options):
    """Sample mean and variance of 100,000 draws against the moments of the prior's own density:
    its ``mean``/``variance`` where it has them in closed form (Gaussians and mixtures), and moments
    integrated from its ``log_prob`` over the grid always (a flow has no closed-form mean). Tolerance:
    4 Monte Carlo standard errors (sd/√N for the mean, √((m₄ − σ⁴)/N) for the variance) plus 3× the
    grid's discretization estimate for the integrated moments."""
    p = perturbed_vae(prior, options).prior()
    with torch.no_grad():
        z = p.sample((N_SAMPLES,)).double()
    mean, variance = z.mean(0), z.var(0)
    mean_se = (variance / N_SAMPLES).sqrt()
    variance_se = (((z - mean) ** 4).mean(0) - variance ** 2).clamp(min=0).div(N_SAMPLES).sqrt()

    (_, grid_mean, grid_variance), (_, coarse_mean, coarse_variance) = integrated(prior, tuple(options.items()))
    torch.testing.assert_close(mean, grid_mean, rtol=0,
                               atol=(4 * mean_se + 3 * (grid_mean - coarse_mean).abs()).max().item())
    torch.testing.assert_close(variance, grid_variance, rtol=0,
                               atol=(4 * variance_se + 3 * (grid_variance - coarse_variance).abs()).max().item())
    try:
        closed_mean, closed_variance = p.mean.double(), p.variance.double()
    except NotImplementedError:
        assert prior == "flow"  # only the flow lacks closed-form moments
        return
    torch.testing.assert_close(mean, closed_mean, rtol=0, atol=(4 * mean_se).max().item())
    torch.testing.assert_close(variance, closed_variance, rtol=0, atol=(4 * variance_se).max().item())


@pytest.mark.parametrize("guide", ["diagonal_normal", "full_rank"])
def test_vamp_prior_is_the_average_of_the_guide_at_its_pseudo_inputs(guide):
    """log p(z) = log (1/K) Σ_k q(z | u_k), with each q(z | u_k) computed on its own, one pseudo-input
    at a time, from the same encoder and guide as the data's posterior."""
    vae = perturbed_vae("vamp", {"num_components": 4}, guide=guide, z_dim=3)
    prior, encoder, guide_net = vae.prior, vae.encoder, vae.guide_net
    with torch.no_grad():
        z = vae.encode(torch.rand(6, *X_SHAPE)).sample()
        per_component = torch.stack([guide_net(encoder(u[None])).log_prob(z) for u in prior.pseudo_inputs])
        expected = torch.logsumexp(per_component, 0) - math.log(4)
        torch.testing.assert_close(prior().log_prob(z), expected, rtol=1e-5, atol=1e-5)
    assert per_component.shape == (4, 6)
    assert (per_component.std(0) > 1e-3).all()  # the components differ: the test can tell them apart


def test_vamp_prior_shares_the_encoder_instead_of_copying_it():
    vae = perturbed_vae("vamp", {"num_components": 3})
    prior_names = {name for name, _ in vae.prior.named_parameters()}
    assert prior_names == {"pseudo_inputs_raw"}  # the encoder's parameters have one name: encoder.*
    before = vae.prior().log_prob(torch.zeros(2)).item()
    with torch.no_grad():
        next(vae.encoder.parameters()).add_(1.0)
    assert vae.prior().log_prob(torch.zeros(2)).item() != before  # p(z) moves with the encoder


def test_vamp_prior_rejects_a_guide_without_one_distribution_per_pseudo_input():
    from pyro_vae.priors import VampPrior

    class Unbatched(torch.nn.Module):
        def forward(self, encoded):
            return dist.Normal(torch.zeros(2), 1.0).to_event(1)

    with pytest.raises(ValueError, match="one distribution per pseudo-input"):
        VampPrior(2, X_SHAPE, torch.nn.Flatten(), Unbatched(), num_components=3)


def test_vamp_prior_refuses_the_iaf_guide_naming_the_pair_and_what_to_use():
    with pytest.raises(ConfigError) as error:
        perturbed_vae("vamp", {"num_components": 3}, guide="iaf")
    assert error.value.field == "guide"
    assert "prior=vamp with guide=iaf is not supported" in str(error.value)
    assert "mixture of K flows" in str(error.value)
    assert "use prior=vamp with guide=diagonal_normal or full_rank" in str(error.value)
    assert GUIDES.names() == ["diagonal_normal", "full_rank", "iaf"]  # a new guide: decide whether vamp takes it

