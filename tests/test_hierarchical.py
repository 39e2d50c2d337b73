"""The model with two stochastic layers (pyro_vae.hierarchical) against its exact oracle, the
linear-Gaussian chain z2 → z1 → x (pyro_vae.linear_gaussian.LinearGaussianChain), and end to end."""

import json
import math

import pytest
import torch

import pyro_vae
from pyro_vae import RunConfig, log_weights, make_objective
from pyro_vae.bounds import log_mean_exp
from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.errors import ConfigError
from pyro_vae.linear_gaussian import LinearGaussianChain

from .test_example import quick_args

N = 20000  # particles of the Monte Carlo checks


def chain(exact: bool = True) -> tuple[LinearGaussianChain, torch.Tensor]:
    torch.manual_seed(1)
    lg = LinearGaussianChain.random(seed=0)
    if not exact:  # a guide that is off in both layers
        A1, c1, s1, A2, c2, s2 = lg.exact_guide()
        lg.set_guide(A1 + 0.05, c1 + 0.2, s1 * 1.4, A2 - 0.1, c2 + 0.1, s2 * 0.7)
    return lg, lg.marginal().sample((3,))


def test_elbo_identity_holds_in_closed_form_for_two_layers():
    """log p(x) − ELBO = KL(q(z1, z2|x) ‖ p(z1, z2|x)), each side computed its own way."""
    lg, x = chain(exact=False)
    torch.testing.assert_close(lg.log_px(x) - lg.elbo(x), lg.kl_to_posterior(x), rtol=0, atol=1e-10)
    assert (lg.kl_to_posterior(x) > 0.5).all()


def test_bottom_up_guide_represents_the_exact_posterior():
    """At p(z1|x) p(z2|z1) every log w = log p(x, z1, z2) − log q(z1, z2|x), summed over both sites by
    the library, is log p(x) itself."""
    lg, x = chain(exact=True)
    torch.testing.assert_close(lg.kl_to_posterior(x), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-10)
    log_w = log_weights(lg.vae, x, 16)
    torch.testing.assert_close(log_w, lg.log_px(x).expand(16, 3), rtol=0, atol=1e-10)


@pytest.mark.parametrize("objective", ["elbo", "mean_field"])
def test_monte_carlo_elbo_of_both_layers_matches_the_closed_form(objective):
    """The objectives' estimate (mean_field: closed-form KL only at the top site) is the exact ELBO
    within 4 Monte Carlo standard errors."""
    lg, x = chain(exact=False)
    with torch.no_grad():
        estimate = -make_objective(objective, {"num_particles": N})(lg.vae.model, lg.vae.guide)(x)
        stderr = log_weights(lg.vae, x, N).std(0).square().sum().sqrt() / math.sqrt(N)
    exact = lg.elbo(x).sum()
    assert abs(estimate - exact) < 4 * stderr, (estimate, exact, stderr)


