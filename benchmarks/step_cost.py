"""Cost of one training step: pyro_vae's Pyro objectives against hand-written PyTorch of the same math.

    python benchmarks/step_cost.py [--cuda] [--batch-sizes 128 1024] [--steps 40]

Same nets (784-400-50 MLP), same Bernoulli likelihood, same batch, same Adam, Pyro validation off
(as in training runs). Each hand-written step computes exactly the estimator of the Pyro objective
it is compared with: ``elbo`` (Trace_ELBO: the KL term sampled, log q(z|x) − log p(z) at the drawn
z), ``mean_field`` (TraceMeanField_ELBO: the KL term in closed form) and ``iwae`` (RenyiELBO with
α = 0: per-image logsumexp of K log-weights). Prints milliseconds per step and the ratio to the
hand-written step (the fastest of 7 interleaved rounds), all measured in this one run.

A second table weighs ways of running the same ``elbo`` step at the first batch size: Pyro's own
``Trace_ELBO`` in module form (which reads values back to Python every step), pyro_vae's sync-free
subclass (what training uses), the same with Pyro's generic distribution objects in place of the
pieces' cheaper ones, the same with a run's keyed guide noise, Pyro's ``JitTrace_ELBO``
(TorchScript trace of the whole loss) and ``torch.compile`` of pyro_vae's loss module
(``--compile-backend``; ``none`` skips it).

A third table splits pyro_vae's ``elbo`` step into parts, each a full step whose "loss" stops
at one point: the two nets alone (encode, draw z = μ + σ ⊙ ε, decode), then the guide traced and
the model replayed on it (Pyro's tracing), then the whole loss (Pyro's log-densities added).
"""

import argparse
import contextlib
import math
import time

import pyro
import torch
from torch.nn import functional as F

from pyro_vae import build_vae, make_config, make_objective
from pyro_vae.bounds import gaussian_kl
from pyro_vae.train import make_adam


def hand_written(vae, estimator: str, k: int):
    """The loss of ``estimator`` with ``k`` particles, written directly in torch."""
    z_dim = vae.config["z_dim"]
    min_scale = vae.config["guide"]["options"]["min_scale"]

    def loss(x):
        z_loc, z_scale_raw = vae.encoder(x).split(z_dim, dim=-1)
        z_scale = F.softplus(z_scale_raw) + min_scale
        eps = torch.randn((k,) + z_loc.shape, dtype=z_loc.dtype, device=x.device)
        z = z_loc + z_scale * eps  # (k, batch, z_dim)
        logits = vae.decoder(z)
        log_likelihood = -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none").flatten(2).sum(-1)  # (k, batch)
        if estimator == "mean_field":
            return gaussian_kl(z_loc, z_scale).sum() - log_likelihood.mean(0).sum()
        log_q_minus_log_p = (-0.5 * eps ** 2 - z_scale.log() + 0.5 * z ** 2).sum(-1)
        log_w = log_likelihood - log_q_minus_log_p
        if estimator == "elbo":
            return -log_w.mean(0).sum()
        return -(torch.logsumexp(log_w, dim=0) - math.log(k)).sum()

    return loss


def time_steps(losses, vae, x, steps, device, rounds=7):
    """ms per step of each loss: the losses take turns, ``rounds`` rounds of ``steps`` steps each,
    and each loss's fastest round counts. Other work on the machine can only add time, so the
    fastest round is the estimate least disturbed by it (the advice of Python's ``timeit``); on
    the shared machine of docs/benchmarks.md, medians moved by up to 40% between runs."""
    optimizer = make_adam(vae.parameters(), lr=1e-3)

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
    times = [[run(loss, steps) for loss in losses] for _ in range(rounds)]
    return [min(column) for column in zip(*times)]


@contextlib.contextmanager
def generic_distributions():
    """The default guide, prior and likelihood returning Pyro's generic ``Normal(...).to_event(1)`` and
    ``Bernoulli(logits).to_event(3)`` instead of the library's cheaper objects (as before 5f21e2e)."""
    import pyro.distributions as dist

    from pyro_vae.guides.diagonal_normal import DiagonalNormalGuide, positive_scale
    from pyro_vae.likelihoods.bernoulli import BernoulliLikelihood
    from pyro_vae.priors.standard_normal import StandardNormalPrior

    def guide_forward(self, encoded):
        z_loc, z_scale_raw = encoded.split(self.z_dim, dim=-1)
        return dist.Normal(z_loc, positive_scale(z_scale_raw, self.min_scale)).to_event(1)

    swaps = [(DiagonalNormalGuide, guide_forward),
             (StandardNormalPrior, lambda self: dist.Normal(self.loc, self.scale).to_event(1)),
             (BernoulliLikelihood, lambda self, logits: dist.Bernoulli(logits=logits).to_event(len(self.x_shape)))]
    saved = [(cls, cls.forward) for cls, _ in swaps]
    for cls, forward in swaps:
        cls.forward = forward
    try:
        yield
    finally:
        for cls, forward in saved:
            cls.forward = forward


def with_generic_distributions(loss):
    def run(x):
        with generic_distributions():
            return loss(x)
    return run


