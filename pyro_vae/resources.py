"""Up-front estimates of memory and time: a request that cannot fit fails before any work, with a
message that names the settings that make it big.

**Memory** (:func:`check_memory`, before anything is built): a *lower bound* on what the run must
hold at once, so that a refusal is never wrong:

* the parameters, their gradients and Adam's two moments: 4 × 4 bytes per parameter, the parameters
  counted on a model built on the ``meta`` device (no memory used; pieces that cannot be built
  there are left out of the count);
* the data, resident on the device as float32;
* one training step's decoder output and its gradient: batch × particles × pixels × 2 × 4 bytes,
  and for a mixture prior of C components (an option ``num_components``: ``mixture``, ``vamp``) its
  rows × C float64 matrix of component log-densities (:class:`~pyro_vae.gaussian_mixture.GaussianMixture`)
  and its gradient, batch × particles × C × 2 × 8 bytes;
* one evaluation batch's log-weights: images × K × 4 bytes, and for PSIS (K ≥ 100) a float64 copy;
  with a mixture prior, one chunk's matrix of component log-densities, at least images × C × 8 bytes
  (a chunk holds one particle per image or more).

**Time** (:func:`estimate_seconds`, once the model and data exist): one training step and one
chunk of evaluation are timed as :func:`~pyro_vae.compatibility.trial` runs (the run's random
numbers and state untouched) and scaled to the whole run. The estimate is printed, and a run whose
estimate exceeds ``time_limit_hours`` is refused.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import torch

from .compatibility import trial
from .errors import ResourceError
from .vae import VAE

FLOAT_BYTES, DOUBLE_BYTES = 4, 8
#: What a whole epoch and a whole evaluation cost beyond the timed trial steps (Adam's update, the
#: batches' indexing and binarization; PSIS and the bounds), as factors measured on the main job
#: (docs/benchmarks.md, "Up-front estimates").
TRAINING_OVERHEAD = 1.45
EVALUATION_OVERHEAD = 1.7


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device``: free GPU memory, or the kernel's
    MemAvailable for the CPU (``None`` where it cannot be read)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class _ScalarsOnCPU(torch.overrides.TorchFunctionMode):
    """Inside a ``meta`` device context, keep ``torch.tensor(python data)`` on the CPU: pieces
    compute small constants from Python data at construction (e.g. masks) and read them back."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.tensor and "device" not in kwargs:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def count_parameters(model_config: dict) -> int | None:
    """The number of parameters of the model ``model_config`` builds, counted on a model built on
    the ``meta`` device (nothing allocated); ``None`` where a piece cannot be built there (Pyro's
    autoregressive networks read values at construction)."""
    from .build import build_vae

    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        with torch.device("meta"), _ScalarsOnCPU(), pyro.validation_enabled(False):
            vae = build_vae(model_config)
        return sum(p.numel() for p in vae.parameters())
    except Exception:  # noqa: BLE001  (any piece that cannot be built on meta: no estimate, the real build decides)
        return None
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)


