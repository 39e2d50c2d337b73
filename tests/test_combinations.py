"""Pieces built from each other (context by signature), combinations that fail at construction
with their names, and checkpoints of every prior × guide."""

import itertools
import json

import pytest
import torch

import pyro_vae
from pyro_vae import GUIDES, PRIORS, build_vae, make_config, make_objective
from pyro_vae.cli import main
from pyro_vae.compatibility import REFUSED, IncompatibleCombinationError, check_combination, supported_pairs
from pyro_vae.evaluate import log_weights
from pyro_vae.registry import Option, Registry

from .conftest import exit_status
from .test_example import quick_args

X_SHAPE = (1, 6, 6)
SMALL = {"vamp": {"num_components": 4}}


def small_config(prior, guide, z_dim=3):
    return make_config(X_SHAPE, z_dim, prior=prior, guide=guide,
                       options={"prior": SMALL.get(prior, {}), "net": {"hidden_dims": [16]}})


def test_a_factory_receives_the_context_its_signature_names():
    registry = Registry("thing")

    @registry.register("narrow", Option("size", int, 2))
    def narrow(z_dim, size):
        return ("narrow", z_dim, size)

    @registry.register("wide")
    def wide(**context):
        return ("wide", sorted(context))

    context = {"z_dim": 3, "encoder": object(), "guide": object()}
    assert registry.build("narrow", {}, **context) == ("narrow", 3, 2)
    assert registry.build("wide", None, **context) == ("wide", ["encoder", "guide", "z_dim"])


def test_a_bad_piece_fails_at_construction_naming_the_combination():
    with pytest.raises(ValueError, match="option 'num_components' of prior 'vamp' must be >= 1, got 0"):
        make_config(X_SHAPE, 3, prior="vamp", guide="iaf", options={"prior": {"num_components": 0}})
    with pytest.raises(ValueError, match="guide=iaf.*hidden sizes must be >= z_dim"):
        build_vae(make_config(X_SHAPE, 8, guide="iaf", options={"guide": {"hidden_dims": [4]}}))


def test_a_combination_that_cannot_train_fails_before_training_with_its_name():
    vae = build_vae(small_config("mixture", "full_rank"))

    def broken_loss(x):
        raise RuntimeError("shape mismatch deep inside")

    with pytest.raises(IncompatibleCombinationError,
                       match=r"prior=mixture, guide=full_rank, likelihood=bernoulli, net=mlp, objective=odd "
                             r"cannot be trained: .*RuntimeError: shape mismatch"):
        check_combination(vae, "odd", broken_loss, torch.rand(2, *X_SHAPE))


def test_the_combination_check_leaves_the_run_untouched():
    vae = build_vae(small_config("vamp", "full_rank"))
    loss = make_objective("elbo", {"num_particles": 2})(vae.model, vae.guide)
    x = torch.bernoulli(torch.full((2, *X_SHAPE), 0.3))
    state = torch.get_rng_state()
    check_combination(vae, "elbo", loss, x)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None for p in vae.parameters())


@pytest.mark.parametrize("prior,guide", list(itertools.product(PRIORS.names(), GUIDES.names())))
def test_every_pair_builds_unless_refused_with_a_message_naming_it(prior, guide):
    """The pairs of compatibility.REFUSED fail at construction with a one-line ConfigError that names
    the pair, says why and what to use instead; every other pair builds."""
    if (prior, guide) not in REFUSED:
        build_vae(small_config(prior, guide))
        return
    with pytest.raises(pyro_vae.ConfigError) as error:
        build_vae(small_config(prior, guide))
    message = str(error.value)
    assert f"prior={prior} with guide={guide} is not supported" in message and "\n" not in message
    assert "use prior=vamp with guide=diagonal_normal or full_rank" in message


