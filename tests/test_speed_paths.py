"""The training path's speed-ups change no number: the sync-free ``elbo`` and ``mean_field`` give
Pyro's Trace_ELBO / TraceMeanField_ELBO loss and gradients at the same parameters and seed, and
no objective reads a value back to Python (a host synchronization on a GPU) during a step."""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import constraints

from pyro_vae import OBJECTIVES, build_vae, make_config, make_objective
from pyro_vae.objectives.kl_weight import KLWeighted

PLAIN = {"elbo": Trace_ELBO, "mean_field": TraceMeanField_ELBO}


def small_vae(**pieces):
    config = make_config((1, 28, 28), 4, **pieces, options={"net": {"hidden_dims": [16]}})
    return build_vae(config).double()


def value_and_grads(loss, parameters, x, seed=5):
    pyro.set_rng_seed(seed)
    for parameter in parameters:
        parameter.grad = None
    value = loss(x)
    value.backward()
    return value.detach(), [parameter.grad.clone() for parameter in parameters]


def assert_same(ours, plain):
    (value, grads), (plain_value, plain_grads) = ours, plain
    torch.testing.assert_close(value, plain_value, rtol=1e-12, atol=1e-9)
    assert len(grads) == len(plain_grads)
    for grad, plain_grad in zip(grads, plain_grads):
        torch.testing.assert_close(grad, plain_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("num_particles", [1, 4])
@pytest.mark.parametrize("options", [{}, {"prior": "mixture"}, {"guide": "full_rank"}, {"beta": 0.5}],
                         ids=["default", "mixture-prior", "full-rank-guide", "beta"])
@pytest.mark.parametrize("name", ["elbo", "mean_field"])
def test_sync_free_objective_equals_pyros_at_the_same_parameters_and_seed(name, options, num_particles):
    """Pyro's own ELBO classes are the plain path; same traces, so the same ε: the loss and every
    gradient agree to rounding. The mixture prior has no closed-form KL (mean_field samples it),
    the full-rank guide a registered one, and β weights the KL term through site scales."""
    beta = options.get("beta", 1.0)
    vae = small_vae(**{key: value for key, value in options.items() if key != "beta"})
    x = torch.bernoulli(torch.full((6, 1, 28, 28), 0.2, dtype=torch.float64))
    parameters = list(vae.parameters())
    ours = make_objective(name, {"num_particles": num_particles, "beta": beta})(vae.model, vae.guide)
    plain_elbo = PLAIN[name](num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    plain = KLWeighted(plain_elbo, beta, 0)(vae.model, vae.guide) if beta != 1.0 else plain_elbo(vae.model, vae.guide)
    assert_same(value_and_grads(ours, parameters, x), value_and_grads(plain, parameters, x))


def test_sync_free_elbo_keeps_pyros_score_function_gradient_for_a_discrete_guide():
    """A guide that is not reparameterized (a Bernoulli latent) gets Trace_ELBO's surrogate:
    same value, same gradient (the score-function term) as Pyro's."""
    x = torch.tensor([0.3, -1.2, 2.0, 0.8], dtype=torch.float64)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(torch.tensor(0.4, dtype=torch.float64)))
            pyro.sample("x", dist.Normal(2.0 * z, 1.0), obs=x)

    def guide(x):
        probs = pyro.param("probs", torch.full((len(x),), 0.5, dtype=torch.float64), constraint=constraints.unit_interval)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(probs))

    guide(x)  # create the parameter
    parameters = [pyro.param("probs").unconstrained()]
    ours = make_objective("elbo", {"num_particles": 3})(model, guide)
    plain = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)(model, guide)
    assert_same(value_and_grads(ours, parameters, x), value_and_grads(plain, parameters, x))
    assert parameters[0].grad.abs().sum() > 0


#: The ways a tensor's value is read into Python; on a GPU each waits for the device.
HOST_READS = ("item", "__bool__", "__float__", "__int__", "tolist")


class HostRead(RuntimeError):
    pass


@pytest.fixture
def no_host_reads(monkeypatch):
    """While active, reading a tensor's value into Python (``.item()``, ``bool``, ``float``, ``int``,
    ``.tolist()``) raises: on a GPU each such read waits for the device."""

    def forbid(name):
        def read(*args, **kwargs):
            raise HostRead(f"Tensor.{name} during a training step")
        return read

    def install():
        for name in HOST_READS:
            monkeypatch.setattr(torch.Tensor, name, forbid(name))

    return install


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_no_objective_reads_a_value_back_during_a_training_step(name, no_host_reads):
    pyro.enable_validation(False)  # as in training runs; validation checks values on purpose
    vae = small_vae()
    x = torch.bernoulli(torch.full((6, 1, 28, 28), 0.2, dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loss = make_objective(name, {"num_particles": 3})(vae.model, vae.guide)
    no_host_reads()
    loss(x).backward()
    assert all(parameter.grad is not None for parameter in vae.encoder.parameters())


def test_the_host_read_guard_catches_pyros_own_trace_elbo(no_host_reads):
    """The guard can fail: Pyro's Trace_ELBO.differentiable_loss reads values back."""
    pyro.enable_validation(False)
    vae = small_vae()
    x = torch.bernoulli(torch.full((6, 1, 28, 28), 0.2, dtype=torch.float64))
    loss = Trace_ELBO(max_plate_nesting=1)(vae.model, vae.guide)
    no_host_reads()
    with pytest.raises(HostRead):
        loss(x)


@pytest.mark.parametrize("progress,expected_reads", [(False, 2), (True, 2 * (2 + 1))])
def test_fit_reads_the_loss_once_per_epoch_and_per_progress_refresh(progress, expected_reads, monkeypatch):
    """Two epochs of 10 steps: the loss is summed on the device and read at the end of each epoch,
    and, with a progress bar refreshed every 5 steps, at each refresh; never per step (the
    optimizer included)."""
    from pyro_vae import fit
    from pyro_vae.train import make_adam

    pyro.enable_validation(False)
    vae = small_vae()
    x = torch.bernoulli(torch.full((40, 1, 28, 28), 0.2, dtype=torch.float64))
    loss = make_objective("elbo")(vae.model, vae.guide)
    optimizer = make_adam(vae.parameters())
    reads = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _read=original, **kwargs):
            reads.append(_name)
            return _read(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    fit(loss, optimizer, lambda: x.split(4), 2, progress=progress, verbose=False, refresh_every=5)
    assert len(reads) == expected_reads, reads


@pytest.mark.parametrize("guide", ["diagonal_normal", "iaf"])
def test_a_keyed_training_step_reads_no_value_back(guide, no_host_reads):
    """The run's step: its shard of a keyed permutation, keyed binarization and keyed guide noise
    (pyro_vae.distributed, pyro_vae.noise) add no read of a tensor's value."""
    from pyro_vae import distributed
    from pyro_vae.noise import StepNoise

    pyro.enable_validation(False)
    vae = small_vae(guide=guide)
    data = torch.full((20, 1, 28, 28), 0.2, dtype=torch.float64)
    step_noise = StepNoise()
    loss = distributed.KeyedLoss(vae, make_objective("elbo", {"num_particles": 3})(vae.model, vae.guide), step_noise)
    no_host_reads()
    for x in distributed.epoch_batches(data, 8, seed=0, epoch=1, world=distributed.World(), step_noise=step_noise,
                                       dynamic=True):
        loss(x).backward()
    assert all(parameter.grad is not None for parameter in vae.encoder.parameters())
