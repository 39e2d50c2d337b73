"""Cost of the importance-sampled test log-likelihood: throughput and peak memory against chunk size.

    python benchmarks/eval_cost.py [--cuda] [--images 100] [--k 5000]

Evaluates log p(x) ≈ logsumexp_k log w_k − log K (:func:`pyro_vae.evaluate`) for ``--images`` MNIST-
shaped binary images with K = ``--k`` importance samples, with particles processed in chunks of
different sizes (``--max-rows``: particles × images evaluated at once). Each setting runs in a fresh
process, so that its peak memory is its own: peak resident memory on the CPU (``ru_maxrss``), peak
allocated memory on the GPU (``torch.cuda.max_memory_allocated``). Prints images × K per second and
peak memory, with ratios to the first setting, all measured in this one run.
"""

import argparse
import time

from isolated import peak_memory, run_isolated


def measure(cuda: bool, images: int, k: int, max_rows: int, queue) -> None:
    import pyro
    import torch

    from pyro_vae import build_vae, evaluate, make_config

    device = torch.device("cuda" if cuda else "cpu")
    pyro.enable_validation(False)
    pyro.set_rng_seed(0)
    vae = build_vae(make_config((1, 28, 28), 50, options={"net": {"hidden_dims": [400]}})).to(device)
    x = torch.bernoulli(torch.full((images, 1, 28, 28), 0.13, device=device))
    batch_size = min(images, 100)
    chunk_size = max(1, max_rows // batch_size)  # particles per chunk
    evaluate(vae, x[:batch_size], 10, batch_size)  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    evaluate(vae, x, k, batch_size, chunk_size=chunk_size)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    queue.put((seconds, peak_memory(cuda)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--max-rows", type=int, nargs="+", default=[25_000, 1_000, 5_000, 100_000, 500_000],
                        help="particles × images per chunk (the default is pyro_vae.evaluate.MAX_ROWS: 5,000 "
                             "on the CPU, 25,000 elsewhere); 500,000 is no chunking at the defaults (100 images "
                             "× K = 5000). Ratios are to the first.")
    args = parser.parse_args()
    results = {max_rows: run_isolated(measure, args.cuda, args.images, args.k, max_rows) for max_rows in args.max_rows}
    memory = "peak GPU memory allocated" if args.cuda else "peak resident memory (whole process)"
    print(f"{args.images} images × K = {args.k}, batches of {min(args.images, 100)} images, "
          f"{'cuda' if args.cuda else 'cpu'}")
    print(f"| particles × images per chunk | images × K per second | {memory}, MiB | time ratio | memory ratio |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    base_seconds, base_peak = results[args.max_rows[0]]
    for max_rows, (seconds, peak) in results.items():
        print(f"| {max_rows} | {args.images * args.k / seconds:,.0f} | {peak / 2 ** 20:,.0f} | "
              f"{seconds / base_seconds:.2f} | {peak / base_peak:.2f} |")


if __name__ == "__main__":
    main()
