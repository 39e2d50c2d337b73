"""Workers of tests/test_distributed.py: functions for ``torch.multiprocessing.spawn``, and, run as a
script (under torchrun), the main job on synthetic data with an optional injected failure."""

import os
import sys
from pathlib import Path

import pyro
import torch

REPO = Path(__file__).resolve().parents[1]


def join(rank: int, size: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)


def both(rank: int, size: int, port: int, cases: list, out: str) -> None:
    """:func:`gradients`, then :func:`evaluation`, in one start of the processes."""
    join(rank, size, port)
    gradients(rank, size, port, cases, f"{out}/gradients.pt")
    evaluation(rank, size, port, f"{out}/evaluation.pt")


def small_vae(objective: str = "elbo", **options):
    from pyro_vae import RunConfig
    from pyro_vae.build import build_vae

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    config = RunConfig(objective=objective, net_options={"hidden_dims": [32]}, z_dim=4, **options)
    return build_vae(config.model_config((1, 28, 28))), config


def images(n: int = 75) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def gradients(rank: int, size: int, port: int, cases: list, out: str) -> None:
    """For each case (objective, its options, model settings, global batch size): one training
    step's loss and gradients (after DDP's all-reduce) on the first global batch of epoch 1."""
    from pyro_vae import distributed
    from pyro_vae.noise import StepNoise
    from pyro_vae.objectives import make_objective

    if size > 1 and "RANK" not in os.environ:
        join(rank, size, port)
    data = images()
    results = []
    with distributed.initialized(torch.device("cpu")) as (world, _):
        for objective, options, model, batch in cases:
            vae, _ = small_vae(objective, **model)
            step_noise = StepNoise()
            loss = distributed.KeyedLoss(vae, make_objective(objective, options)(vae.model, vae.guide), step_noise)
            trained = distributed.data_parallel(loss, world, data[:8].bernoulli())
            x = next(distributed.epoch_batches(data, batch, seed=3, epoch=1, world=world, step_noise=step_noise,
                                               dynamic=True))
            value = trained(x)
            value.backward()
            results.append({"loss": world.sum(value.detach()),
                            "grads": {n: p.grad.clone() for n, p in vae.named_parameters()}})
    if world.is_main:
        torch.save(results, out)


def evaluation(rank: int, size: int, port: int, out: str) -> None:
    """Per-image evaluation of a fixed model, sharded over the processes."""
    from pyro_vae import distributed

    if size > 1 and "RANK" not in os.environ:
        join(rank, size, port)
    vae, _ = small_vae()
    data = images(250).bernoulli(generator=torch.Generator().manual_seed(2))
    with distributed.initialized(torch.device("cpu")) as (world, _):
        result = distributed.evaluate(world, vae, data, 100, 40, seed=5, psis=True, ks=[1, 10])
        if world.is_main:
            torch.save(result, out)


if __name__ == "__main__":  # python -m torch.distributed.run ... tests/distributed_worker.py DATA [FAIL_RANK] -- FLAGS
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import accept_as_real

    from pyro_vae import cli, experiment
    from pyro_vae.errors import InputError

    data_root, fail_rank, *argv = sys.argv[1:]
    accept_as_real(Path(data_root))
    if int(fail_rank) == int(os.environ.get("RANK", "0")):
        validate = experiment._Run.validate
        calls = []

        def failing_validate(self):
            calls.append(1)
            if len(calls) == 3:  # in epoch 2, while the other process waits for this one
                raise InputError(f"injected failure on rank {fail_rank}")
            return validate(self)

        experiment._Run.validate = failing_validate
    sys.exit(cli.main(argv))
