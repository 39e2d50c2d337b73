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

Prints seconds per epoch and the ratios, all measured in this one run (one epoch each, after a
short warm-up).
"""

import argparse
import importlib.util
import time
from pathlib import Path

import pyro
import torch

from pyro_vae import build_vae, fit, load_data, make_config, make_objective
from pyro_vae.train import make_adam
from pyro_vae.data import load_torchvision


def hand_written_loss(vae):
    spec = importlib.util.spec_from_file_location("step_cost", Path(__file__).with_name("step_cost.py"))
    step_cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step_cost)
    return step_cost.hand_written(vae, "elbo", 1)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def pyro_vae_epoch(vae, data, batch_size, device):
    loss = make_objective("elbo")(vae.model, vae.guide)
    optimizer = make_adam(vae.parameters(), lr=1e-3)
    fit(loss, optimizer, lambda: data.train_batches(batch_size), 1, progress=False, verbose=False)


def hand_written_epoch(vae, data, batch_size, device):
    loss = hand_written_loss(vae)
    optimizer = make_adam(vae.parameters(), lr=1e-3)
    total = torch.zeros((), device=device)
    for x in data.train_batches(batch_size):
        optimizer.zero_grad(set_to_none=True)
        value = loss(x)
        value.backward()
        optimizer.step()
        total += value.detach()
    total.item()


def reference_style_epoch(vae, loader, device):
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}),
                         pyro.infer.Trace_ELBO(max_plate_nesting=1))
    epoch_loss = 0.0
    for x, _ in loader:
        x = torch.bernoulli(x.to(device))  # one host-to-device copy per batch
        epoch_loss += svi.step(x)  # a Python float (a host synchronization) every step


def timed(function, device):
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-size", type=int, default=None, help="images per epoch (default: all 60,000)")
    args = parser.parse_args()
    device = torch.device("cuda" if args.cuda else "cpu")
    from pyro_vae._torchvision import torchvision

    pyro.enable_validation(False)
    pyro.set_rng_seed(0)
    data = load_data("mnist", args.data_dir, "dynamic", train_size=args.train_size, val_size=0, test_size=1,
                     device=device)
    dataset = load_torchvision("mnist", Path(args.data_dir) if args.data_dir else None, train=True)
    dataset.transform = torchvision.transforms.ToTensor()
    if args.train_size is not None:
        dataset = torch.utils.data.Subset(dataset, range(args.train_size))
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True)

    def fresh_vae():
        pyro.clear_param_store()
        return build_vae(make_config((1, 28, 28), 50, options={"net": {"hidden_dims": [400]}})).to(device)

    loops = {
        "pyro_vae (fit)": lambda: pyro_vae_epoch(fresh_vae(), data, args.batch_size, device),
        "hand-written torch": lambda: hand_written_epoch(fresh_vae(), data, args.batch_size, device),
        "reference style (DataLoader, SVI.step)": lambda: reference_style_epoch(fresh_vae(), loader, device),
    }
    seconds = {name: timed(loop, device) for name, loop in loops.items()}
    name = torch.cuda.get_device_name() if args.cuda else "cpu"
    print(f"device: {name}, torch {torch.__version__}, pyro {pyro.__version__}, threads {torch.get_num_threads()}, "
          f"{len(data.train)} images per epoch, batch {args.batch_size}")
    base, reference = seconds["hand-written torch"], seconds["reference style (DataLoader, SVI.step)"]
    print("| loop | seconds per epoch | ratio to hand-written | speed-up over reference style |")
    print("| --- | ---: | ---: | ---: |")
    for loop, value in seconds.items():
        print(f"| {loop} | {value:.2f} | {value / base:.2f} | {reference / value:.2f} |")


if __name__ == "__main__":
    main()
