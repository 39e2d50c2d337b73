"""Cost of one MNIST training epoch: pyro_vae against a hand-written loop and a reference-style loop.

    python benchmarks/epoch_cost.py --data-dir ../shared/data [--cuda] [--train-size N]

Three loops over the same training images, batch 128, the 784-400-50 MLP VAE with a Bernoulli
likelihood, dynamic binarization, Adam, the ``elbo`` estimator (Trace_ELBO's math):

* ``pyro_vae``: :func:`pyro_vae.fit` with the data resident on the device (batches are index
  slices), the loss accumulated on the device and read once per epoch;
* ``hand-written torch``: the same data path and the same estimator written directly in torch
  (``benchmarks/step_cost.py``), loss read once per epoch;
* ``reference style``: the loop of Pyro's reference example ``examples/vae/vae.py`` — a torch
  ``DataLoader`` over torchvision's MNIST with ``ToTensor`` (item by item), a host-to-device copy
  per batch, ``pyro.infer.SVI.step`` returning a Python float every step.

Each loop runs in a fresh process of its own (so that its peak memory is its own: resident memory
on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU, data included), takes a few warm-up
steps, then runs ``--epochs`` timed epochs. Prints the median seconds per epoch, the ratios and the
peak memory, all measured in this one run.
"""

import argparse
import statistics
import time
from itertools import islice
from pathlib import Path

import pyro
import torch
from isolated import peak_memory, run_isolated
from step_cost import hand_written

from pyro_vae import build_vae, fit, load_data, make_config, make_objective
from pyro_vae.data import load_torchvision
from pyro_vae.train import make_adam

WARMUP_STEPS = 5


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def pyro_vae_loop(vae, data, batch_size, device):
    loss = make_objective("elbo")(vae.model, vae.guide)
    optimizer = make_adam(vae.parameters(), lr=1e-3)
    fit(loss, optimizer, lambda: islice(data.train_batches(batch_size), WARMUP_STEPS), 1, progress=False, verbose=False)
    return lambda: fit(loss, optimizer, lambda: data.train_batches(batch_size), 1, progress=False, verbose=False)


def hand_written_loop(vae, data, batch_size, device):
    loss = hand_written(vae, "elbo", 1)
    optimizer = make_adam(vae.parameters(), lr=1e-3)

    def epoch(batches):
        total = torch.zeros((), device=device)
        for x in batches:
            optimizer.zero_grad(set_to_none=True)
            value = loss(x)
            value.backward()
            optimizer.step()
            total += value.detach()
        total.item()

    epoch(islice(data.train_batches(batch_size), WARMUP_STEPS))
    return lambda: epoch(data.train_batches(batch_size))


def reference_style_loop(vae, loader, device):
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}),
                         pyro.infer.Trace_ELBO(max_plate_nesting=1))

    def epoch(batches):
        epoch_loss = 0.0
        for x, _ in batches:
            x = torch.bernoulli(x.to(device))  # one host-to-device copy per batch
            epoch_loss += svi.step(x)  # a Python float (a host synchronization) every step

    batches = iter(loader)
    epoch([next(batches) for _ in range(WARMUP_STEPS)])
    return lambda: epoch(loader)


def measure(loop: str, args, queue) -> None:
    """In a fresh process: build the data and the VAE, warm up, time ``args.epochs`` epochs."""
    device = torch.device("cuda" if args.cuda else "cpu")
    pyro.enable_validation(False)
    pyro.set_rng_seed(0)
    if loop == "reference style (DataLoader, SVI.step)":
        from pyro_vae._torchvision import torchvision

        dataset = load_torchvision("mnist", Path(args.data_dir) if args.data_dir else None, train=True)
        dataset.transform = torchvision.transforms.ToTensor()
        if args.train_size is not None:
            dataset = torch.utils.data.Subset(dataset, range(args.train_size))
        images = len(dataset)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True)
    else:
        data = load_data("mnist", args.data_dir, "dynamic", train_size=args.train_size, val_size=0, test_size=1,
                         device=device)
        images = len(data.train)
    vae = build_vae(make_config((1, 28, 28), 50, options={"net": {"hidden_dims": [400]}})).to(device)
    if loop == "pyro_vae (fit)":
        epoch = pyro_vae_loop(vae, data, args.batch_size, device)
    elif loop == "hand-written torch":
        epoch = hand_written_loop(vae, data, args.batch_size, device)
    else:
        epoch = reference_style_loop(vae, loader, device)
    seconds = []
    for _ in range(args.epochs):
        synchronize(device)
        start = time.perf_counter()
        epoch()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    queue.put((statistics.median(seconds), peak_memory(args.cuda), images))


LOOPS = ("pyro_vae (fit)", "hand-written torch", "reference style (DataLoader, SVI.step)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per loop (the median is shown)")
    parser.add_argument("--train-size", type=int, default=None, help="images per epoch (default: all 60,000)")
    args = parser.parse_args()
    results = {loop: run_isolated(measure, loop, args) for loop in LOOPS}
    name = "cuda" if args.cuda else "cpu"
    print(f"device: {name}, torch {torch.__version__}, pyro {pyro.__version__}, threads {torch.get_num_threads()}, "
          f"{results[LOOPS[0]][2]} images per epoch, batch {args.batch_size}, median of {args.epochs} epochs")
    memory = "peak GPU memory allocated" if args.cuda else "peak resident memory"
    base, reference = results["hand-written torch"][0], results[LOOPS[2]][0]
    print(f"| loop | seconds per epoch | ratio to hand-written | speed-up over reference style | {memory}, MiB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for loop, (value, peak, _) in results.items():
        print(f"| {loop} | {value:.2f} | {value / base:.2f} | {reference / value:.2f} | {peak / 2 ** 20:,.0f} |")


if __name__ == "__main__":
    main()
