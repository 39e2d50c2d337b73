"""GPU-readiness without a GPU: every registered prior × guide × likelihood × objective takes a
training step and an evaluation on ``torch.device("meta")``.

Meta tensors have shapes and dtypes but no values. So a step that runs there creates no tensor on a
fixed device (mixing a CPU tensor into it is an error), and it reads no value back to Python:
``.item()``, ``bool(tensor)``, ``.tolist()`` and every data-dependent shape (``nonzero``, boolean-mask
indexing) raise. On a GPU each of those is a device-to-host synchronization, so this is how
``--device cuda`` is kept honest on machines without one.

What is left out, and why:

* the *fused* Adam kernel has no meta implementation (it raises at ``step()``), so the step here
  is torch's per-parameter Adam, the same update rule; on a GPU the fused kernel runs;
* evaluation stops before its results come back to the host: the ``.cpu()`` at the end of
  :func:`pyro_vae.evaluate` and the PSIS fit (NumPy, in arviz) need values, once per evaluation,
  not once per step;
* the value checks of the data against the likelihood's support (:meth:`pyro_vae.VAE.check_images`)
  read the data once, up front, by design (``VAE._check_x`` skips them on meta).
"""

import itertools
import warnings

import pyro
import pytest
import torch

from pyro_vae import GUIDES, LIKELIHOODS, OBJECTIVES, PRIORS, build_vae, make_config, make_objective
from pyro_vae.bounds import iwae_bound
from pyro_vae.data import ImageData, Split
from pyro_vae.errors import ConfigError
from pyro_vae.evaluate import log_weights

META = torch.device("meta")
X_SHAPE = (1, 6, 6)
COMBINATIONS = list(itertools.product(PRIORS.names(), GUIDES.names(), LIKELIHOODS.names()))


def _objective_options(name: str) -> dict:
    options = {"num_particles": 3}
    if name in ("elbo", "mean_field"):
        options["kl_warmup_steps"] = 10  # the warm-up's site scale is on the path too
    return options


def meta_vae(prior: str, guide: str, likelihood: str):
    """The model built on the CPU and moved to meta (``None`` for a combination the library refuses
    to build, whose refusal ``tests/test_combinations.py`` checks)."""
    options = {"net": {"hidden_dims": [8]}, "prior": {"num_components": 3} if prior in ("vamp", "mixture") else {}}
    config = make_config(X_SHAPE, 3, prior=prior, guide=guide, likelihood=likelihood, options=options)
    try:
        return build_vae(config).to(META)
    except ConfigError:
        return None


@pytest.fixture(autouse=True)
def no_validation():
    """Pyro's validation checks argument values (a read-back by design); runs switch it off."""
    with pyro.validation_enabled(False):
        yield


@pytest.mark.parametrize("prior,guide,likelihood", COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS])
def test_every_objective_steps_and_evaluates_on_the_meta_device(prior, guide, likelihood):
    vae = meta_vae(prior, guide, likelihood)
    if vae is None:
        pytest.skip(f"{prior} × {guide} is refused at construction")
    _step_every_objective_and_evaluate(vae)


def _step_every_objective_and_evaluate(vae) -> None:
    """A training step of every objective, then log w and the IWAE bound, all on meta."""
    x = torch.empty(5, *X_SHAPE, device=META)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3, foreach=False)  # see the module's docstring
    for name in OBJECTIVES.names():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            loss = make_objective(name, _objective_options(name))(vae.model, vae.guide)
        optimizer.zero_grad(set_to_none=True)
        value = loss(x)
        value.backward()
        optimizer.step()
        assert value.device == META and value.shape == (), name
        assert all(p.grad is None or p.grad.device == META for p in vae.parameters()), name
    log_w = log_weights(vae, x, num_samples=4, chunk_size=2)
    assert log_w.shape == (4, 5) and log_w.device == META
    assert iwae_bound(log_w).shape == (5,)


@pytest.mark.parametrize("prior", ["standard_normal", "learned_normal", "mixture", "flow"])
def test_the_hierarchical_model_steps_and_evaluates_on_the_meta_device(prior):
    """model=hierarchical (two layers): every objective, log w over both sites, on meta."""
    options = {"net": {"hidden_dims": [8]}, "prior": {"num_components": 3} if prior == "mixture" else {},
               "model": {"upper_z_dims": [2], "upper_hidden_dims": [4]}}
    vae = build_vae(make_config(X_SHAPE, 3, prior=prior, model="hierarchical", options=options)).to(META)
    _step_every_objective_and_evaluate(vae)


def test_an_epoch_of_batches_is_drawn_on_the_meta_device():
    """The training data's permutation and dynamic binarization happen on the data's device."""
    images = torch.empty(10, *X_SHAPE, device=META)
    split = Split(images, torch.empty(10, dtype=torch.long, device=META))
    data = ImageData(split, split, split, "dynamic", "mnist")
    batches = list(data.train_batches(4))
    assert [b.shape[0] for b in batches] == [4, 4, 2] and all(b.device == META for b in batches)


def test_the_meta_device_catches_a_read_back():
    """The guard itself: a value read during a step fails on meta (here Pyro's own Trace_ELBO loss,
    which calls ``.item()``), and so does the backward pass of a boolean-mask write such as torch's
    ``vec_to_tril_matrix`` (which the full-rank guide used before :func:`~pyro_vae.guides.full_rank.fill_tril`)."""
    from torch.distributions.utils import vec_to_tril_matrix

    vae = meta_vae("standard_normal", "diagonal_normal", "bernoulli")
    x = torch.empty(5, *X_SHAPE, device=META)
    with pytest.raises(RuntimeError, match="meta"):
        pyro.infer.Trace_ELBO(max_plate_nesting=1).loss(vae.model, vae.guide, x)
    with pytest.raises((NotImplementedError, RuntimeError)):
        vec_to_tril_matrix(torch.empty(5, 6, device=META, requires_grad=True)).sum().backward()