def test_importance_weighted_bound_rises_with_k_towards_log_px():
    lg, x = chain(exact=False)
    with torch.no_grad():
        log_w = log_weights(lg.vae, x, 5000)
    exact = lg.log_px(x)
    bounds = {}
    for k in (1, 10, 100, 1000):
        per_group = log_mean_exp(log_w[: (5000 // k) * k].reshape(k, -1, 3), dim=0)  # (groups, images)
        bounds[k] = (per_group.mean(0), per_group.std(0) / math.sqrt(per_group.shape[0]) + 1e-12)
    for small, large in ((1, 10), (10, 100), (100, 1000)):
        assert (bounds[large][0] > bounds[small][0] - 3 * (bounds[small][1] + bounds[large][1])).all()
    assert ((bounds[1][0] - lg.elbo(x)).abs() < 4 * bounds[1][1]).all()  # L_1 is the ELBO ...
    assert (bounds[1][0] < exact - 0.5).all()  # ... really below log p(x), by the KL
    # L_1000 has closed most of the gap, for each image (its estimate from 5 groups within 3 SE)
    assert ((exact - bounds[1000][0]).abs() < 0.25 * (exact - bounds[1][0]) + 3 * bounds[1000][1]).all()


@pytest.mark.parametrize("objective, options", [("iwae_dreg", {"num_particles": 5}), ("elbo_stl", {})])
def test_path_gradient_estimators_vanish_at_the_exact_posterior(objective, options):
    """DReG and STL drop the score term, so at q = p(z1, z2|x) their guide gradient is zero for every
    draw (Roeder et al., arXiv:1703.09194; Tucker et al., arXiv:1810.04152); the ELBO's is not."""
    lg, x = chain(exact=True)
    vae = lg.vae
    guide_params = [*vae.encoder.parameters(), *vae.upper_encoders.parameters()]

    def guide_gradient(name, opts):
        for p in vae.parameters():
            p.grad = None
        make_objective(name, opts)(vae.model, vae.guide)(x).backward()
        return torch.cat([p.grad.flatten() for p in guide_params])

    assert guide_gradient(objective, options).abs().max() < 1e-9
    assert guide_gradient("elbo", {}).abs().max() > 1e-3


def test_keyed_noise_gives_each_latent_site_its_own_stream():
    from pyro import poutine

    from pyro_vae.noise import GuideNoise, StepNoise

    lg, x = chain(exact=True)
    noise = StepNoise()
    noise.key, noise.start = (0, 1, 2), 0
    with GuideNoise(noise, lg.vae.latent_sites):
        first = poutine.trace(lg.vae.guide).get_trace(x)
        again = poutine.trace(lg.vae.guide).get_trace(x)
    eps = {name: first.nodes[name]["fn"]._draw[1] for name in ("z1", "z2")}
    assert torch.equal(first.nodes["z2"]["value"], again.nodes["z2"]["value"])  # keyed: the same draws
    first_numbers = eps["z2"].numel()  # one stream for both would start both with the same numbers
    assert not torch.equal(eps["z1"].flatten()[:first_numbers], eps["z2"].flatten())


def test_run_config_builds_and_refuses_the_hierarchical_model():
    config = RunConfig(model="hierarchical", z_dim=7, model_options={"upper_z_dims": [4, 3]})
    vae = pyro_vae.build_vae(config.model_config((1, 28, 28)))
    assert vae.latent_sites == ("z1", "z2", "z3")
    assert [g.z_dim for g in vae.upper_guides] == [4, 3]
    assert RunConfig().model_config((1, 28, 28)).get("model") is None  # the one-layer record is unchanged
    with pytest.raises(ConfigError, match="model=hierarchical with prior=vamp"):
        RunConfig(model="hierarchical", prior="vamp")
    with pytest.raises(ConfigError, match="model=hierarchical with guide=iaf"):
        RunConfig(model="hierarchical", guide="iaf")


def test_old_records_without_a_model_load_as_the_one_layer_vae():
    old = RunConfig().to_dict()
    del old["model"], old["model_options"]
    assert RunConfig.from_dict(old).model == "vae"
    record = RunConfig(z_dim=3).model_config((1, 28, 28))
    assert "model" not in record and type(pyro_vae.build_vae(record)) is pyro_vae.VAE


def test_hierarchical_run_end_to_end_resumes_bit_exactly(synthetic_data_dir, tmp_path):
    from pyro_vae.cli import main

    args = ("--model", "hierarchical", "--z-dim", "6", "--upper-z-dims", "3", "--upper-hidden-dims", "16",
            "--objective", "iwae", "--num-particles", "2")
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(quick_args(synthetic_data_dir, straight, *args, "--num-epochs", "2")) == 0
    assert main(quick_args(synthetic_data_dir, split, *args, "--num-epochs", "1")) == 0
    assert main(quick_args(synthetic_data_dir, split, "--num-epochs", "2", "--resume", str(split))) == 0
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(split / "checkpoint.pt")
    assert a["model_config"]["model"]["name"] == "hierarchical"
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    metrics = json.loads((straight / "metrics.json").read_text())
    assert len(metrics["active_units_per_layer"]) == 2 and set(metrics["kl_per_layer"]) == {"z1", "z2"}
    assert metrics["config"]["run"]["model"] == "hierarchical"
    assert all(v > 0 for v in metrics["kl_per_layer"].values())
    assert type(pyro_vae.load(straight)).__name__ == "HierarchicalVAE"


def test_dreg_guide_gradient_is_unbiased_through_both_layers():
    """E[DReG guide gradient] = ∇_φ L_K = E[IWAE guide gradient] (Tucker et al., arXiv:1810.04152,
    eq. 6), here for the encoder of z1, whose gradient also flows down through z2: a weight applied
    twice on that path (w̃³) moves the mean by many standard errors."""
    lg, x = chain(exact=False)
    vae = lg.vae
    batch = x[:1].expand(1000, -1).contiguous()

    def gradients(name):
        draws = []
        for _ in range(30):
            for p in vae.parameters():
                p.grad = None
            make_objective(name, {"num_particles": 5})(vae.model, vae.guide)(batch).backward()
            draws.append(torch.cat([p.grad.flatten() for p in vae.encoder.parameters()]) / len(batch))
        draws = torch.stack(draws)
        return draws.mean(0), draws.std(0) / math.sqrt(len(draws))

    torch.manual_seed(0)
    dreg, dreg_se = gradients("iwae_dreg")
    iwae, iwae_se = gradients("iwae")
    z = (dreg - iwae) / (dreg_se ** 2 + iwae_se ** 2).sqrt()
    assert z.abs().max() < 4.5, z  # ~ 60 coordinates: the largest of 60 |N(0, 1)| is rarely above 3.5


def test_burda2015_two_layer_protocol_is_the_papers_architecture():
    config = RunConfig.from_protocol("burda2015-2layer")
    assert (config.model, config.z_dim, config.model_options["upper_z_dims"]) == ("hierarchical", 100, [50])
    assert config.model_options["upper_hidden_dims"] == [100, 100] and config.model_options["upper_activation"] == "tanh"
    assert config.model_options["data_output_bias"]
    assert config.net_options == {**config.net_options, "hidden_dims": [200, 200], "activation": "tanh"}
    assert (config.lr_schedule, config.batch_size, config.eval_samples) == ("burda2015", 20, 5000)
    vae = pyro_vae.build_vae(config.model_config((1, 28, 28)))
    assert vae.latent_sites == ("z1", "z2") and vae.upper_guides[0].z_dim == 50
    assert RunConfig.from_protocol("burda2015-2layer", model_options={"upper_z_dims": [40]}).model_options[
        "upper_hidden_dims"] == [100, 100]  # options merge with the protocol's


def test_ais_on_both_layers_converges_to_the_exact_log_px():
    """AIS in the noise space of both layers (HMC on (ε1, ε2)): from the exact posterior every chain's
    weight is log p(x); from a guide that is off, 300 steps land within 3 standard errors of it
    while 3 steps do not come close."""
    lg, x = chain(exact=True)
    result = pyro_vae.ais(lg.vae, x, num_steps=10, num_chains=4)
    torch.testing.assert_close(result.log_weights, lg.log_px(x).expand(4, -1), rtol=0, atol=1e-9)
    lg, x = chain(exact=False)
    torch.manual_seed(0)
    exact = lg.log_px(x)
    short = pyro_vae.ais(lg.vae, x, num_steps=3, num_chains=32, step_size=0.2)
    result = pyro_vae.ais(lg.vae, x, num_steps=300, num_chains=32, step_size=0.2)
    assert ((result.log_likelihood - exact).abs() < 3 * result.stderr + 1e-3).all(), (result.log_likelihood, exact)
    assert (exact - result.log_likelihood).abs().mean() < 0.5 * (exact - short.log_likelihood).abs().mean()


def test_bdmc_sandwiches_the_exact_log_px_of_the_two_layer_chain():
    """Images simulated from the chain: the forward AIS bound is below and the reverse one above
    log p(x), within 3 standard errors, and both close to it after 200 steps."""
    from pyro_vae.linear_gaussian import DTYPE

    lg, _ = chain(exact=False)
    torch.manual_seed(3)
    result = pyro_vae.bdmc(lg.vae, 4, num_steps=200, num_chains=16, step_size=0.2)
    exact = lg.log_px(result.x.to(DTYPE))
    assert (result.lower < exact + 3 * result.lower_stderr + 1e-3).all()
    assert (result.upper > exact - 3 * result.upper_stderr - 1e-3).all()
    assert (result.upper - result.lower).mean() < 0.3


def test_inference_gaps_refuse_several_layers_with_one_line():
    lg, x = chain(exact=True)
    with pytest.raises(pyro_vae.InputError, match="not implemented for a model with several latent layers"):
        pyro_vae.inference_gaps(lg.vae, x)


def test_bdmc_starts_its_reverse_chains_at_the_models_own_latents():
    """The exact posterior sample in noise space: ε = g⁻¹(z1, z2), mapped back by the guide's chain,
    gives the simulated z1 and z2 again."""
    from pyro import poutine

    from pyro_vae.annealing import layered_traces, site_sizes
    from pyro_vae.bdmc import _exact_noise

    lg, _ = chain(exact=False)
    with torch.no_grad():
        trace = poutine.trace(lg.vae.model).get_trace(num_samples=3)
        x = trace.nodes["x"]["value"]
        eps = _exact_noise(lg.vae, x, trace)
        _, guide_trace = layered_traces(lg.vae, x, eps.unsqueeze(0), site_sizes(lg.vae, x))
    for name in ("z1", "z2"):
        torch.testing.assert_close(guide_trace.nodes[name]["value"][0], trace.nodes[name]["value"], rtol=0, atol=1e-10)


def test_output_bias_starts_at_the_logit_of_the_data_mean():
    config = RunConfig(model="hierarchical", z_dim=4, model_options={"data_output_bias": True})
    vae = pyro_vae.build_vae(config.model_config((1, 6, 6)))
    mean = torch.rand(1, 6, 6) * 0.8 + 0.1
    vae.initialize_from_data(mean)
    torch.testing.assert_close(vae.decoder.net[-1].bias, torch.logit(mean).flatten())
    untouched = pyro_vae.build_vae(RunConfig(model="hierarchical", z_dim=4).model_config((1, 6, 6)))
    before = untouched.decoder.net[-1].bias.clone()
    untouched.initialize_from_data(mean)  # the option is off: nothing changes
    assert torch.equal(untouched.decoder.net[-1].bias, before)
