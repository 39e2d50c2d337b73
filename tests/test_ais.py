"""Annealed importance sampling against closed forms: a 2-D mixture with a known normalizer, and the
linear-Gaussian VAE with a correlated posterior and an exact log p(x)."""

import json
import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import pyro_vae
from pyro_vae import build_vae, make_config
from pyro_vae.annealing import anneal, noise_map, sigmoid_schedule
from pyro_vae.linear_gaussian import LinearGaussianVAE

DTYPE = torch.float64


def correlated(full_rank=False, seed=1):
    """A linear-Gaussian VAE whose posterior is correlated (W with non-orthogonal columns)."""
    return LinearGaussianVAE(torch.tensor([[1.5, 1.2], [0.3, -0.9], [1.0, 1.1], [-0.4, 0.5], [0.8, 0.9]],
                                          dtype=DTYPE), torch.zeros(5, dtype=DTYPE), 0.5, full_rank=full_rank)


def test_the_schedule_runs_from_0_to_1_and_rises():
    betas = sigmoid_schedule(50)
    assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all()
    assert betas.diff()[0] < betas.diff()[25]  # small steps near β = 0


def test_ais_recovers_the_normalizer_of_a_2d_mixture():
    """γ(z) = Z · [½ N((−2, 0), 0.5²I) + ½ N((2, 1), diag(0.3², 0.8²))] with log Z = 3.7, from
    π₀ = N(0, 3²I): the estimate, a lower bound in expectation, lands within three standard errors."""
    torch.manual_seed(0)
    log_z = 3.7
    target = MixtureSameFamily(Categorical(torch.tensor([0.5, 0.5], dtype=DTYPE)),
                               Independent(Normal(torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=DTYPE),
                                                  torch.tensor([[0.5, 0.5], [0.3, 0.8]], dtype=DTYPE)), 1))
    chains, replicates = 64, 6
    initial = Independent(Normal(torch.zeros(chains, replicates, 2, dtype=DTYPE), 3.0), 1)
    result = anneal(initial, lambda z: target.log_prob(z) + log_z - initial.log_prob(z), 200, leapfrog_steps=4,
                    step_size=0.3)
    estimate, stderr = result.log_normalizer(), result.stderr()
    assert ((estimate - log_z).abs() < 3 * stderr + 0.02).all(), (estimate, stderr)
    assert (result.acceptance > 0.3).all() and (result.acceptance < 0.99).all()
    assert result.step_sizes.shape == (200, replicates)


def test_ais_converges_to_the_exact_log_px_of_a_correlated_posterior():
    """The diagonal guide cannot match a correlated posterior, so importance sampling from it is
    biased low; AIS closes the gap as its chains get longer, to within three standard errors."""
    torch.manual_seed(0)
    model = correlated()
    x = model.marginal().sample((6,))
    exact = model.log_px(x)
    assert (model.kl_to_posterior(x) > 0.1).all()  # the guide really is off
    errors = {}
    for steps in (3, 300):
        result = pyro_vae.ais(model.vae, x, num_steps=steps, num_chains=32, step_size=0.2)
        errors[steps] = (exact - result.log_likelihood).abs().mean().item()
        if steps == 300:
            assert ((result.log_likelihood - exact).abs() < 3 * result.stderr + 1e-3).all(), (result.log_likelihood, exact)
            assert result.log_likelihood.shape == result.stderr.shape == result.acceptance.shape == (6,)
    assert errors[300] < errors[3] / 3, errors


def test_ais_from_the_exact_posterior_gives_log_px_on_every_chain():
    """A full-rank guide set to the exact posterior: every importance ratio p(x, z)/q(z|x) equals p(x),
    so every chain's weight is log p(x), whatever its transitions: the noise map and its log-Jacobian
    are exact."""
    torch.manual_seed(0)
    model = correlated(full_rank=True)
    x = model.marginal().sample((4,))
    result = pyro_vae.ais(model.vae, x, num_steps=20, num_chains=8)
    torch.testing.assert_close(result.log_weights, model.log_px(x).expand(8, -1), rtol=0, atol=1e-9)


