"""Cost of the two-layer model (pyro_vae.hierarchical) against one-layer models of its parts.

    python benchmarks/hierarchical_cost.py [--cuda] [--batch-size 20] [--steps 30] [--images 20]

Burda et al.'s architecture (arXiv:1509.00519, Sec. 5): x → 200 → 200 → z1 (100) → 100 → 100 → z2 (50),
tanh, Bernoulli p(x|z1), Gaussian layers. Two ratios, all numbers measured in this one run (the
fastest of interleaved rounds):

1. a training step of the two-layer model against the *sum* of its layers' one-layer steps: layer 1
   is the one-layer VAE x ↔ z1 (784-200-200-100), layer 2 a one-layer VAE on 100-dimensional inputs
   z1 ↔ z2 (100-100-100-50, Gaussian likelihood); target ≤ 1.3 ×, per objective;
2. importance sampling with K = 5000 per image (:func:`pyro_vae.log_weights`, chunks of 500) for the
   two-layer model against the one-layer VAE with the same x ↔ z1 nets (equal decoder size);
   target ≤ 1.5 ×.
"""

import argparse
import time

import pyro
import torch

from pyro_vae import build_vae, log_weights, make_config, make_objective
from pyro_vae.train import make_adam

MLP = {"hidden_dims": [200, 200], "activation": "tanh"}
UPPER = {"upper_z_dims": [50], "upper_hidden_dims": [100, 100], "upper_activation": "tanh"}


def models(device):
    two = build_vae(make_config((1, 28, 28), 100, net="mlp", model="hierarchical",
                                options={"net": MLP, "model": UPPER})).to(device)
    layer1 = build_vae(make_config((1, 28, 28), 100, options={"net": MLP})).to(device)
    layer2 = build_vae(make_config((100,), 50, likelihood="gaussian",
                                   options={"net": {"hidden_dims": [100, 100], "activation": "tanh"}})).to(device)
    return two, layer1, layer2


def step_timer(vae, objective, options, x):
    loss = make_objective(objective, options)(vae.model, vae.guide)
    optimizer = make_adam(vae.parameters(), lr=1e-4, eps=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss(x).backward()
        optimizer.step()

    return step


def seconds(fn, repeats: int, device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--images", type=int, default=20, help="images for the K = 5000 importance sampling")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if args.cuda else "cpu")
    pyro.enable_validation(False)
    torch.manual_seed(0)
    two, layer1, layer2 = models(device)
    x = torch.rand(args.batch_size, 1, 28, 28, device=device).bernoulli()
    z1 = torch.rand(args.batch_size, 100, device=device)
    print(f"device: {torch.cuda.get_device_name(device) if args.cuda else 'cpu'}, threads {torch.get_num_threads()}, "
          f"batch {args.batch_size}, fastest of {args.rounds} rounds")
    print("\n| objective | two-layer step (ms) | layer 1 (ms) | layer 2 (ms) | two / (1 + 2) | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    for objective, options in (("elbo", {}), ("mean_field", {}), ("iwae", {"num_particles": 5}),
                               ("iwae_dreg", {"num_particles": 5}), ("elbo_stl", {})):
        timers = [step_timer(two, objective, options, x), step_timer(layer1, objective, options, x),
                  step_timer(layer2, objective, options, z1)]
        best = [min(seconds(t, args.steps, device) for _ in range(args.rounds)) for t in timers]
        label = objective + (f" K={options['num_particles']}" if options else "")
        print(f"| {label} | {1e3 * best[0]:.2f} | {1e3 * best[1]:.2f} | {1e3 * best[2]:.2f} | "
              f"{best[0] / (best[1] + best[2]):.2f} × | ≤ 1.3 × |")

    images = torch.rand(args.images, 1, 28, 28, device=device).bernoulli()
    with torch.no_grad():
        costs = [min(seconds(lambda v=vae: log_weights(v, images, 5000, chunk_size=500), 1, device)
                     for _ in range(args.rounds)) for vae in (two, layer1)]
    print("\n| IS, K = 5000 | two-layer (ms / image) | one-layer, same x↔z1 nets (ms / image) | ratio | target |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| log_weights, chunks of 500 | {1e3 * costs[0] / args.images:.1f} | {1e3 * costs[1] / args.images:.1f} | "
          f"{costs[0] / costs[1]:.2f} × | ≤ 1.5 × |")


if __name__ == "__main__":
    main()
