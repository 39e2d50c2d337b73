"""The benchmark's hand-written baselines compute exactly the math of the Pyro objectives they are
timed against: same loss and same gradients under the same seed (same ε draws)."""

import importlib.util

import pyro
import pytest
import torch

from pyro_vae import build_vae, make_config, make_objective

from .conftest import REPO


def load_step_cost():
    spec = importlib.util.spec_from_file_location("step_cost", REPO / "benchmarks" / "step_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,k", [("elbo", 1), ("elbo", 3), ("mean_field", 1), ("iwae", 5)])
def test_hand_written_baseline_is_the_same_estimator(name, k):
    step_cost = load_step_cost()
    vae = build_vae(make_config((1, 28, 28), 8, options={"net": {"hidden_dims": [32]}})).double()
    x = torch.bernoulli(torch.full((6, 1, 28, 28), 0.13, dtype=torch.float64))
    results = []
    for loss in (step_cost.hand_written(vae, name, k), make_objective(name, {"num_particles": k})(vae.model, vae.guide)):
        pyro.set_rng_seed(0)
        vae.zero_grad()
        value = loss(x)
        value.backward()
        results.append((value.detach(), [p.grad.clone() for p in vae.parameters()]))
    (hand_value, hand_grads), (pyro_value, pyro_grads) = results
    torch.testing.assert_close(hand_value, pyro_value, rtol=1e-12, atol=1e-9)
    for a, b in zip(hand_grads, pyro_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
