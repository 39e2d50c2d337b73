"""The Pyro model and guide: sites, shapes, reparameterization, and every registered combination."""

import itertools

import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae import GUIDES, LIKELIHOODS, OBJECTIVES, PRIORS, ConfigError, build_vae, make_config, make_objective
from pyro_vae.compatibility import supported_pairs
from pyro_vae.likelihoods import GaussianLikelihood

X_SHAPE = (1, 6, 6)


#: options that keep a piece small in tests (the VampPrior's default is the paper's 500 pseudo-inputs)
SMALL_OPTIONS = {"prior": {"vamp": {"num_components": 8}}}


def small_vae(prior="standard_normal", guide="diagonal_normal", likelihood="bernoulli", z_dim=3):
    names = {"prior": prior, "guide": guide, "likelihood": likelihood}
    options = {kind: SMALL_OPTIONS.get(kind, {}).get(name, {}) for kind, name in names.items()}
    config = make_config(X_SHAPE, z_dim, prior=prior, guide=guide, likelihood=likelihood,
                         options={**options, "net": {"hidden_dims": [16]}})
    return build_vae(config)


def binary_batch(n=8):
    return torch.bernoulli(torch.full((n, *X_SHAPE), 0.3))


def test_model_and_guide_have_the_derivations_sites():
    vae = small_vae()
    x = binary_batch(5)
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    assert guide_trace.nodes["z"]["value"].shape == (5, 3)
    assert model_trace.nodes["x"]["is_observed"] and model_trace.nodes["x"]["value"] is x
    assert model_trace.nodes["z"]["fn"].event_shape == (3,)
    assert model_trace.nodes["x"]["fn"].event_shape == X_SHAPE
    assert model_trace.nodes["x"]["fn"].batch_shape == (5,)
    frames = [f.name for f in model_trace.nodes["x"]["cond_indep_stack"]]
    assert frames == ["data"]
    # the model's z is the guide's z (replay): this is how Trace_ELBO pairs log p(x, z) with log q(z|x)
    assert model_trace.nodes["z"]["value"] is guide_trace.nodes["z"]["value"]


@pytest.mark.parametrize("guide", GUIDES.names())
def test_guide_is_reparameterized_and_gradients_reach_the_encoder(guide):
    vae = small_vae(guide=guide)
    x = binary_batch()
    q = vae.encode(x)
    assert q.has_rsample
    assert q.event_shape == (3,)
    z = q.rsample()
    z.sum().backward()  # z = μ + σ ⊙ ε depends on the encoder's weights
    grads = [p.grad for p in vae.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("prior", PRIORS.names())
def test_prior_has_latent_event_shape(prior):
    vae = small_vae(prior=prior, z_dim=4)
    p = vae.prior()
    assert p.event_shape == (4,)
    assert p.sample((7,)).shape == (7, 4)


def test_sample_and_reconstruct_shapes_and_ranges():
    vae = small_vae()
    samples = vae.sample(10)
    assert samples.shape == (10, *X_SHAPE)
    assert ((samples > 0) & (samples < 1)).all()  # E[x|z] = sigmoid(logits)
    binary = vae.sample(10, mean=False)
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    x = binary_batch(4)
    assert vae.reconstruct(x).shape == x.shape


def _data_for(likelihood):
    if LIKELIHOODS[likelihood].factory.data == "binary":
        return binary_batch(6)
    return torch.rand(6, *X_SHAPE)


#: every supported prior × guide × objective (Bernoulli likelihood), and every likelihood × objective
#: (standard normal prior, diagonal guide): a new entry of any registry is tested for free.
COMBINATIONS = sorted(
    {(prior, guide, "bernoulli", objective)
     for (prior, guide), objective in itertools.product(supported_pairs(PRIORS.names(), GUIDES.names()),
                                                        OBJECTIVES.names())}
    | {("standard_normal", "diagonal_normal", likelihood, objective)
       for likelihood, objective in itertools.product(LIKELIHOODS.names(), OBJECTIVES.names())})


@pytest.mark.parametrize("prior,guide,likelihood,objective", COMBINATIONS)
def test_every_combination_trains(prior, guide, likelihood, objective):
    """A few steps of every combination: finite losses, parameters move, and the loss goes down on
    a fixed batch."""
    vae = small_vae(prior, guide, likelihood)
    x = _data_for(likelihood)
    loss = make_objective(objective, {"num_particles": 4})(vae.model, vae.guide)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in vae.parameters()]
    values = []
    for _ in range(20):
        optimizer.zero_grad()
        value = loss(x)
        value.backward()
        optimizer.step()
        values.append(value.item())
    assert all(torch.isfinite(torch.tensor(values)))
    assert any((p.detach() != b).any() for p, b in zip(vae.parameters(), before))
    assert sum(values[-5:]) / 5 < sum(values[:5]) / 5


def test_module_form_loss_equals_svi_loss_under_the_same_seed():
    """The training loop's ELBOModule gives the same number as Pyro's SVI loss with the same seed."""
    vae = small_vae()
    x = binary_batch()
    objective = make_objective("elbo", {"num_particles": 3})
    pyro.set_rng_seed(5)
    module_loss = objective(vae.model, vae.guide)(x).item()
    pyro.set_rng_seed(5)
    svi_loss = objective.loss(vae.model, vae.guide, x)
    assert module_loss == pytest.approx(svi_loss, rel=1e-6)


def test_bad_options_are_rejected_with_the_pieces_name():
    with pytest.raises(ConfigError, match="option 'scale' of likelihood 'gaussian' must be > 0") as error:
        build_vae(make_config(X_SHAPE, 3, likelihood="gaussian", options={"likelihood": {"scale": -1.0}}))
    assert (error.value.field, error.value.option) == ("likelihood_options", "scale")
    with pytest.raises(ValueError, match="Gaussian scale"):  # the piece's own check, for direct construction
        GaussianLikelihood(X_SHAPE, -1.0, False, 0.01)
    with pytest.raises(ValueError, match="option 'scale' of likelihood 'gaussian' takes a finite number"):
        make_config(X_SHAPE, 3, likelihood="gaussian", options={"likelihood": {"scale": "big"}})
    with pytest.raises(ValueError, match="takes a finite number, got nan"):
        make_config(X_SHAPE, 3, likelihood="gaussian", options={"likelihood": {"scale": float("nan")}})
    with pytest.raises(ValueError, match="no option"):
        make_config(X_SHAPE, 3, options={"prior": {"k": 5}})
    with pytest.raises(KeyError, match="unknown prior"):
        make_config(X_SHAPE, 3, prior="nope")
    with pytest.raises(ValueError, match="num_particles"):
        make_objective("elbo", {"num_particles": 0})
