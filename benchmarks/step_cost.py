"""Cost of one training step: pyro_vae's Pyro objectives against hand-written PyTorch of the same math.

    python benchmarks/step_cost.py [--cuda] [--batch-sizes 128 1024] [--steps 50]

Same nets (784-400-50 MLP), same Bernoulli likelihood, same batch, same Adam; the hand-written
steps compute exactly the estimator of the Pyro objective they are compared with:
``elbo`` (Trace_ELBO: the KL term sampled, log q(z|x) − log p(z) at the drawn z) and
``mean_field`` (TraceMeanField_ELBO: the KL term in closed form). Prints milliseconds per step and
the ratio to the hand-written step (medians of 5 interleaved rounds), all measured in this one run.
"""

import argparse
import statistics
import time

import pyro
import torch
from torch.nn import functional as F

from pyro_vae import build_vae, make_config, make_objective
from pyro_vae.bounds import gaussian_kl


def hand_written(vae, sampled_kl: bool):
    z_dim = vae.config["z_dim"]
    min_scale = vae.config["guide"]["options"]["min_scale"]

    def loss(x):
        z_loc, z_scale_raw = vae.encoder(x).split(z_dim, dim=-1)
        z_scale = F.softplus(z_scale_raw) + min_scale
        eps = torch.randn_like(z_loc)
        z = z_loc + z_scale * eps
        log_likelihood = -F.binary_cross_entropy_with_logits(vae.decoder(z), x, reduction="sum")
        if sampled_kl:  # log q(z|x) − log p(z) at the sampled z
            kl = (-0.5 * eps ** 2 - z_scale.log() + 0.5 * z ** 2).sum()
        else:
            kl = gaussian_kl(z_loc, z_scale).sum()
        return kl - log_likelihood

    return loss


def time_steps(losses, vae, x, steps, device, repeats=5):
    """Median ms per step of each loss; the losses take turns, ``repeats`` rounds of ``steps``
    steps each, so slow drifts of the machine hit all of them alike."""
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)

    def run(loss, n):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            loss(x).backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / n * 1e3

    for loss in losses:  # warm-up
        run(loss, 10)
    times = [[run(loss, steps) for loss in losses] for _ in range(repeats)]
    return [statistics.median(column) for column in zip(*times)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--steps", type=int, default=50, help="steps per timed round (5 rounds)")
    args = parser.parse_args()
    device = torch.device("cuda" if args.cuda else "cpu")
    pyro.enable_validation(False)  # as in training runs with python -O; validation costs ~5%
    pyro.set_rng_seed(0)
    vae = build_vae(make_config((1, 28, 28), 50, options={"net": {"hidden_dims": [400]}})).to(device)
    print(f"device: {torch.cuda.get_device_name() if args.cuda else 'cpu'}, torch {torch.__version__}, "
          f"pyro {pyro.__version__}, threads {torch.get_num_threads()}")
    print("| batch | step | ms per step | ratio to hand-written |")
    print("| ---: | --- | ---: | ---: |")
    for batch_size in args.batch_sizes:
        x = torch.bernoulli(torch.full((batch_size, 1, 28, 28), 0.13, device=device))
        for name, sampled_kl in (("elbo", True), ("mean_field", False)):
            base, ours = time_steps([hand_written(vae, sampled_kl), make_objective(name)(vae.model, vae.guide)],
                                    vae, x, args.steps, device)
            kl = "sampled KL" if sampled_kl else "closed-form KL"
            print(f"| {batch_size} | hand-written torch ({kl}) | {base:.2f} | 1.00 |")
            print(f"| {batch_size} | pyro_vae `{name}` | {ours:.2f} | {ours / base:.2f} |")


if __name__ == "__main__":
    main()
