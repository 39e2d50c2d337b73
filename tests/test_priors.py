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
from pyro_vae.gaussian_mixture import GaussianMixture

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


# -- the GaussianMixture's log-density by matrix products -------------------------------------------------

def hard_mixture(scale, k=30, d=50, offset=4.0, seed=0):
    """K diagonal Gaussians in D = 50 dimensions, means N(offset, 1) (away from the origin, so the
    expansion's terms are large), scales ``scale`` × e^U(−1/2, 1/2); and values drawn from the
    components themselves (where the expansion cancels most), half of them from the narrowest."""
    g = torch.Generator().manual_seed(seed)
    loc = offset + torch.randn(k, d, generator=g)
    scale_kd = scale * torch.exp(torch.rand(k, d, generator=g) - 0.5)
    logits = torch.randn(k, generator=g)
    index = torch.randint(k, (64,), generator=g)
    index[::2] = scale_kd.prod(-1).argmin()
    z = loc[index] + scale_kd[index] * torch.randn(64, d, generator=g)
    return logits, loc, scale_kd, z


def direct_log_prob_float64(logits, loc, scale, z):
    """log Σ_k π_k N(z; μ_k, σ_k²) by the direct form, in float64."""
    components = dist.Normal(loc.double(), scale.double()).to_event(1).log_prob(z.double().unsqueeze(-2))
    return torch.logsumexp(torch.log_softmax(logits.double(), -1) + components, -1)


def naive_expansion_float32(logits, loc, scale, z):
    """The expansion ‖z − μ_k‖²/σ² = z²·w − 2 z·(μw) + μ²·w in float32, with no centring: what the
    GaussianMixture must not be."""
    w = scale.pow(-2)
    quadratic = (z * z) @ w.T - 2 * z @ (loc * w).T + (loc * loc * w).sum(-1)
    log_components = -0.5 * quadratic - scale.log().sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
    return torch.logsumexp(torch.log_softmax(logits, -1) + log_components, -1)


@pytest.mark.parametrize("offset", [4.0, 30.0])
@pytest.mark.parametrize("scale", [1.0, 0.1, 1e-2, 1e-3, 1e-4])
def test_gaussian_mixture_log_prob_matches_the_direct_form_to_a_thousandth_of_a_nat(scale, offset):
    """Against the direct form in float64, to 10⁻³ nats, down to the guides' floor σ = 10⁻⁴ (the
    float32 inputs are exact in float64, so the difference is the fast form's own error). The cases
    are hard: the naive float32 expansion misses by more than the tolerance on them (asserted for
    σ ≤ 0.1); centring in float32 misses from σ = 0.1, and float64 without centring at σ = 10⁻⁴ with
    the means 30 from the origin (2.7·10⁻³ nats, seen when this test was written)."""
    logits, loc, scale_kd, z = hard_mixture(scale, offset=offset)
    expected = direct_log_prob_float64(logits, loc, scale_kd, z)
    fast = GaussianMixture(logits, loc, scale=scale_kd).log_prob(z)
    assert fast.dtype == torch.float32 and torch.isfinite(fast).all()
    error = (fast.double() - expected).abs().max().item()
    assert error < 1e-3, error
    if scale <= 0.1:
        naive = (naive_expansion_float32(logits, loc, scale_kd, z).double() - expected).abs().max().item()
        assert naive > 1e-3, naive


def test_gaussian_mixture_is_finite_far_from_every_component():
    logits, loc, scale_kd, _ = hard_mixture(1e-4)
    z = torch.tensor([[1e4] * 50, [-1e4] * 50, [0.0] * 50])
    fast = GaussianMixture(logits, loc, scale=scale_kd).log_prob(z)
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast.double(), direct_log_prob_float64(logits, loc, scale_kd, z), rtol=1e-6, atol=0)


