"""The continuous Bernoulli likelihood, the convolutional nets and the active-units count."""

import pytest
import torch
from torch import nn

from pyro_vae import VAE, build_vae, make_config
from pyro_vae.evaluate import active_units, kl_per_dimension
from pyro_vae.guides import DiagonalNormalGuide
from pyro_vae.likelihoods import ContinuousBernoulliLikelihood, GaussianLikelihood
from pyro_vae.priors import StandardNormalPrior


def test_continuous_bernoulli_is_normalized_on_the_unit_interval():
    """∫₀¹ p(x|λ) dx = 1 per pixel (midpoint rule, 20,000 points: the density is smooth on [0, 1], so
    the error is O(h²) ≈ 10⁻⁹ times its second derivative); the Bernoulli formula without C(λ)
    is not normalized; with logits 0 the density is uniform (C(½) = 2)."""
    logits = torch.tensor([[-4.0, -1.0, 0.0, 0.3, 2.5]], dtype=torch.float64)
    likelihood = ContinuousBernoulliLikelihood((5,))
    x = ((torch.arange(20_000, dtype=torch.float64) + 0.5) / 20_000)[:, None].expand(-1, 5)
    per_pixel = likelihood(logits).base_dist.log_prob(x).exp()
    torch.testing.assert_close(per_pixel.mean(0), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-6)
    unnormalized = torch.distributions.Bernoulli(logits=logits, validate_args=False).log_prob(x).exp().mean(0)
    assert (unnormalized - 1).abs().min() > 0.4  # ∫ λ^x (1 − λ)^(1−x) dx = 1/C(λ) ≤ ½
    assert likelihood(logits).log_prob(torch.full((1, 5), 0.7, dtype=torch.float64)).shape == (1,)
    torch.testing.assert_close(likelihood(torch.zeros(2, 5)).log_prob(torch.rand(2, 5)), torch.zeros(2))


@pytest.mark.parametrize("x_shape", [(1, 28, 28), (1, 6, 6), (3, 9, 10), (7, 5)])
def test_conv_nets_keep_image_shapes_and_leading_dimensions(x_shape):
    """Odd and even sizes come back exactly; leading (K, B) dimensions pass through."""
    vae = build_vae(make_config(x_shape, 3, net="conv", options={"net": {"channels": [4, 8], "hidden_dim": 16}}))
    x = torch.rand(2, 5, *x_shape)
    assert vae.encoder(x).shape == (2, 5, vae.guide_net.encoder_out_dim(3))
    assert vae.decoder(torch.randn(2, 5, 3)).shape == (2, 5, *x_shape)
    assert vae.reconstruct(torch.bernoulli(torch.rand(4, *x_shape))).shape == (4, *x_shape)


def test_conv_nets_image_rows_are_independent():
    """A batch is a stack of independent images: image 0's code does not depend on image 1."""
    vae = build_vae(make_config((1, 6, 6), 2, net="conv", options={"net": {"channels": [4], "hidden_dim": 8}}))
    x = torch.rand(2, 1, 6, 6)
    jacobian = torch.autograd.functional.jacobian(vae.encoder, x)
    assert jacobian[0, :, 1].abs().max() == 0 and jacobian[0, :, 0].abs().max() > 0


def test_conv_nets_need_image_shapes():
    with pytest.raises(ValueError, match="net=conv.*need images of shape"):
        build_vae(make_config((5,), 2, net="conv"))


def test_active_units_counts_dimensions_whose_posterior_mean_varies():
    """A linear encoder whose posterior means depend on x in dimensions 0 and 2 only (variance of
    the mean over images ≈ 4 and ≈ 0.04), a constant in dimension 1, and a tiny slope in dimension 3
    (variance ≈ 10⁻⁴): 2 active units at the threshold 10⁻² of Burda et al."""
    z_dim, x_dim = 4, 10
    encoder = nn.Linear(x_dim, 2 * z_dim)
    with torch.no_grad():
        encoder.weight.zero_()
        encoder.bias.zero_()
        encoder.weight[0, 0] = 2.0 * 12 ** 0.5   # x ~ U(0, 1): Var(a x) = a² / 12 -> 4
        encoder.weight[2, 1] = 0.2 * 12 ** 0.5   # -> 0.04
        encoder.weight[3, 2] = 0.01 * 12 ** 0.5  # -> 1e-4
        encoder.bias[1] = 3.0                    # constant mean: inactive
    vae = VAE(prior=StandardNormalPrior(z_dim), guide=DiagonalNormalGuide(z_dim, 1e-4),
              likelihood=GaussianLikelihood((x_dim,), 1.0, False, 0.0), encoder=encoder,
              decoder=nn.Linear(z_dim, x_dim))
    x = torch.rand(5000, x_dim)
    assert active_units(vae, x)[0] == 2
    assert active_units(vae, x, threshold=1e-5)[0] == 3


def test_kl_per_dimension_only_where_q_and_p_factorize_over_units():
    """Per-unit KL needs q(z|x) and p(z) to be products over units: diagonal Gaussian guide with a
    Gaussian prior, not a full-rank or flow guide, nor a mixture or flow prior (whose base
    distributions are not the distributions of z)."""
    x = torch.rand(5, 1, 6, 6)
    for prior, guide, factorizes in [("learned_normal", "diagonal_normal", True), ("flow", "iaf", False),
                                     ("standard_normal", "full_rank", False), ("mixture", "diagonal_normal", False)]:
        vae = build_vae(make_config((1, 6, 6), 3, prior=prior, guide=guide, options={"net": {"hidden_dims": [8]}}))
        per_unit = kl_per_dimension(vae, x)
        assert (per_unit is not None) is factorizes, (prior, guide)
        if factorizes:
            assert per_unit.shape == (3,) and (per_unit >= 0).all()
