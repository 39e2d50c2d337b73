"""Cost of the VampPrior: its GaussianMixture (matrix products) against the MixtureSameFamily it
replaced and against the standard normal prior, in evaluation and in training.

    python benchmarks/vamp_cost.py [--cuda] [--components 500] [--images 50] [--k 1000] [--steps 10]

One 784–400–50 MLP VAE with a Bernoulli likelihood and the diagonal Gaussian guide, built three ways
with the same seed: ``standard_normal`` prior; ``vamp`` with ``--components`` pseudo-inputs as in
the library (:class:`pyro_vae.gaussian_mixture.GaussianMixture`, evaluation chunks sized by
:func:`pyro_vae.evaluate.chunk_rows`); and the same VampPrior scored by
``MixtureSameFamily(Categorical, components)``, as before (values × K × z_dim broadcast, chunks of
MAX_ROWS decoder rows). Pyro validation off, as in training runs. Measured, in this one run:

* the importance-sampled evaluation (:func:`pyro_vae.evaluate`) of ``--images`` MNIST-shaped binary
  images with K = ``--k`` samples each, fastest of ``--rounds`` interleaved rounds;
* one ``elbo`` training step (loss, backward, Adam) on a batch of 128, fastest of ``--rounds``
  interleaved rounds of ``--steps`` steps.

Prints seconds and the ratios to the standard prior and to the old VampPrior path.
"""

import argparse
import time

import pyro
import pyro.distributions as dist
import torch

from pyro_vae import build_vae, evaluate, make_config, make_objective
from pyro_vae.train import make_adam


class OldVampPrior(torch.nn.Module):
    """The VampPrior's distribution as it was: MixtureSameFamily over the guide's components."""

    def __init__(self, prior):
        super().__init__()
        self.prior = prior
        self.uses_guide = True

    def forward(self):
        components = self.prior.components()
        uniform = dist.Categorical(logits=self.prior.pseudo_inputs_raw.new_zeros(components.batch_shape))
        return dist.MixtureSameFamily(uniform, components)


def build(prior, components, device):
    pyro.set_rng_seed(0)
    options = {"net": {"hidden_dims": [400]}}
    if prior != "standard_normal":
        options["prior"] = {"num_components": components}
    vae = build_vae(make_config((1, 28, 28), 50, prior="standard_normal" if prior == "standard_normal" else "vamp",
                                options=options)).to(device)
    if prior == "vamp (MixtureSameFamily)":
        vae.prior = OldVampPrior(vae.prior)
    return vae


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--components", type=int, default=500)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if args.cuda else "cpu")
    pyro.enable_validation(False)
    names = ["standard_normal", "vamp (GaussianMixture)", "vamp (MixtureSameFamily)"]
    vaes = {name: build(name, args.components, device) for name in names}
    x_eval = torch.bernoulli(torch.full((args.images, 1, 28, 28), 0.13, device=device))
    x_train = torch.bernoulli(torch.full((128, 1, 28, 28), 0.13, device=device))
    losses = {name: make_objective("elbo", {"num_particles": 1})(vae.model, vae.guide) for name, vae in vaes.items()}
    optimizers = {name: make_adam(vae.parameters(), 1e-3) for name, vae in vaes.items()}

    def step(name):
        optimizers[name].zero_grad()
        losses[name](x_train).backward()
        optimizers[name].step()

    for name in names:  # warm-up
        evaluate(vaes[name], x_eval[:2], 10, 100)
        step(name)
    eval_seconds = {name: float("inf") for name in names}
    step_seconds = {name: float("inf") for name in names}
    for _ in range(args.rounds):
        for name in names:
            synchronize(device)
            start = time.perf_counter()
            evaluate(vaes[name], x_eval, args.k, 100)
            synchronize(device)
            eval_seconds[name] = min(eval_seconds[name], time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            synchronize(device)
            step_seconds[name] = min(step_seconds[name], (time.perf_counter() - start) / args.steps)
    print(f"{args.images} images × K = {args.k} importance samples; training steps on batches of 128; "
          f"VampPrior with {args.components} pseudo-inputs; {device.type}, {torch.get_num_threads()} thread(s)")
    print("| prior | evaluation, s | × standard | × old vamp | training step, ms | × standard | × old vamp |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    old = "vamp (MixtureSameFamily)"
    for name in names:
        print(f"| {name} | {eval_seconds[name]:.2f} | {eval_seconds[name] / eval_seconds['standard_normal']:.2f} | "
              f"{eval_seconds[name] / eval_seconds[old]:.2f} | {1000 * step_seconds[name]:.1f} | "
              f"{step_seconds[name] / step_seconds['standard_normal']:.2f} | {step_seconds[name] / step_seconds[old]:.2f} |")


if __name__ == "__main__":
    main()
