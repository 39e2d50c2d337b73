"""One run over several processes: ``torch.distributed`` set up from torchrun's environment,
data-parallel training (``DistributedDataParallel``), sharded evaluation, rank-0 writing.

**The world.** ``torchrun --nproc_per_node N examples/mnist_svi.py ...`` starts N processes with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment; :func:`initialized` reads them and
joins the process group (gloo on CPUs; NCCL on GPUs, process ``LOCAL_RANK`` on ``cuda:LOCAL_RANK``),
with a timeout on every collective (:data:`TIMEOUT`, ``$PYRO_VAE_DIST_TIMEOUT`` seconds), so that
a dead process cannot hang the others forever. Without torchrun the world is one process and
nothing of ``torch.distributed`` is used. No flag is needed.

**Training.** Every epoch has one permutation, the same on all processes (keyed by (seed, epoch),
:mod:`pyro_vae.noise`), sliced into global batches of ``batch_size`` images; process r of W takes
rows ⌊r·b/W⌋ .. ⌊(r+1)·b/W⌋ of each global batch of b images (:func:`epoch_batches`), binarizes
them and draws their ε with the noise of those rows. Its loss is the negative ELBO *summed* over its
rows, L_r, so the single-process loss of the global batch is L = Σ_r L_r and its gradient is
Σ_r ∇L_r. DDP's default all-reduce would give the *mean* (1/W) Σ_r ∇L_r, a W times smaller
step; :func:`data_parallel` registers a communication hook that *sums* the gradients instead. So
``--batch-size`` is the global batch, and a W-process step is the single-process step on the same
global batch with the same noise, up to the order of float additions (tested). The learning rate
needs no scaling with W.

**Evaluation** is sharded over whole batches of images (:func:`evaluate`): each batch's noise is
keyed by (seed, batch index), so per-image results, gathered in order, equal the single-process
ones (tested).

**Writing.** Process 0 alone writes (checkpoints, metrics, plots) and holds the output folder's
lock; the others write nothing and never take the lock (:attr:`World.is_main`).

**Failures.** A process that fails records its message in the process group's store before it
ends (:func:`reporting_failures`); the first to record prints it, every other process of the run
stops quietly (:class:`~pyro_vae.errors.RunAbortedError`) when its next collective finds a peer gone
(at once for gloo; torchrun also stops the other workers when one exits), or at the timeout.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import os
from collections.abc import Callable, Iterator

import torch
from torch import nn

from . import noise
from .errors import ConfigError, PyroVAEError, RunAbortedError

#: Timeout of every collective operation (and of joining the group).
TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("PYRO_VAE_DIST_TIMEOUT", "600")))
_ERROR_KEY = "pyro_vae/first_error"


@dataclasses.dataclass(frozen=True)
class World:
    """The processes of a run: this one's ``rank`` of ``size``, its ``local_rank`` on its machine,
    the backend (``None`` for one process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files and prints its messages."""
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over the processes (a copy; itself in one process)."""
        if self.size == 1:
            return tensor
        import torch.distributed as dist

        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    def gather(self, obj):
        """The list of every process's ``obj``, in rank order (``[obj]`` in one process)."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        gathered = [None] * self.size
        dist.all_gather_object(gathered, obj)
        return gathered


def world_from_env() -> World:
    """The world torchrun describes in ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (one process when unset)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("device", "RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them); "
                          "unset them to run in one process") from None
    if size < 1 or not 0 <= rank < size:
        raise ConfigError("device", f"RANK = {rank} and WORLD_SIZE = {size} do not describe a process of a run")
    return World(rank, size, local_rank)


def device_for(world: World, device: torch.device) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` for a CUDA run of several processes."""
    if world.size == 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise ConfigError("device", f"{device}: under torchrun each process takes the GPU of its LOCAL_RANK; "
                          "ask for --device cuda (or --cuda) without an index")
    if world.local_rank >= torch.cuda.device_count():
        raise ConfigError("device", f"process LOCAL_RANK = {world.local_rank} has no GPU: this machine has "
                          f"{torch.cuda.device_count()}; start at most that many processes per machine")
    return torch.device("cuda", world.local_rank)


@contextlib.contextmanager
def initialized(device: torch.device) -> Iterator[tuple[World, torch.device]]:
    """Join the run's process group (when torchrun started several processes) while the block
    runs, with failures reported once (:func:`reporting_failures`); yields the world and this
    process's device."""
    world = world_from_env()
    if world.size == 1:
        yield world, device
        return
    import torch.distributed as dist

    try:
        device = device_for(world, device)
    except PyroVAEError as error:  # every process finds it, before they can agree who says it: process 0 does
        error.quiet = world.rank != 0
        raise
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group(backend, timeout=TIMEOUT, **({"device_id": device} if device.type == "cuda" else {}))
    world = dataclasses.replace(world, backend=dist.get_backend())
    try:
        with reporting_failures(world):
            yield world, device
    finally:
        if started:
            dist.destroy_process_group()


@contextlib.contextmanager
def reporting_failures(world: World) -> Iterator[None]:
    """The first process of the run to fail reports its error; the others raise
    :class:`~pyro_vae.errors.RunAbortedError`, which the command line ends quietly."""
    try:
        yield
    except Exception as error:  # every failure must be reported once
        if world.size == 1 or _first_to_fail(world, error):
            if isinstance(error, PyroVAEError) or not _is_collective_error(error):
                raise
            raise RunAbortedError(f"process {world.rank} of {world.size}: another process of this run stopped "
                                  f"({_first_line(error)}); see its output") from None
        raise RunAbortedError(f"process {world.rank} of {world.size} stopped: another process of this run failed "
                              "and reported why", quiet=True) from None


def _first_to_fail(world: World, error: BaseException) -> bool:
    """Record the failure in the group's store; whether it was the first (True too when the store
    cannot be reached: better twice than never)."""
    import torch.distributed as dist

    message = f"rank {world.rank}: {type(error).__name__}"
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set_timeout(datetime.timedelta(seconds=5))
        return store.compare_set(_ERROR_KEY, "", message).decode() == message
    except Exception:  # noqa: BLE001
        return True


def _is_collective_error(error: BaseException) -> bool:
    import torch.distributed as dist

    return isinstance(error, (dist.DistError, RuntimeError)) and not isinstance(error, PyroVAEError)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__


# -- training --------------------------------------------------------------------------------------

def shard(n: int, world: World) -> tuple[int, int]:
    """The rows ⌊r·n/W⌋ .. ⌊(r+1)·n/W⌋ of n that process r of W holds."""
    return world.rank * n // world.size, (world.rank + 1) * n // world.size


def check_batches(num_images: int, batch_size: int, world: World) -> None:
    """Every process must hold images in every step (a step of a process without any would skip its
    objective, whose state, e.g. a KL warm-up position, would then differ between processes): the
    last global batch must have no fewer images than there are processes."""
    last = num_images % batch_size
    if 0 < last < world.size:
        raise ConfigError("batch_size", f"{batch_size} leaves a last batch of {last} of the {num_images} training "
                          f"images, fewer than the {world.size} processes of this run; choose a batch size (or "
                          "--train-size) for which the last batch is whole or holds one image per process at least")


def epoch_batches(images: torch.Tensor, batch_size: int, *, seed: int, epoch: int, world: World,
                  step_noise: noise.StepNoise, dynamic: bool) -> Iterator[torch.Tensor]:
    """This process's part of each global batch of one epoch (see the module's docstring), with
    ``step_noise`` pointed at the step's key and rows before each batch is yielded."""
    order = noise.permutation(images.shape[0], (seed, noise.PERMUTATION, epoch), images.device)
    for step, begin in enumerate(range(0, images.shape[0], batch_size)):
        size = min(batch_size, images.shape[0] - begin)
        start, stop = shard(size, world)
        x = images[order[begin + start:begin + stop]]
        key = (seed, epoch, step)
        if dynamic:
            x = noise.binarize_rows(x, (*key, noise.BINARIZATION), start)
        step_noise.key, step_noise.start = key, start
        yield x


class KeyedLoss(nn.Module):
    """The training loss of a run as a module that owns the VAE (so DDP sees its parameters):
    ``objective(x)`` (the negative ELBO summed over this process's rows) with the guide's ε drawn
    from the step's keyed noise (:class:`~pyro_vae.noise.GuideNoise`). Every process has rows in
    every step (:func:`check_batches`)."""

    def __init__(self, vae: nn.Module, objective: nn.Module, step_noise: noise.StepNoise):
        super().__init__()
        self.vae, self.objective = vae, objective
        self.guide_noise = noise.GuideNoise(step_noise, getattr(vae, "latent_sites", ("z",)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.guide_noise:
            return self.objective(x)


def data_parallel(loss: KeyedLoss, world: World, probe: torch.Tensor) -> nn.Module:
    """``loss`` itself in one process; else wrapped in ``DistributedDataParallel`` with gradients
    *summed* over the processes (the loss is a sum over images). ``probe``, a batch, finds
    parameters that a step leaves without gradient (DDP must then look for them every step)."""
    if world.size == 1:
        return loss
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    params = [p for p in loss.parameters() if p.requires_grad]
    state = copy.deepcopy(loss.objective.state_dict())  # e.g. a KL warm-up position, which a step advances
    loss.objective(probe).backward()
    loss.objective.load_state_dict(state)
    unused = any(p.grad is None for p in params)
    for p in params:
        p.grad = None
    device = probe.device
    ddp = DistributedDataParallel(loss, device_ids=[device] if device.type == "cuda" else None,
                                  find_unused_parameters=unused)
    ddp.register_comm_hook(dist.group.WORLD, _sum_hook)
    return ddp


def _sum_hook(group, bucket):
    """DDP communication hook: all-reduce the bucket's gradients as a sum (DDP's default divides by W)."""
    import torch.distributed as dist

    future = dist.all_reduce(bucket.buffer(), group=group, async_op=True).get_future()
    return future.then(lambda done: done.value()[0])


def epoch_reducer(world: World) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What :func:`pyro_vae.train.fit` sums its epoch statistics with (``None`` in one process)."""
    return None if world.size == 1 else world.sum


# -- evaluation ------------------------------------------------------------------------------------

def evaluate(world: World, vae, data: torch.Tensor, num_samples: int = 1, batch_size: int = 100, *,
             seed: int, **options):
    """:func:`pyro_vae.evaluate.evaluate` with keyed noise (``seed``), each process taking a
    contiguous share of the batches of images; the per-image results of all processes, in order."""
    from .evaluate import Evaluation
    from .evaluate import evaluate as evaluate_batches

    num_batches = -(-data.shape[0] // batch_size)
    first, last = shard(num_batches, world)
    part = evaluate_batches(vae, data, num_samples, batch_size, seed=seed, batches=range(first, last),
                            progress=options.pop("progress", False) and world.is_main, **options)
    return Evaluation.concat(world.gather(part))