def test_vamp_with_iaf_is_refused_on_the_command_line_with_exit_status_2(synthetic_data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    status = exit_status(main, quick_args(synthetic_data_dir, out, "--num-epochs", "1", "--prior", "vamp", "--guide",
                                          "iaf", "--vamp-num-components", "5", "--z-dim", "4"))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2
    assert len(lines) == 1 and "error: --guide: prior=vamp with guide=iaf is not supported" in lines[0], lines
    assert not (out / "metrics.json").exists()


@pytest.mark.parametrize("prior,guide", supported_pairs(PRIORS.names(), GUIDES.names()))
def test_every_prior_and_guide_round_trips_through_a_checkpoint(prior, guide, tmp_path):
    """The file alone rebuilds the model: same configuration, same parameters and buffers (random
    autoregressive orderings included), the same log-weights under the same seed."""
    vae = build_vae(small_config(prior, guide))
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    pyro_vae.save_checkpoint(tmp_path / "ckpt.pt", vae, torch.optim.Adam(vae.parameters()), epoch=1)
    torch.manual_seed(123)  # a different initialization: only the file can make them agree
    loaded = pyro_vae.load(tmp_path / "ckpt.pt")
    assert loaded.config == vae.config
    assert loaded.config["prior"]["options"] == vae.config["prior"]["options"]
    x = torch.bernoulli(torch.full((3, *X_SHAPE), 0.3))
    torch.manual_seed(1)
    expected = log_weights(vae, x, 4)
    torch.manual_seed(1)
    torch.testing.assert_close(log_weights(loaded, x, 4), expected, rtol=0, atol=0)


@pytest.mark.parametrize("prior,guide,extra,recorded", [
    ("vamp", "full_rank", ["--vamp-num-components", "5"], {"prior": {"num_components": 5}}),
    ("mixture", "iaf", ["--mixture-num-components", "3", "--iaf-depth", "1"],
     {"prior": {"num_components": 3}, "guide": {"depth": 1}}),
    ("flow", "full_rank", ["--flow-depth", "1", "--flow-layer", "spline"],
     {"prior": {"depth": 1, "layer": "spline"}}),
])
def test_runs_with_other_pieces_resume_and_evaluate_from_their_checkpoint(
        synthetic_data_dir, tmp_path, capsys, prior, guide, extra, recorded):
    """Train one epoch, resume to two, evaluate the saved model: the checkpoint records the pieces
    and their options, and the output says how the KL term is computed."""
    out = tmp_path / "run"
    pieces = ["--prior", prior, "--guide", guide, "--z-dim", "4", *extra]
    assert main(quick_args(synthetic_data_dir, out, "--num-epochs", "1", *pieces)) == 0
    printed = capsys.readouterr().out
    assert f"prior={prior}, guide={guide}" in printed
    assert "no closed form; every objective estimates it by Monte Carlo" in printed
    assert main(quick_args(synthetic_data_dir, out, "--num-epochs", "2", "--resume", str(out))) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["history"]] == [1, 2]
    model = metrics["config"]["model"]
    assert model["prior"]["name"] == prior and model["guide"]["name"] == guide
    assert metrics["kl_closed_form"] is False
    for kind, options in recorded.items():
        assert options.items() <= model[kind]["options"].items()
    assert main(quick_args(synthetic_data_dir, out, "--resume", str(out / "checkpoint.pt"), "--evaluate-only")) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert abs(again["test_elbo"] - metrics["test_elbo"]) < 4 * metrics["test_elbo_stderr"]
    assert pyro_vae.load(out / "best.pt").config == model


@pytest.mark.parametrize("prior,guide", list(itertools.product(PRIORS.names(), GUIDES.names())))
def test_every_pair_builds_as_a_hierarchical_model_unless_refused(prior, guide):
    """model=hierarchical: the pairs of compatibility.MODEL_REFUSED (or REFUSED) fail with one line
    naming the model and the piece, in RunConfig and in build_vae; every other pair builds and
    steps every objective."""
    from pyro_vae.compatibility import MODEL_REFUSED
    from pyro_vae.objectives import OBJECTIVES

    config = {**small_config(prior, guide), "model": {"name": "hierarchical", "options": {"upper_z_dims": [2],
                                                                                          "upper_hidden_dims": [8]}}}
    refused = [kind for kind, name in (("prior", prior), ("guide", guide)) if ("hierarchical", name) in MODEL_REFUSED]
    if refused:
        for build in (lambda: build_vae(config), lambda: pyro_vae.RunConfig(model="hierarchical", prior=prior,
                                                                             guide=guide)):
            with pytest.raises(pyro_vae.ConfigError) as error:
                build()
            assert f"model=hierarchical with {refused[0]}=" in str(error.value) and "\n" not in str(error.value)
        return
    vae = build_vae(config)
    x = torch.rand(3, *X_SHAPE).bernoulli()
    for name in OBJECTIVES.names():
        options = {"num_particles": 2} if "num_particles" in OBJECTIVES[name].options else {}
        loss = make_objective(name, options)(vae.model, vae.guide)(x)
        loss.backward()
        assert torch.isfinite(loss), name