def keyed(vae, loss):
    """``loss`` as a run trains it: the guide's ε drawn from the step's keyed noise (pyro_vae.noise)."""
    from pyro_vae import distributed, noise

    step_noise = noise.StepNoise()
    step_noise.key, step_noise.start = (0, 1, 0), 0
    return distributed.KeyedLoss(vae, loss, step_noise)


def elbo_variants(vae, compile_backend: str):
    """The ``elbo`` step, run several ways; each computes the same estimator from the same model and guide."""
    from pyro.infer import JitTrace_ELBO, Trace_ELBO

    ours = make_objective("elbo")(vae.model, vae.guide)
    variants = {
        "hand-written torch": hand_written(vae, "elbo", 1),
        "Pyro Trace_ELBO, module form": Trace_ELBO(max_plate_nesting=1)(vae.model, vae.guide),
        "pyro_vae elbo (sync-free Trace_ELBO)": ours,
        "pyro_vae elbo with Pyro's generic distributions (before 5f21e2e)": with_generic_distributions(ours),
        "pyro_vae elbo with the run's keyed noise (the training step)": keyed(vae, ours),
        "Pyro JitTrace_ELBO": JitTrace_ELBO(max_plate_nesting=1, ignore_jit_warnings=True)(vae.model, vae.guide),
    }
    if compile_backend != "none":
        variants[f"torch.compile(pyro_vae elbo, backend={compile_backend})"] = torch.compile(
            make_objective("elbo")(vae.model, vae.guide), backend=compile_backend)
    return variants


def elbo_parts(vae):
    """Losses that stop part-way through pyro_vae's elbo step (their values mean nothing)."""
    from pyro import poutine

    def nets_only(x):
        return vae.decoder(vae.encode(x).rsample()).sum()

    def nets_and_tracing(x):
        guide_trace = poutine.trace(vae.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
        return model_trace.nodes["x"]["fn"].base_dist.logits.sum()

    return {
        "the two nets alone": nets_only,
        "+ Pyro's tracing (guide traced, model replayed)": nets_and_tracing,
        "+ Pyro's log-densities: pyro_vae elbo": make_objective("elbo")(vae.model, vae.guide),
        "hand-written torch (nets + its loss terms)": hand_written(vae, "elbo", 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--steps", type=int, default=40,
                        help="steps per timed round at K = 1 (7 rounds; fewer steps at larger K)")
    parser.add_argument("--runs", nargs="+", default=["elbo:1", "mean_field:1", "iwae:5", "iwae:50"],
                        help="OBJECTIVE:K to compare")
    parser.add_argument("--compile-backend", default="aot_eager",
                        help="torch.compile backend for the second table (inductor needs a C++ compiler "
                             "on the CPU); 'none' skips that row")
    args = parser.parse_args()
    device = torch.device("cuda" if args.cuda else "cpu")
    pyro.enable_validation(False)  # as in training runs with python -O; validation costs ~5%
    pyro.set_rng_seed(0)
    vae = build_vae(make_config((1, 28, 28), 50, options={"net": {"hidden_dims": [400]}})).to(device)
    print(f"device: {torch.cuda.get_device_name() if args.cuda else 'cpu'}, torch {torch.__version__}, "
          f"pyro {pyro.__version__}, threads {torch.get_num_threads()}")
    print("| batch | objective | K | hand-written torch, ms | pyro_vae, ms | ratio |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for batch_size in args.batch_sizes:
        x = torch.bernoulli(torch.full((batch_size, 1, 28, 28), 0.13, device=device))
        for spec in args.runs:
            name, k = spec.split(":")[0], int(spec.split(":")[1])
            objective = make_objective(name, {"num_particles": k})
            steps = max(3, args.steps // k)
            base, ours = time_steps([hand_written(vae, name, k), objective(vae.model, vae.guide)], vae, x, steps, device)
            print(f"| {batch_size} | {name} | {k} | {base:.2f} | {ours:.2f} | {ours / base:.2f} |")
    batch_size = args.batch_sizes[0]
    x = torch.bernoulli(torch.full((batch_size, 1, 28, 28), 0.13, device=device))
    variants = elbo_variants(vae, args.compile_backend)
    times = time_steps(list(variants.values()), vae, x, args.steps, device)
    print(f"\nThe elbo step at batch {batch_size}, {len(variants)} ways (compilation happens in the warm-up steps):")
    print("| step | ms | ratio to hand-written |")
    print("| --- | ---: | ---: |")
    for label, value in zip(variants, times):
        print(f"| {label} | {value:.2f} | {value / times[0]:.2f} |")
    parts = elbo_parts(vae)
    times = time_steps(list(parts.values()), vae, x, args.steps, device)
    print(f"\nWhere the time of the elbo step goes, batch {batch_size} (each row a full step, with Adam):")
    print("| step stopping after | ms | added ms |")
    print("| --- | ---: | ---: |")
    for row, (label, value) in enumerate(zip(parts, times)):
        added = "" if row in (0, 3) else f"{value - times[row - 1]:+.2f}"
        if row == 3:
            added = f"{value - times[0]:+.2f} over the nets"
        print(f"| {label} | {value:.2f} | {added} |")


if __name__ == "__main__":
    main()