@pytest.mark.parametrize("guide", ["diagonal_normal", "full_rank", "iaf"])
def test_the_noise_map_gives_the_guides_own_density(guide):
    """z = g(ε) and log q(z|x) from g's log-Jacobian, against the guide distribution's log_prob at z
    (for the IAF, Pyro's inverse of its own forward pass)."""
    torch.manual_seed(0)
    vae = build_vae(make_config((1, 6, 6), 3, guide=guide, options={"net": {"hidden_dims": [16]}})).double()
    with torch.no_grad():
        for parameter in vae.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
        x = torch.bernoulli(torch.full((4, 1, 6, 6), 0.3, dtype=DTYPE))
        q = vae.encode(x)
        z, log_q = noise_map(q)(torch.randn(5, 4, 3, dtype=DTYPE))
        reference = q.log_prob(z.clone())  # a new tensor: no cached inverse
    torch.testing.assert_close(log_q, reference, rtol=1e-8, atol=1e-8)


def test_ais_checks_its_input():
    model = correlated()
    with pytest.raises(pyro_vae.InputError, match="num_chains must be a positive integer"):
        pyro_vae.ais(model.vae, model.marginal().sample((2,)), num_chains=0)
    with pytest.raises(pyro_vae.InputError, match=r"has shape \(2, 4\)"):
        pyro_vae.ais(model.vae, torch.zeros(2, 4, dtype=DTYPE))
    assert math.isfinite(pyro_vae.ais(model.vae, model.marginal().sample((1,)), num_steps=2, num_chains=2)
                         .log_likelihood.item())


# -- BDMC ------------------------------------------------------------------------------------------------------

def test_bdmc_sandwiches_the_exact_log_px_and_narrows_with_more_steps():
    """On images simulated from the correlated linear-Gaussian model: forward AIS ≤ log p(x) ≤ reverse
    AIS, each within Monte Carlo error, and the sandwich narrows as the chains get longer."""
    model = correlated()
    widths = {}
    for steps in (5, 200):
        torch.manual_seed(3)
        result = pyro_vae.bdmc(model.vae, num_images=6, num_steps=steps, num_chains=16, step_size=0.2)
        exact = model.log_px(result.x)
        assert (result.lower <= exact + 3 * result.lower_stderr + 1e-3).all(), (result.lower, exact)
        assert (result.upper >= exact - 3 * result.upper_stderr - 1e-3).all(), (result.upper, exact)
        widths[steps] = result.width.mean().item()
    assert widths[200] < widths[5] / 3, widths
    assert widths[200] < 0.05, widths


# -- inference gaps ----------------------------------------------------------------------------------------------

def test_the_approximation_gap_of_a_diagonal_guide_is_its_kl_to_the_correlated_posterior():
    """The best diagonal Gaussian for a correlated Gaussian posterior has the posterior's mean and the
    diagonal of its precision: its KL to the posterior is the approximation gap, in closed form. Its
    amortization gap is 0 when the encoder already outputs it, and the closed-form KL difference when
    the encoder is off."""
    torch.manual_seed(0)
    model = correlated()
    x = model.marginal().sample((4,))
    best_kl = model.kl_to_posterior(x)               # the encoder outputs the best diagonal guide
    exact = pyro_vae.annealing.AIS(model.log_px(x), torch.zeros(4, dtype=DTYPE), torch.ones(4), torch.zeros(1, 4), 0, 1)
    gaps = pyro_vae.inference_gaps(model.vae, x, optimize_steps=400, lr=2e-2, num_particles=64, elbo_samples=50_000,
                                   log_likelihood=exact)
    tolerance = 4 * gaps.elbo_optimized_stderr + 0.01    # Monte Carlo error plus what 400 steps leave
    assert ((gaps.approximation - best_kl).abs() < tolerance).all(), (gaps.approximation, best_kl)
    assert (gaps.amortization.abs() < tolerance + 4 * gaps.elbo_amortized_stderr).all(), gaps.amortization

    A, c, s = model.exact_guide()
    model.set_guide(A + 0.1, c - 0.3, s * 1.5)        # an encoder that is off
    off_kl = model.kl_to_posterior(x)
    gaps = pyro_vae.inference_gaps(model.vae, x, optimize_steps=400, lr=2e-2, num_particles=64, elbo_samples=50_000,
                                   log_likelihood=exact)
    expected = off_kl - best_kl
    assert (expected > 0.2).all()
    assert ((gaps.amortization - expected).abs() < tolerance + 4 * gaps.elbo_amortized_stderr).all(), (
        gaps.amortization, expected)
    assert ((gaps.approximation - best_kl).abs() < tolerance).all()


