"""Scaling over processes: epoch time and evaluation time for 1 and 2 processes (one thread each),
and for 1 process with 2 threads, as ratios measured in this one run.

    python benchmarks/scaling.py [--steps 20] [--batch-sizes 128 1024] [--images 200] [--eval-batch 50] [--k 5000] [--repeats 2]

Each setting runs in fresh processes (``torch.multiprocessing.spawn``; 2 processes join a gloo group
on this machine, as torchrun's would). Training: ``--steps`` data-parallel steps of the default
784–400–50 MLP VAE (``elbo``, Adam) at each global batch size, through the code of a run
(:func:`pyro_vae.distributed.epoch_batches`, :class:`~pyro_vae.distributed.KeyedLoss`,
:func:`~pyro_vae.distributed.data_parallel`, :func:`pyro_vae.train.fit`), after 3 warm-up steps.
Evaluation: the importance-sampled log-likelihood of ``--images`` binary images with K = ``--k``,
sharded over the processes in whole batches of ``--eval-batch`` images
(:func:`pyro_vae.distributed.evaluate`; with fewer batches than processes, some have nothing to do). Images are synthetic
(intensities 0.13, MNIST's mean): the cost does not depend on the pixel values.

Scaling efficiency = throughput of 2 one-thread processes ÷ (2 × throughput of one one-thread
process): 1 is perfect. The settings run in turn, ``--repeats`` rounds, and each time is the
fastest of its rounds (on a shared machine the load changes from one minute to the next).
"""

import argparse
import os
import socket
import tempfile
import time


def worker(rank, size, port, threads, steps, batch_sizes, images, eval_batch, k, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import pyro
    import torch

    from pyro_vae import build_vae, distributed, make_config, make_objective
    from pyro_vae.noise import StepNoise
    from pyro_vae.train import fit, make_adam

    torch.set_num_threads(threads)
    pyro.enable_validation(False)
    results = {}
    with distributed.initialized(torch.device("cpu")) as (world, _):
        for batch in batch_sizes:
            pyro.clear_param_store()
            pyro.set_rng_seed(0)
            vae = build_vae(make_config((1, 28, 28), 50, options={"net": {"hidden_dims": [400]}}))
            data = torch.full(((steps + 3) * batch, 1, 28, 28), 0.13)
            step_noise = StepNoise()
            loss = distributed.data_parallel(
                distributed.KeyedLoss(vae, make_objective("elbo")(vae.model, vae.guide), step_noise), world,
                data[:8].bernoulli())
            optimizer = make_adam(vae.parameters())
            epoch = iter(range(1, 3))

            def batches(n, epoch=epoch, data=data, batch=batch, step_noise=step_noise):
                return distributed.epoch_batches(data[:n * batch], batch, seed=0, epoch=next(epoch), world=world,
                                                 step_noise=step_noise, dynamic=True)

            fit(loss, optimizer, lambda: batches(3), 1, progress=False, verbose=False,
                reduce=distributed.epoch_reducer(world))
            history = fit(loss, optimizer, lambda: batches(steps), 2, start_epoch=1, progress=False, verbose=False,
                          reduce=distributed.epoch_reducer(world))
            results[f"train {batch}"] = history[-1]["seconds"]
        x = torch.bernoulli(torch.full((images, 1, 28, 28), 0.13), generator=torch.Generator().manual_seed(0))
        distributed.evaluate(world, vae, x[:eval_batch * size], 10, eval_batch, seed=1)  # warm-up
        start = time.perf_counter()
        distributed.evaluate(world, vae, x, k, eval_batch, seed=0)
        results["evaluate"] = time.perf_counter() - start
    if rank == 0:
        torch.save(results, out)


def measure(size, threads, args):
    import torch
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "result.pt")
        common = (threads, args.steps, args.batch_sizes, args.images, args.eval_batch, args.k, out)
        if size == 1:
            mp.spawn(_single, args=(port, *common), nprocs=1, join=True)
        else:
            mp.spawn(worker, args=(size, port, *common), nprocs=size, join=True)
        return torch.load(out)


def _single(rank, port, *common):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(name, None)
    worker(0, 1, port, *common)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--eval-batch", type=int, default=50)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    settings = {"1 process, 1 thread": (1, 1), "2 processes, 1 thread each": (2, 1), "1 process, 2 threads": (1, 2)}
    rounds = [{name: measure(size, threads, args) for name, (size, threads) in settings.items()}
              for _ in range(args.repeats)]
    results = {name: {work: min(r[name][work] for r in rounds) for work in rounds[0][name]} for name in settings}
    one = results["1 process, 1 thread"]
    print(f"{args.steps} training steps per batch size (default MLP VAE, elbo); evaluation of {args.images} images "
          f"in batches of {args.eval_batch}, K = {args.k}; seconds, the fastest of {args.repeats} rounds")
    print("| work | " + " | ".join(settings) + " | scaling efficiency, 2 processes | speed-up, 2 threads |")
    print("| --- |" + " ---: |" * (len(settings) + 2))
    for work in one:
        seconds = [results[name][work] for name in settings]
        efficiency = one[work] / (2 * results["2 processes, 1 thread each"][work])
        speedup = one[work] / results["1 process, 2 threads"][work]
        label = f"training, global batch {work.split()[1]}" if work.startswith("train") else "evaluation"
        print(f"| {label} | " + " | ".join(f"{s:.2f}" for s in seconds) + f" | {efficiency:.2f} | {speedup:.2f} |")


if __name__ == "__main__":
    main()
