"""Cost of the path-derivative estimators (STL, DReG) with the flow guide, against its plain step.

    python benchmarks/flow_path_cost.py [--cuda] [--batch-size 128] [--steps 20]

The 784-400-50 MLP VAE with the ``iaf`` guide (two steps, hidden 128), Bernoulli likelihood,
Adam, Pyro validation off. Rows: ``elbo`` and ``iwae`` (the plain estimators), ``elbo_stl`` and
``iwae_dreg`` as training runs them (the flow's ``path_log_prob``: each step's triangular system
solved in blocks from the network's weights, no inverse), and the same two with log q_φ(sg(z)) taken the generic way, which
inverts the flow (z_dim sequential network passes; DReG that way was also biased, see
:meth:`pyro_vae.guides.iaf.FlowPosterior.path_log_prob`). Milliseconds per step, each loss's fastest
of 5 interleaved rounds (``benchmarks/step_cost.py``'s ``time_steps``), and the ratio to the plain
estimator with the same number of particles, all measured in this one run.
"""

import argparse
import contextlib
import importlib.util
from pathlib import Path

import pyro
import torch

from pyro_vae import build_vae, make_config, make_objective
from pyro_vae.guides.iaf import FlowPosterior


def load_step_cost():
    spec = importlib.util.spec_from_file_location("step_cost", Path(__file__).with_name("step_cost.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def inverting():
    """The flow guide without its ``path_log_prob``: the generic path-only log q, which inverts the flow."""
    saved = FlowPosterior.path_log_prob
    del FlowPosterior.path_log_prob
    try:
        yield
    finally:
        FlowPosterior.path_log_prob = saved


class Inverting(torch.nn.Module):
    """A loss module that runs ``loss`` with the flow's path derivative taken by inversion."""

    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def forward(self, x):
        with inverting():
            return self.loss(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round (5 rounds)")
    parser.add_argument("--particles", type=int, default=5, help="K of iwae and iwae_dreg")
    args = parser.parse_args()
    device = torch.device("cuda" if args.cuda else "cpu")
    pyro.enable_validation(False)
    pyro.set_rng_seed(0)
    vae = build_vae(make_config((1, 28, 28), 50, guide="iaf", options={"net": {"hidden_dims": [400]}})).to(device)
    x = torch.bernoulli(torch.full((args.batch_size, 1, 28, 28), 0.13, device=device))
    k = args.particles
    rows = [("elbo", 1, "plain", None), ("elbo_stl", 1, "path_log_prob", "elbo"), ("elbo_stl", 1, "inverse", "elbo"),
            ("iwae", k, "plain", None), ("iwae_dreg", k, "path_log_prob", "iwae"), ("iwae_dreg", k, "inverse", "iwae")]
    losses = []
    for name, particles, how, _ in rows:
        loss = make_objective(name, {"num_particles": particles})(vae.model, vae.guide)
        losses.append(Inverting(loss) if how == "inverse" else loss)
    times = load_step_cost().time_steps(losses, vae, x, args.steps, device, rounds=5)
    plain = {name: ms for (name, _, how, _), ms in zip(rows, times) if how == "plain"}
    print(f"device: {torch.cuda.get_device_name() if args.cuda else 'cpu'}, torch {torch.__version__}, "
          f"pyro {pyro.__version__}, threads {torch.get_num_threads()}, batch {args.batch_size}")
    print("| objective | K | log q of the path | ms per step | ratio to the plain estimator |")
    print("| --- | ---: | --- | ---: | ---: |")
    for (name, particles, how, baseline), ms in zip(rows, times):
        ratio = ms / plain[baseline] if baseline else 1.0
        print(f"| {name} | {particles} | {how} | {ms:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