def test_the_gaps_of_a_trained_flow_guide_run_and_are_finite():
    """IAF guide: local parameters are the encoder's output (base Gaussian and context)."""
    torch.manual_seed(0)
    vae = build_vae(make_config((1, 6, 6), 3, guide="iaf", options={"net": {"hidden_dims": [16]},
                                                                    "guide": {"hidden_dims": [8], "depth": 1}}))
    x = torch.bernoulli(torch.full((3, 1, 6, 6), 0.3))
    gaps = pyro_vae.inference_gaps(vae, x, num_steps=20, num_chains=4, optimize_steps=20, elbo_samples=200)
    assert all(torch.isfinite(getattr(gaps, name)).all() for name in ("approximation", "amortization"))
    assert gaps.summary()["amortization"][0] > -1.0


# -- from the command line and in comparisons ----------------------------------------------------------------------

def test_certify_a_saved_run_from_the_command_line(synthetic_data_dir, tmp_path, capsys):
    from pyro_vae.cli import certify_main, main

    from .conftest import exit_status
    from .test_example import quick_args

    run = tmp_path / "run"
    assert main(quick_args(synthetic_data_dir, run, "--num-epochs", "2")) == 0
    argv = [str(run), "--images", "6", "--is-samples", "50", "200", "--ais-steps", "20", "--ais-chains", "4",
            "--bdmc-images", "3", "--bdmc-steps", "5", "20", "--gaps", "--gap-steps", "20", "--no-progress"]
    assert certify_main(argv) == 0
    printed = capsys.readouterr().out
    assert "AIS, 20 steps × 4 chains" in printed and "BDMC on simulated images, 20 steps" in printed
    summary = json.loads((run / "likelihood" / "likelihood.json").read_text())
    assert summary["test_images"] == 6 and [s["steps"] for s in summary["bdmc"]] == [5, 20]
    assert summary["is_200"]["khat_share_above_0.7"] is not None and summary["is_50"]["khat_share_above_0.7"] is None
    per_image = torch.load(run / "likelihood" / "likelihood.pt", weights_only=True)
    assert per_image["ais"].shape == per_image["is_200"].shape == per_image["approximation_gap"].shape == (6,)
    for name in ("ais_vs_is.png", "bdmc.png"):
        assert (run / "likelihood" / name).stat().st_size > 0
    assert exit_status(certify_main, argv) == 2  # the folder holds a certificate: refused without --overwrite
    assert "already holds a run" in capsys.readouterr().err
    assert exit_status(certify_main, [str(tmp_path / "nothing")]) == 2
    assert "no such checkpoint file or run folder" in capsys.readouterr().err


def test_comparisons_take_an_ais_column(synthetic_data_dir, tmp_path):
    from .test_compare_bounds import compare_args, load_compare_bounds

    out = tmp_path / "compare"
    argv = compare_args(synthetic_data_dir, out, "--runs", "elbo:1", "iwae:2", "--ais-images", "5", "--ais-steps", "10",
                        "--ais-chains", "4")
    assert load_compare_bounds().main(argv) == 0
    table = (out / "results.md").read_text()
    assert "log p(x), AIS, first 5 test images" in table and "IWAE-100, same images" in table
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert all(math.isfinite(row["ais_log_likelihood"]) for row in rows)
    assert (out / "elbo_K1_seed0" / "likelihood" / "likelihood.json").is_file()
