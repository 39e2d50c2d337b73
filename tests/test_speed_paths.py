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


# -- the library's distribution objects against Pyro's plain ones ---------------------------------

def generic_pieces():
    """While active, the default guide, prior and likelihood return Pyro's generic distributions,
    the reference for the library's cheaper ones (:class:`DiagonalNormal`, :class:`StandardNormal`,
    :class:`IndependentBernoulli`): the swap ``benchmarks/step_cost.py`` times."""
    from .test_benchmarks import load_step_cost

    return load_step_cost().generic_distributions()


@pytest.mark.parametrize("num_particles", [1, 4])
@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_the_cheaper_distributions_give_the_numbers_of_pyros_plain_ones(name, num_particles):
    """Every objective, at the same parameters and seed, with the library's guide, prior and
    likelihood against the same pieces returning Pyro's ``Normal(...).to_event(1)`` and
    ``Bernoulli(logits).to_event(3)``: the same ε, so the same loss and gradients to float64
    rounding. STL and DReG take the plain pieces' generic path-derivative route."""
    vae = small_vae()
    x = torch.bernoulli(torch.full((6, 1, 28, 28), 0.2, dtype=torch.float64))
    parameters = list(vae.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loss = make_objective(name, {"num_particles": num_particles})(vae.model, vae.guide)
    ours = value_and_grads(loss, parameters, x)
    assert type(pyro.poutine.trace(vae.guide).get_trace(x).nodes["z"]["fn"]).__name__ == "DiagonalNormal"
    with generic_pieces():
        assert type(pyro.poutine.trace(vae.guide).get_trace(x).nodes["z"]["fn"]).__name__ == "Independent"
        plain = value_and_grads(loss, parameters, x)
    (value, grads), (plain_value, plain_grads) = ours, plain
    torch.testing.assert_close(value, plain_value, rtol=1e-12, atol=1e-9)
    for grad, plain_grad in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(grad, plain_grad, rtol=1e-9, atol=1e-10)


def test_the_cheaper_distributions_give_pyros_numbers_under_the_runs_keyed_noise():
    """The training step of a run (keyed ε through GuideNoise): DiagonalNormal.reparameterize against
    the generic noise map of a plain Normal."""
    from pyro_vae import distributed
    from pyro_vae.noise import StepNoise

    vae = small_vae()
    x = torch.bernoulli(torch.full((6, 1, 28, 28), 0.2, dtype=torch.float64))
    parameters = list(vae.parameters())
    step_noise = StepNoise()
    step_noise.key, step_noise.start = (3, 1, 0), 0
    loss = distributed.KeyedLoss(vae, make_objective("iwae_dreg", {"num_particles": 3})(vae.model, vae.guide),
                                 step_noise)
    ours = value_and_grads(loss, parameters, x)
    with generic_pieces():
        plain = value_and_grads(loss, parameters, x, seed=99)  # the keyed noise does not depend on the seed
    torch.testing.assert_close(ours[0], plain[0], rtol=1e-12, atol=1e-9)
    for grad, plain_grad in zip(ours[1], plain[1], strict=True):
        torch.testing.assert_close(grad, plain_grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("loc_size,scale_size", [(0.0, 1.0), (30.0, 1e-3), (1e3, 1e-4)],
                         ids=["unit", "far-narrow", "very-far-very-narrow"])
def test_diagonal_normal_log_q_of_its_own_draw(loc_size, scale_size):
    """log q(z) of a draw from ε, against Normal.log_prob at z computed in float64 from the same
    float32 z: the value (to float32 rounding of that z) and the total gradients in μ and σ."""
    from pyro_vae.guides.diagonal_normal import DiagonalNormal

    torch.manual_seed(0)
    loc = (loc_size * torch.randn(5, 7)).requires_grad_()
    scale = (scale_size * (0.5 + torch.rand(5, 7))).requires_grad_()
    q = DiagonalNormal(loc, scale).expand([3, 5])  # a particle plate's expansion keeps the class
    assert isinstance(q, DiagonalNormal) and q.batch_shape == (3, 5)
    z = q.rsample()
    ours = q.log_prob(z)
    # the reference: Normal.log_prob in float64 at the same z, as a function of (μ, σ)
    loc64, scale64 = loc.detach().double().requires_grad_(), scale.detach().double().requires_grad_()
    eps64 = ((z.detach().double() - loc64.detach()) / scale64.detach())
    z64 = loc64 + eps64 * scale64
    reference = dist.Normal(loc64, scale64).to_event(1).log_prob(z64)
    # float32 z carries a relative error 2^-24 · |μ| / σ in ε; allow for it
    tolerance = 1e-4 + 7 * 2 * (loc_size / scale_size + 3) ** 2 * 2.0 ** -24
    torch.testing.assert_close(ours.double(), reference.detach(), rtol=0, atol=tolerance)
    grads = torch.autograd.grad(ours.sum(), [loc, scale], allow_unused=True)
    ref_grads = torch.autograd.grad(reference.sum(), [loc64, scale64])
    assert grads[0] is None  # ∂/∂μ of log q(μ + σε) is exactly 0: μ is not used
    torch.testing.assert_close(ref_grads[0], torch.zeros_like(ref_grads[0]), rtol=0, atol=1e-6 / scale_size)
    torch.testing.assert_close(grads[1].double(), ref_grads[1], rtol=1e-5, atol=0)


def test_diagonal_normal_other_values_and_path_log_prob():
    """Values that are not its own draw go through Normal.log_prob; ``path_log_prob`` has log q's
    value with a gradient through z only, equal to ∇_z log q = −(z − μ)/σ²."""
    from pyro_vae.guides.diagonal_normal import DiagonalNormal

    torch.manual_seed(1)
    loc, scale = torch.randn(4, 3, requires_grad=True), (0.2 + torch.rand(4, 3)).requires_grad_()
    q = DiagonalNormal(loc, scale)
    plain = dist.Normal(loc, scale).to_event(1)
    other = torch.randn(4, 3)
    torch.testing.assert_close(q.log_prob(other), plain.log_prob(other), rtol=0, atol=0)
    z = q.rsample()
    torch.testing.assert_close(q.log_prob(z.clone()), plain.log_prob(z), rtol=0, atol=0)  # a copy is another value
    with torch.no_grad():
        moved = q.rsample()
        moved.add_(3.0)  # the draw changed in place: its ε no longer applies
    torch.testing.assert_close(q.log_prob(moved), plain.log_prob(moved), rtol=0, atol=0)
    path = q.path_log_prob(z)
    torch.testing.assert_close(path, plain.log_prob(z), rtol=1e-6, atol=1e-5)
    z_leaf = z.detach().requires_grad_()
    (grad_z,) = torch.autograd.grad(q.path_log_prob(z_leaf).sum(), z_leaf)
    torch.testing.assert_close(grad_z, -(z_leaf - loc) / scale ** 2, rtol=1e-5, atol=1e-6)
    assert not q.path_log_prob(z.detach()).requires_grad  # nothing reaches μ and σ except through z


@pytest.mark.parametrize("shape", [(6,), (3, 6)])
def test_standard_normal_and_bernoulli_log_densities_equal_pyros(shape):
    from pyro_vae.likelihoods.bernoulli import BernoulliLikelihood
    from pyro_vae.priors.standard_normal import StandardNormal, StandardNormalPrior

    torch.manual_seed(2)
    prior = StandardNormalPrior(4)().expand(shape)
    assert isinstance(prior, StandardNormal)
    z = 4 * torch.randn(*shape, 4, dtype=torch.float64)
    torch.testing.assert_close(prior.log_prob(z), dist.Normal(0.0, 1.0).expand([4]).to_event(1).log_prob(z).expand(shape))
    logits = 3 * torch.randn(*shape, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    x = torch.bernoulli(torch.full((6, 1, 5, 5), 0.4, dtype=torch.float64))  # broadcast against (3, 6)
    ours = BernoulliLikelihood((1, 5, 5))(logits).log_prob(x)
    plain = dist.Bernoulli(logits=logits).to_event(3).log_prob(x)
    torch.testing.assert_close(ours, plain, rtol=1e-14, atol=0)
    torch.testing.assert_close(torch.autograd.grad(ours.sum(), logits)[0], torch.autograd.grad(plain.sum(), logits)[0])


def test_the_bernoulli_likelihood_still_validates_its_support():
    from pyro_vae.likelihoods.bernoulli import BernoulliLikelihood

    pyro.enable_validation(True)
    p = BernoulliLikelihood((1, 2, 2))(torch.zeros(3, 1, 2, 2))
    with pytest.raises(ValueError, match="support"):
        p.log_prob(torch.full((3, 1, 2, 2), 0.5))


def test_mean_field_takes_the_kl_of_appendix_b_for_the_default_pieces():
    """KL(DiagonalNormal ‖ StandardNormal) dispatches to the derivation's formula (bounds.gaussian_kl),
    equal to torch's generic Normal-Normal rule; another q still gets torch's rule."""
    from torch.distributions import kl_divergence
    from torch.distributions.kl import _dispatch_kl

    from pyro_vae.bounds import gaussian_kl
    from pyro_vae.guides.diagonal_normal import DiagonalNormal
    from pyro_vae.priors.standard_normal import StandardNormal, StandardNormalPrior, kl_diagonal_standard_normal

    assert _dispatch_kl(DiagonalNormal, StandardNormal) is kl_diagonal_standard_normal
    torch.manual_seed(3)
    loc, scale = torch.randn(5, 3, dtype=torch.float64), 0.1 + torch.rand(5, 3, dtype=torch.float64)
    prior = StandardNormalPrior(3).double()().expand([2, 5])
    generic = kl_divergence(dist.Normal(loc, scale).to_event(1), dist.Normal(torch.zeros(3, dtype=torch.float64),
                                                                            1.0).to_event(1).expand([2, 5]))
    ours = kl_divergence(DiagonalNormal(loc, scale), prior)
    assert ours.shape == (2, 5)
    torch.testing.assert_close(ours, generic, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours[0], gaussian_kl(loc, scale), rtol=0, atol=0)
    laplace = dist.Laplace(loc, scale).to_event(1)  # not a Gaussian q: torch's rule for the pair
    plain_prior = dist.Normal(torch.zeros(3, dtype=torch.float64), 1.0).to_event(1).expand([2, 5])
    torch.testing.assert_close(kl_divergence(laplace, prior), kl_divergence(laplace, plain_prior))