def test_full_rank_gaussian_mixture_is_the_mixture_of_its_components_across_blocks():
    """Full-rank components are scored FULL_RANK_BLOCK at a time: with K = 2.2 blocks (the last one
    partial) log p(z) equals MixtureSameFamily of all K at once, in float64, at (3, 5, D) values."""
    from pyro_vae.gaussian_mixture import FULL_RANK_BLOCK

    g = torch.Generator().manual_seed(4)
    k, d = int(2.2 * FULL_RANK_BLOCK), 3
    loc, logits = torch.randn(k, d, generator=g, dtype=torch.float64), torch.randn(k, generator=g, dtype=torch.float64)
    tril = (torch.randn(k, d, d, generator=g, dtype=torch.float64).tril(-1)
            + torch.diag_embed(torch.rand(k, d, generator=g, dtype=torch.float64) + 0.1))
    z = 2 * torch.randn(3, 5, d, generator=g, dtype=torch.float64)
    expected = dist.MixtureSameFamily(dist.Categorical(logits=logits),
                                      dist.MultivariateNormal(loc, scale_tril=tril)).log_prob(z)
    p = GaussianMixture(logits, loc, scale_tril=tril)
    torch.testing.assert_close(p.log_prob(z), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p.expand((3, 5)).log_prob(z), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_gaussian_mixture_gradients_equal_the_direct_forms(scale):
    """∂ Σ_n log p(z_n) / ∂(logits, μ, σ, z) against autograd of the direct form in float64.
    Tolerance: relative 10⁻⁴ of the largest entry of each gradient (float32 parameters)."""
    leaves = [t.clone().requires_grad_() for t in hard_mixture(scale, k=10, d=8, offset=1.0)]
    GaussianMixture(leaves[0], leaves[1], scale=leaves[2]).log_prob(leaves[3]).sum().backward()
    fast = [t.grad for t in leaves]
    reference = [t.detach().double().requires_grad_() for t in leaves]
    direct_log_prob_float64(*reference).sum().backward()
    for name, got, want in zip(("logits", "loc", "scale", "z"), fast, reference, strict=True):
        scale_of = want.grad.abs().max().item()
        torch.testing.assert_close(got.double(), want.grad, rtol=0, atol=1e-4 * scale_of, msg=name)


@pytest.mark.parametrize("full_rank", [False, True])
def test_gaussian_mixture_samples_have_its_moments(full_rank):
    """Mean, variance and covariance of 100,000 draws against the mixture's closed forms (Σ π_k μ_k;
    Σ π_k (Σ_k + μ_k μ_kᵀ) − m mᵀ), within 4 Monte Carlo standard errors (sd/√N for the mean,
    √((m₄ − σ⁴)/N) for the variance, the sd of the product's deviation /√N for the covariance)."""
    g = torch.Generator().manual_seed(3)
    k, d = 4, 3
    loc, logits = 2 * torch.randn(k, d, generator=g), torch.randn(k, generator=g)
    if full_rank:
        tril = torch.randn(k, d, d, generator=g).tril(-1) * 0.5 + torch.diag_embed(torch.rand(k, d, generator=g) + 0.2)
        p, covariances = GaussianMixture(logits, loc, scale_tril=tril), tril @ tril.mT
    else:
        scale = torch.rand(k, d, generator=g) + 0.2
        p, covariances = GaussianMixture(logits, loc, scale=scale), torch.diag_embed(scale ** 2)
    torch.manual_seed(0)
    z = p.sample((N_SAMPLES,)).double()
    assert z.shape == (N_SAMPLES, d)
    weights = torch.softmax(logits, -1).double()
    mean = (weights[:, None] * loc.double()).sum(0)
    second = (weights[:, None, None] * (covariances.double() + loc.double()[:, :, None] * loc.double()[:, None])).sum(0)
    covariance = second - mean[:, None] * mean[None]
    torch.testing.assert_close(p.mean.double(), mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(p.variance.double(), covariance.diagonal(), rtol=1e-5, atol=1e-6)
    centred = z - z.mean(0)
    products = centred[:, :, None] * centred[:, None]
    torch.testing.assert_close(z.mean(0), mean, rtol=0, atol=4 * (z.var(0) / N_SAMPLES).sqrt().max().item())
    se = products.std(0) / math.sqrt(N_SAMPLES)
    assert ((products.mean(0) - covariance).abs() < 4 * se).all()


@pytest.mark.parametrize("guide", ["diagonal_normal", "full_rank"])
def test_vamp_prior_equals_the_mixture_same_family_it_replaces_with_gradients(guide):
    """The VampPrior's GaussianMixture against torch's MixtureSameFamily of the same components, in
    value and in the gradient of every parameter (pseudo-inputs and the shared encoder), at the
    model's (particles, batch, z_dim) values."""
    vae = perturbed_vae("vamp", {"num_components": 6}, guide=guide, z_dim=4)
    with torch.no_grad():
        z = vae.encode(torch.rand(5, *X_SHAPE)).sample((3,))
    fast = vae.prior().expand((3, 5)).log_prob(z)
    assert fast.shape == (3, 5)
    parameters = [p for p in vae.parameters() if p.requires_grad]
    fast_grads = torch.autograd.grad(fast.sum(), parameters, allow_unused=True)
    components = vae.prior.components()
    old = dist.MixtureSameFamily(dist.Categorical(logits=torch.zeros(6)), components).log_prob(z)
    old_grads = torch.autograd.grad(old.sum(), parameters, allow_unused=True)
    torch.testing.assert_close(fast, old, rtol=1e-5, atol=1e-4)
    for got, want in zip(fast_grads, old_grads, strict=True):
        if want is None:
            assert got is None
            continue
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