@dataclasses.dataclass
class MemoryEstimate:
    """Lower bounds, in bytes, of what a run holds at once."""

    parameters: int
    data: int
    training_step: int
    evaluation: int

    @property
    def total(self) -> int:
        return self.parameters + self.data + self.training_step + self.evaluation

    def parts(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def estimate_memory(config, model_config: dict, num_images: int, num_train: int, num_test: int,
                    train: bool) -> MemoryEstimate:
    """Lower bounds of the memory a run of ``config`` needs (see the module's description)."""
    pixels = math.prod(model_config["x_shape"])
    num_parameters = count_parameters(model_config) or 0
    particles = config.objective_options.get("num_particles", 1)
    rows = min(config.batch_size, num_train) * particles
    eval_images = min(config.eval_batch_size, num_test)
    psis_bytes = 8 if config.eval_samples >= 100 else 0
    components = model_config["prior"]["options"].get("num_components", 0)
    return MemoryEstimate(
        parameters=num_parameters * 4 * FLOAT_BYTES,
        data=num_images * pixels * FLOAT_BYTES,
        training_step=rows * (pixels * FLOAT_BYTES + components * DOUBLE_BYTES) * 2 if train else 0,
        evaluation=eval_images * (config.eval_samples * (FLOAT_BYTES + psis_bytes) + components * DOUBLE_BYTES),
    )


def check_memory(estimate: MemoryEstimate, device: torch.device) -> None:
    """Raise :class:`~pyro_vae.errors.ResourceError` when the lower bound exceeds what is available."""
    available = available_memory(device)
    if available is None or estimate.total <= available:
        return
    causes = {
        "parameters": "the model's size (--z-dim, --hidden-dims and the pieces' sizes)",
        "data": "the data set",
        "training_step": "one training step (--batch-size × --num-particles)",
        "evaluation": "one evaluation batch (--eval-batch-size × --eval-samples)",
    }
    largest = max(estimate.parts(), key=estimate.parts().get)
    raise ResourceError(
        f"this run needs at least {_gib(estimate.total)} of memory on {device} but {_gib(available)} is available; "
        f"the largest part is {causes[largest]} at {_gib(estimate.parts()[largest])}: make it smaller")


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.1f} GiB"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fastest(function: Callable[[], object], device: torch.device, repeats: int = 3) -> float:
    """Seconds of the fastest of ``repeats`` calls after one warm-up call (one call if it is slow)."""
    times = []
    for attempt in range(repeats + 1):
        _synchronize(device)
        start = time.perf_counter()
        function()
        _synchronize(device)
        times.append(time.perf_counter() - start)
        if attempt == 0 and times[0] > 1.0:
            return times[0]
    return min(times[1:])


@dataclasses.dataclass
class TimeEstimate:
    """Estimated seconds of the remaining training (steps and validation) and of the evaluation."""

    training: float
    evaluation: float
    steps: int
    step_seconds: float

    @property
    def total(self) -> float:
        return self.training + self.evaluation

    def describe(self) -> str:
        parts = []
        if self.steps:
            parts.append(f"training ≈ {_duration(self.training)} ({self.steps:,} steps of ≈ "
                         f"{1000 * self.step_seconds:.1f} ms)")
        parts.append(f"evaluation ≈ {_duration(self.evaluation)}")
        return "estimated time: " + ", ".join(parts) + " (from a few timed steps)"


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_seconds(vae: VAE, loss: Callable[[torch.Tensor], torch.Tensor], train_batch: torch.Tensor,
                     eval_images: torch.Tensor, *, steps: int, epochs: int, val_images: int,
                     test_images: int, eval_samples: int) -> TimeEstimate:
    """Time one training step on ``train_batch`` and one evaluation chunk on ``eval_images``, as
    trials, and scale them: ``steps`` training steps, ``epochs`` validations of ``val_images``
    images, and ``test_images`` × ``eval_samples`` evaluation rows."""
    from .evaluate import chunk_rows, log_weights

    device = train_batch.device
    step_seconds = 0.0
    if steps:
        def step() -> None:
            loss(train_batch).backward()

        with trial(vae, loss, device):
            step_seconds = _fastest(step, device)
    with torch.no_grad():
        max_rows = chunk_rows(vae, device)
    probe_images = eval_images[: max(1, min(len(eval_images), max_rows // 100))]
    probe_samples = max(1, min(eval_samples, max_rows // len(probe_images)))
    with trial(vae, loss, device), torch.no_grad():
        chunk_seconds = _fastest(lambda: log_weights(vae, probe_images, probe_samples), device)
    row_seconds = chunk_seconds / (len(probe_images) * probe_samples)
    training = steps * step_seconds * TRAINING_OVERHEAD + epochs * val_images * row_seconds
    evaluation = test_images * eval_samples * row_seconds * EVALUATION_OVERHEAD
    return TimeEstimate(training, evaluation, steps, step_seconds)


def check_time(estimate: TimeEstimate, limit_hours: float) -> None:
    """Raise :class:`~pyro_vae.errors.ResourceError` when the estimate exceeds ``limit_hours``."""
    if estimate.total <= limit_hours * 3600:
        return
    if estimate.training >= estimate.evaluation:
        cause = "training (--num-epochs, the training set, --batch-size, --num-particles)"
    else:
        cause = "evaluation (--eval-samples × the test images: --test-size)"
    raise ResourceError(
        f"this run would take about {_duration(estimate.total)} ({estimate.describe()}), over the limit of "
        f"{limit_hours:g} h; most of it is {cause}: make it smaller, or raise --time-limit-hours")
