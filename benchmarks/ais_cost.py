"""Cost of AIS (pyro_vae.ais): seconds per image and peak memory against the images per batch.

    python benchmarks/ais_cost.py [--cuda] [--images 100] [--steps 200] [--chains 16]

Runs AIS with ``--steps`` transitions (5 leapfrog steps each) and ``--chains`` chains per image on
``--images`` MNIST-shaped binary images for the 784–400–50 MLP VAE, with the images processed
``--batch-sizes`` at a time: each batch evaluates log p(x, z) and its gradient for chains × batch
latent vectors at once, so the batch size bounds the memory, as the chunk size does for the
importance-sampled evaluation (benchmarks/eval_cost.py). Each setting runs in a fresh process, so
that its peak memory is its own. Prints seconds per image and the peak memory, with ratios to the
first setting, measured in this one run; and the cost against importance sampling with K = steps ×
5 × chains log-weights per image (the same number of model evaluations, without gradients).
"""

import argparse
import time

from isolated import peak_memory, run_isolated


def measure(cuda: bool, images: int, steps: int, chains: int, batch_size: int, queue) -> None:
    import pyro
    import torch

    from pyro_vae import ais, build_vae, make_config

    device = torch.device("cuda" if cuda else "cpu")
    pyro.enable_validation(False)
    pyro.set_rng_seed(0)
    vae = build_vae(make_config((1, 28, 28), 50, options={"net": {"hidden_dims": [400]}})).to(device)
    x = torch.bernoulli(torch.full((images, 1, 28, 28), 0.13, device=device))
    ais(vae, x[:2], 2, chains, batch_size=batch_size)  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    ais(vae, x, steps, chains, batch_size=batch_size)
    if cuda:
        torch.cuda.synchronize()
    queue.put((time.perf_counter() - start, peak_memory(cuda)))


def measure_importance(cuda: bool, images: int, k: int, queue) -> None:
    import pyro
    import torch

    from pyro_vae import build_vae, evaluate, make_config

    device = torch.device("cuda" if cuda else "cpu")
    pyro.enable_validation(False)
    pyro.set_rng_seed(0)
    vae = build_vae(make_config((1, 28, 28), 50, options={"net": {"hidden_dims": [400]}})).to(device)
    x = torch.bernoulli(torch.full((images, 1, 28, 28), 0.13, device=device))
    start = time.perf_counter()
    evaluate(vae, x, k)
    queue.put((time.perf_counter() - start, peak_memory(cuda)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 10, 25],
                        help="images per AIS batch (ratios are to the first)")
    args = parser.parse_args()
    results = {size: run_isolated(measure, args.cuda, args.images, args.steps, args.chains, size)
               for size in args.batch_sizes}
    k = args.steps * 5 * args.chains
    importance = run_isolated(measure_importance, args.cuda, args.images, k)
    memory = "peak GPU memory allocated" if args.cuda else "peak resident memory (whole process)"
    print(f"AIS: {args.images} images, {args.steps} steps × 5 leapfrog steps, {args.chains} chains, "
          f"{'cuda' if args.cuda else 'cpu'}")
    print(f"| images per batch | seconds per image | {memory}, MiB | time ratio | memory ratio |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    base_seconds, base_peak = results[args.batch_sizes[0]]
    for size, (seconds, peak) in results.items():
        print(f"| {size} | {seconds / args.images:.3f} | {peak / 2 ** 20:,.0f} | {seconds / base_seconds:.2f} | "
              f"{peak / base_peak:.2f} |")
    print(f"\nimportance sampling with the same number of model evaluations (K = {k}): "
          f"{importance[0] / args.images:.3f} s per image, {importance[1] / 2 ** 20:,.0f} MiB; "
          f"AIS at batch {args.batch_sizes[0]} costs {base_seconds / importance[0]:.1f} × that")


if __name__ == "__main__":
    main()
