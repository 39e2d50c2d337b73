"""One run of the main job, step by step: data -> model -> objective -> fit -> evaluate -> outputs.

:func:`run` takes a :class:`~pyro_vae.config.RunConfig` and returns a :class:`RunResult`; it knows
nothing of the command line (``examples/mnist_svi.py`` is :func:`pyro_vae.cli.main`). Before any
training it checks, in this order, everything a user can get wrong: the settings, the checkpoint
being resumed and its compatibility with them, the memory the run needs, the output folder (locked,
writable, not holding another run), the data files, the model's construction and the combination
of pieces, and the time the run would take. Each failure is a
:class:`~pyro_vae.errors.PyroVAEError` with a one-line message.

Under torchrun (:mod:`pyro_vae.distributed`) the same steps run on every process: training is data
parallel, evaluation sharded, and process 0 alone holds the folder's lock, writes and prints.

While training it keeps the last good state: a checkpoint is written at the end of every epoch
whose validation ELBO is finite and not far below the untrained model's; a run that diverges stops
with that checkpoint intact, and a non-finite evaluation writes no result.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from . import checkpoint, distributed, plots, run_identity
from .build import build_vae, describe
from .compatibility import check_combination
from .config import FIXED, OVERRIDE, RunConfig
from .data import DATASETS, ImageData, load_data
from .errors import (
    CheckpointError,
    ConfigError,
    DataNotFoundError,
    PyroVAEError,
    ResourceError,
    ResumeConflictError,
    TrainingDivergedError,
)
from .evaluate import MIN_PSIS_SAMPLES, Evaluation, active_units, active_units_per_layer, kl_per_dimension, kl_per_site
from .kl import describe_kl_term, has_closed_form_kl
from .noise import VALIDATION, StepNoise, derive_seed
from .objectives import make_objective
from .outputs import RunDirectory, save_torch, write_json
from .resources import check_memory, check_time, estimate_memory, estimate_seconds
from .train import LR_SCHEDULES, fit, make_adam
from .vae import VAE


@dataclasses.dataclass
class RunResult:
    """What a run produced: its configuration, the metrics written to ``metrics.json``, the per-image
    :class:`~pyro_vae.evaluate.Evaluation` of the selected model, the training history, the selected
    model itself, and the paths of the files written."""

    config: RunConfig
    metrics: dict[str, Any]
    evaluation: Evaluation
    history: list[dict]
    vae: VAE
    paths: dict[str, Path]


@dataclasses.dataclass
class _Resumed:
    """The checkpoint a run continues (or evaluates): its file, record and saved settings."""

    file: Path
    record: dict[str, Any]
    saved: RunConfig

    @property
    def folder(self) -> Path:
        return self.file.parent


def run(config: RunConfig) -> RunResult:
    """Train (or, with ``evaluate_only``, just evaluate) and write every output to ``config.out``.

    Pyro's validation is off unless ``pyro_validation``: the data's compatibility with the
    likelihood is checked once, up front, instead of on every step.

    :raises PyroVAEError: for anything the settings, files or machine do not allow (one-line message).
    """
    if not isinstance(config, RunConfig):
        raise ConfigError("config", f"run() takes a pyro_vae.RunConfig, got {type(config).__name__}")
    device = _device(config)
    if config.data_dir is not None and not Path(config.data_dir).expanduser().is_dir():
        what = "is a file, not a folder" if Path(config.data_dir).expanduser().exists() else "does not exist"
        raise DataNotFoundError(f"the data directory {config.data_dir} {what} (--data-dir); it should hold "
                                f"{DATASETS[config.dataset].layout}")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    with distributed.initialized(device) as (world, device), _quiet_unless(world.is_main):
        if not world.is_main:
            config = dataclasses.replace(config, progress=False)
        return _run(config, device, world)


@contextlib.contextmanager
def _quiet_unless(main: bool):
    """Standard output as it is in the main process; discarded in the others (one voice per run)."""
    if main:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def _run(config: RunConfig, device: torch.device, world: distributed.World) -> RunResult:
    resumed = _load_resumed(config, device) if config.resume is not None else None
    x_shape = DATASETS[config.dataset].x_shape
    model_config = resumed.record["model_config"] if resumed else config.model_config(x_shape)
    spec = DATASETS[config.dataset]
    train = not config.evaluate_only
    memory = estimate_memory(config, model_config, spec.num_train + spec.num_val + spec.num_test,
                             config.train_size or spec.num_fit(config.val_size), config.test_size or spec.num_test,
                             train)
    check_memory(memory, device)
    folder = RunDirectory(config.out)
    fresh = resumed is None or folder.path.resolve() != resumed.folder.resolve()
    needed = memory.parameters * 2 + (2 << 20)  # checkpoints (model, Adam state, a copy while renaming), plots
    # The main process holds the folder's lock for the whole run; the others of the run write nothing.
    claim = folder.claim(fresh=fresh, overwrite=config.overwrite, needed_bytes=needed) if world.is_main \
        else contextlib.nullcontext()
    with pyro.validation_enabled(config.pyro_validation), claim:
        try:
            return _Run(config, device, resumed, model_config, folder, world).execute()
        except KeyboardInterrupt:
            raise KeyboardInterrupt(_interrupted(folder)) from None


def _interrupted(folder: RunDirectory) -> str:
    """What an interrupted run kept, and how to continue it."""
    saved = folder / "checkpoint.pt"
    try:
        epoch = checkpoint.load_checkpoint(saved)["epoch"] if saved.is_file() else None
    except PyroVAEError:
        epoch = None
    if epoch is None:
        return f"interrupted; no epoch had finished, so {folder.path} holds no training state to continue"
    return f"interrupted; {saved} holds epoch {epoch}: continue with --resume {folder.path}"


def _device(config: RunConfig) -> torch.device:
    device = torch.device(config.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device", f"{config.device} was asked for but no CUDA GPU is available "
                              "(torch.cuda.is_available() is False); run on the CPU instead")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError("device", f"{config.device}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type not in ("cpu", "mps", "xpu"):
        raise ConfigError("device", f"{config.device}: pyro_vae runs on cpu or cuda")
    return device


def _load_resumed(config: RunConfig, device: torch.device) -> _Resumed:
    path = Path(config.resume).expanduser()
    name = "best.pt" if config.evaluate_only and (not path.is_dir() or (path / "best.pt").is_file()) \
        else "checkpoint.pt"
    file = checkpoint.resolve_checkpoint(path, name)
    record = checkpoint.load_checkpoint(file, device)
    if path.is_dir() or file.name == "checkpoint.pt":  # the folder's files must be of one run
        run_identity.check_folder(file.parent, {file: record}, device,
                                  run_identity.FILES if path.is_dir() else ("checkpoint.pt", "best.pt"))
    if record["kind"] != "training" and not config.evaluate_only:
        raise CheckpointError(f"{file} holds a selected model, not a training state: continue training from its run "
                              f"folder (or its checkpoint.pt), or evaluate it with evaluate_only (--evaluate-only)")
    missing = [key for key in checkpoint.REQUIRED_TRAINING if key not in record] if record["kind"] == "training" \
        else [] if record.get("run_config") else ["run_config"]
    if missing:
        raise CheckpointError(f"{file} was not written by a run of pyro_vae (it lacks {missing}), so a run cannot "
                              "continue or evaluate it; load the model with pyro_vae.load instead")
    try:
        saved = RunConfig.from_dict(record["run_config"])
    except ConfigError as error:
        raise CheckpointError(f"{file}: its run settings are not valid here ({error})") from None
    conflicts = []
    for name in config.differences(saved, (FIXED,)):
        asked, had = getattr(config, name), getattr(saved, name)
        kind = name.removesuffix("_options")
        if kind != name and getattr(config, kind) == getattr(saved, kind):  # the same piece: name its options
            conflicts += [(name, option, asked.get(option), had.get(option)) for option in sorted(asked)
                          if asked.get(option) != had.get(option)]
        else:
            conflicts.append((name, None, asked, had))
    if conflicts:
        described = ", ".join(f"{name}{f'[{option!r}]' if option else ''} = {asked!r} (the checkpoint has {had!r})"
                              for name, option, asked, had in conflicts)
        raise ResumeConflictError(
            conflicts[0][0], f"{described}: a resumed run keeps the model, data and training settings of its "
            "checkpoint; leave these unset to continue it, or start a new run in another output folder "
            "(from Python, RunConfig.resume_from(path, ...) starts from the checkpoint's settings)", conflicts)
    if not config.evaluate_only and config.num_epochs < record["epoch"]:
        raise ResumeConflictError("num_epochs", f"{config.num_epochs}, but {file} has trained {record['epoch']} epochs "
                                  "already: ask for more epochs to train further, or evaluate it (--evaluate-only)")
    for name in config.differences(saved, (OVERRIDE,)):
        print(f"resuming with {name} = {getattr(config, name)!r} (the checkpoint was run with "
              f"{getattr(saved, name)!r})")
    return _Resumed(file, record, saved)


class _Run:
    """The steps of one run, sharing its state (model, data, selection so far)."""

    def __init__(self, config: RunConfig, device: torch.device, resumed: _Resumed | None,
                 model_config: dict, folder: RunDirectory, world: distributed.World | None = None):
        self.config, self.device, self.resumed, self.model_config, self.folder = (
            config, device, resumed, model_config, folder)
        self.world = world or distributed.World()
        self.paths: dict[str, Path] = {}
        fork = resumed is not None and folder.path.resolve() != resumed.folder.resolve()
        self.identity = run_identity.for_run(resumed.record if resumed else None, fork, config.to_dict(), model_config,
                                             resumed.file if resumed else None)

    # -- the steps -----------------------------------------------------------------------------
    def execute(self) -> RunResult:
        config = self.config
        pyro.set_rng_seed(config.seed)
        pyro.clear_param_store()
        data = self.data = load_data(config.dataset, config.data_dir, config.binarize, config.train_size,
                                     config.val_size, config.test_size, self.device)
        if self.resumed is not None and self.resumed.record.get("data_files") not in (None, data.files):
            raise ResumeConflictError("data_dir", "the data files differ from those the checkpoint was trained on "
                                      f"(MD5s {self.resumed.record['data_files']}, here {data.files})")
        vae = self.vae = self._build()
        self._check_data(vae, data)
        if hasattr(vae, "initialize_from_data"):  # a model that starts from the data (its output bias)
            vae.initialize_from_data(data.train.images.mean(0))

        # The objective: a Pyro ELBO, seen by the training loop only as a loss module.
        try:
            objective = make_objective(config.objective, config.objective_options)
        except ValueError as error:
            raise ConfigError("objective_options", str(error)) from None
        loss = self.loss = objective(vae.model, vae.guide)
        initial_loss = check_combination(vae, config.objective, loss, data.example_batch(64))
        with torch.no_grad():
            q_probe, p_probe = vae.top_posterior(data.test.images[:2]), vae.prior()
        self.kl_closed_form = has_closed_form_kl(q_probe, p_probe)
        self.optimizer = make_adam(vae.parameters(), lr=config.lr, eps=config.adam_eps)
        # Training draws keyed noise (pyro_vae.noise), so its steps do not depend on the number of processes.
        self.step_noise = StepNoise()
        self.train_loss = distributed.data_parallel(distributed.KeyedLoss(vae, loss, self.step_noise), self.world,
                                                    data.example_batch(8))
        # The untrained model is the yardstick of divergence (the same on resume: same seed, same model).
        self.reference = {"training objective": -initial_loss,
                          "validation ELBO": self.validate() if len(data.val) else math.nan}
        history, start_epoch = self._restore()
        print(self._describe())
        print(describe_kl_term(q_probe, p_probe))  # closed form (mean_field uses it) or Monte Carlo

        steps = 0 if config.evaluate_only else (config.num_epochs - start_epoch) * data.num_batches(config.batch_size)
        estimate = estimate_seconds(
            vae, loss, data.example_batch(config.batch_size), data.test.images, steps=steps,
            epochs=0 if config.evaluate_only else config.num_epochs - start_epoch, val_images=len(data.val),
            test_images=len(data.test), eval_samples=config.eval_samples)
        print(estimate.describe())
        check_time(estimate, config.time_limit_hours)

        if steps:
            distributed.check_batches(len(data.train), config.batch_size, self.world)
            history = self._fit(history, start_epoch)
        elif self.resumed is not None and not config.evaluate_only:
            print(f"the checkpoint is at epoch {start_epoch} of {config.num_epochs}: nothing to train; evaluating")
        if self.best["epoch"] > 0:
            vae.load_state_dict(self.best["state"])
        return self._evaluate(history)

    def _build(self) -> VAE:
        try:
            vae = build_vae(self.model_config)
        except (RuntimeError, MemoryError) as error:
            if isinstance(error, MemoryError) or "alloc" in str(error).lower():
                raise ResourceError(f"the model does not fit in memory ({str(error).splitlines()[0][:120]}); "
                                    "make it smaller (--z-dim, --hidden-dims, the pieces' sizes)") from None
            raise
        return vae.to(self.device)

    def _check_data(self, vae: VAE, data: ImageData) -> None:
        """The data against the likelihood's support, once, up front (training steps never read
        values back). Under dynamic binarization the training images are intensities, binarized
        batch by batch."""
        splits = {"validation images": data.val.images, "test images": data.test.images}
        if data.binarize != "dynamic":
            splits["training images"] = data.train.images
        for name, images in splits.items():
            if len(images):
                vae.check_images(images, f"the {name} of {data.name}")

    def _restore(self) -> tuple[list[dict], int]:
        """Model selection so far, and (on resume) the saved states: the history and the epoch to
        continue from."""
        vae, record = self.vae, self.resumed.record if self.resumed else None
        self.best = {"val_elbo": -math.inf, "epoch": 0, "state": copy.deepcopy(vae.state_dict())}
        if record is None:
            return [], 0
        vae.load_state_dict(checkpoint.check_state(self.resumed.file, vae, record["model_state"]))
        if record["kind"] == "model":  # evaluate a selected model as it is
            self.best.update(epoch=record.get("epoch", 0), state=copy.deepcopy(vae.state_dict()))
            return list(record.get("history", [])), record.get("epoch", 0)
        self.optimizer.load_state_dict(record["optimizer_state"])
        self.loss.load_state_dict(record["objective_state"])  # e.g. the KL warm-up position
        checkpoint.set_rng_state(record["rng_state"])
        best_file = self.resumed.folder / "best.pt"
        best_state = checkpoint.check_state(best_file, vae, checkpoint.load_checkpoint(best_file, self.device)[
            "model_state"]) if best_file.is_file() else copy.deepcopy(vae.state_dict())
        self.best.update(val_elbo=record["best_val_elbo"], epoch=record["best_epoch"], state=best_state)
        if self.best["val_elbo"] is None:  # written by a run without a validation split
            self.best["val_elbo"] = -math.inf
        if self.folder.path.resolve() != self.resumed.folder.resolve() and best_file.is_file():
            self._save_best(record["best_epoch"], self.best["state"], record["history"])  # a fork keeps its model
        return list(record["history"]), record["epoch"]

    def validate(self) -> float:
        """Validation ELBO per image, one z per image. The draws are keyed by the run's seed and the
        batch of images (:func:`pyro_vae.noise.seeded`): every epoch is scored with the same ε (less
        noise in model selection), whatever the number of processes it is sharded over."""
        if len(self.data.val) == 0:
            return math.nan
        return distributed.evaluate(self.world, self.vae, self.data.val.images, 1, self.config.eval_batch_size,
                                    seed=derive_seed(self.config.seed, VALIDATION)).elbo.mean().item()

    def _fit(self, history: list[dict], start_epoch: int) -> list[dict]:
        config, data = self.config, self.data
        epochs = itertools.count(start_epoch + 1)

        def batches():  # fit asks for each epoch's batches in turn
            return distributed.epoch_batches(data.train.images, config.batch_size, seed=config.seed,
                                             epoch=next(epochs), world=self.world, step_noise=self.step_noise,
                                             dynamic=data.binarize == "dynamic")
        try:
            return fit(self.train_loss, self.optimizer, batches, config.num_epochs,
                       start_epoch=start_epoch, history=history, num_batches=data.num_batches(config.batch_size),
                       validate=self.validate, on_epoch_end=self._on_epoch_end,
                       lr_factor=LR_SCHEDULES[config.lr_schedule], progress=config.progress,
                       reduce=distributed.epoch_reducer(self.world))
        except TrainingDivergedError as error:
            raise TrainingDivergedError(f"{error}{self._kept()}") from None

    def _on_epoch_end(self, history: list[dict]) -> None:
        """Stop on divergence before anything is saved; else select and checkpoint."""
        record = history[-1]
        self._check_progress(record)
        has_val = len(self.data.val) > 0
        if not has_val or record["val_elbo"] > self.best["val_elbo"]:  # model selection on validation only
            self.best.update(val_elbo=record["val_elbo"] if has_val else None, epoch=record["epoch"],
                             state=copy.deepcopy(self.vae.state_dict()))
            self._save_best(record["epoch"], None, history)
        if not self.world.is_main:
            return
        self.paths["checkpoint"] = checkpoint.save_checkpoint(
            self.folder / "checkpoint.pt", self.vae, self.optimizer, epoch=record["epoch"], history=history,
            run_config=self.config.to_dict(), best_val_elbo=self.best["val_elbo"] if has_val else None,
            best_epoch=self.best["epoch"], objective_state=self.loss.state_dict(), data_files=self.data.files,
            **self.identity)

    def _save_best(self, epoch: int, state: dict | None, history: list[dict]) -> None:
        if not self.world.is_main:
            return
        vae = self.vae
        if state is not None:  # save another state than the current one, through a copy of the model
            vae = copy.deepcopy(self.vae)
            vae.load_state_dict(state)
        self.paths["best"] = checkpoint.save_checkpoint(
            self.folder / "best.pt", vae, None, epoch=epoch, history=history, run_config=self.config.to_dict(),
            val_elbo=self.best["val_elbo"] if len(self.data.val) else None, data_files=self.data.files, **self.identity)

    def _check_progress(self, record: dict) -> None:
        """Divergence: a training objective (the epoch's mean) or validation ELBO that is NaN or
        infinite, or far below the untrained model's: worse by more than the untrained value's own
        magnitude (a Bernoulli model of MNIST starts near −D·log 2 ≈ −543 nats; an exploding one
        falls to −10⁴ … −10⁸)."""
        measured = {"training objective": record["train_elbo"], "validation ELBO": record.get("val_elbo", math.nan)}
        for name, value in measured.items():
            reference = self.reference[name]
            if name == "validation ELBO" and not len(self.data.val):
                continue
            if not math.isfinite(value):
                raise TrainingDivergedError(f"training diverged in epoch {record['epoch']}: the {name} is {value}; "
                                            f"lower the learning rate (lr = {self.config.lr:g}) and start again")
            if math.isfinite(reference) and value < reference - max(abs(reference), 1.0):
                raise TrainingDivergedError(
                    f"training diverged in epoch {record['epoch']}: the {name} fell to {value:.1f} nats per image, "
                    f"far below the untrained model's {reference:.1f}; lower the learning rate "
                    f"(lr = {self.config.lr:g}) and start again")

    def _kept(self) -> str:
        saved = self.folder / "checkpoint.pt"
        if not saved.is_file():
            return " (nothing was saved)"
        return f" (the last good state is kept in {saved}; start again with overwrite, --overwrite)"

    # -- evaluation and outputs ----------------------------------------------------------------
    def _evaluate(self, history: list[dict]) -> RunResult:
        """Evaluate the selected model: test ELBO and importance-sampled log p(x) from one set of K
        log-weights per image; validation ELBO of the same model beside them."""
        config, vae, data = self.config, self.vae, self.data
        start = time.perf_counter()
        test = distributed.evaluate(self.world, vae, data.test.images, config.eval_samples, config.eval_batch_size,
                                    seed=config.seed, psis=config.eval_samples >= MIN_PSIS_SAMPLES,
                                    ks=config.bound_ks(), progress=config.progress)
        eval_seconds = time.perf_counter() - start
        bad = test.non_finite()
        if len(bad):
            raise TrainingDivergedError(
                f"evaluation: the selected model gives a NaN or infinite ELBO or log-likelihood for {len(bad)} of "
                f"{len(data.test)} test images (the first is image {bad[0].item()}); no result was written")
        num_active, activity = active_units(vae, data.test.images)
        kl_dims = kl_per_dimension(vae, data.test.images)
        layered = len(vae.latent_sites) > 1  # per-layer diagnostics of a hierarchical model
        units_per_layer = active_units_per_layer(vae, data.test.images) if layered else None
        kl_sites = kl_per_site(vae, data.test.images) if layered else None
        main = self.world.is_main
        if main:
            self.paths["evaluation"] = save_torch(self.folder / "evaluation.pt", {
                "elbo": test.elbo, "log_likelihood": test.log_likelihood, "khat": test.khat, "bounds": test.bounds,
                "activity": activity, "kl_per_dim": kl_dims, **self.identity})
        summary = test.summary()
        val_elbo = self.validate() if len(data.val) else None
        metrics = _json_safe({
            "test_elbo": summary["elbo"], "test_elbo_stderr": summary["elbo_stderr"],
            "test_log_likelihood": summary["log_likelihood"],
            "test_log_likelihood_stderr": summary["log_likelihood_stderr"],
            "val_elbo": val_elbo, "eval_samples": config.eval_samples, "num_test_images": summary["num_images"],
            "eval_seconds": eval_seconds,
            "psis_khat_share_above_0.7": summary["khat_share_above_0.7"],
            "bounds": summary["bounds"], "bounds_stderr": summary["bounds_stderr"],
            "active_units": num_active, "z_dim": self.model_config["z_dim"],
            "kl_per_dim": kl_dims.tolist() if kl_dims is not None else None,
            **({"active_units_per_layer": units_per_layer, "kl_per_layer": kl_sites} if layered else {}),
            "selected_epoch": self.best["epoch"], "kl_closed_form": self.kl_closed_form,
            "num_epochs": len(history),
            "seconds_per_epoch": sum(r["seconds"] for r in history) / len(history) if history else None,
            "history": history,
            "config": {"run": config.to_dict(), "model": self.model_config},
            "data_files": data.files,
            "versions": versions(),
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else _cpu_name(),
            "world_size": self.world.size, "backend": self.world.backend, **self.identity,
        })
        if not main:  # the main process writes the run's files
            return RunResult(config, metrics, test, history, vae, dict(self.paths))
        self.paths["metrics"] = write_json(self.folder / "metrics.json", metrics)
        self._plot(history, summary, test)
        print(format_summary(metrics, self.paths))
        return RunResult(config, metrics, test, history, vae, dict(self.paths))

    def _plot(self, history: list[dict], summary: dict, test: Evaluation) -> None:
        vae, data, out = self.vae, self.data, self.folder.path
        self.paths["reconstructions"] = plots.plot_reconstructions(vae, data.test.images, out / "reconstructions.png")
        self.paths["samples"] = plots.plot_samples(vae, out / "samples.png")
        self.paths["latent"] = plots.plot_latent(vae, data.test.images, data.test.labels, out / "latent.png")
        if self.model_config["z_dim"] == 2 and len(vae.latent_sites) == 1:
            self.paths["manifold"] = plots.plot_manifold(vae, out / "manifold.png")
        if history:
            self.paths["elbo"] = plots.plot_elbo(history, out / "elbo.png", test_elbo=summary["elbo"])
        if test.khat is not None:
            self.paths["khat"] = plots.plot_khat({self.config.label(): test.khat}, out / "khat.png")

    def _describe(self) -> str:
        config, data = self.config, self.data
        return (f"{data.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images, "
                f"binarize={data.binarize}\nmodel: z_dim={self.model_config['z_dim']}, {describe(self.model_config)}\n"
                f"objective: {config.objective} {config.objective_options}")


def _json_safe(value: Any) -> Any:
    """NaN and infinities become ``None`` (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def versions() -> dict[str, str]:
    from ._torchvision import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "pyro": pyro.__version__,
            "pyro_vae": _package_version(), "platform": platform.platform()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def _package_version() -> str:
    from . import __version__

    return __version__


def format_summary(metrics: dict[str, Any], paths: dict[str, Path] | None = None) -> str:
    """The final numbers as a short Markdown table (nats per image)."""
    def pm(value, stderr):
        if value is None:
            return "n/a"
        return f"{value:.2f}" if stderr is None else f"{value:.2f} ± {stderr:.2f}"

    k = metrics["eval_samples"]
    rows = [
        ("test ELBO", pm(metrics["test_elbo"], metrics["test_elbo_stderr"])),
        (f"test log p(x), importance-sampled, K={k}",
         pm(metrics["test_log_likelihood"], metrics["test_log_likelihood_stderr"])),
        ("validation ELBO", pm(metrics["val_elbo"], None)),
        ("test images", str(metrics["num_test_images"])),
        ("epochs (selected)", f"{metrics['num_epochs']} ({metrics['selected_epoch']})"),
        ("seconds per epoch", pm(metrics["seconds_per_epoch"], None)),
    ]
    if metrics.get("psis_khat_share_above_0.7") is not None:
        rows.append(("share of test images with PSIS k̂ > 0.7", f"{metrics['psis_khat_share_above_0.7']:.2f}"))
    if metrics.get("bounds"):
        ks = sorted(metrics["bounds"], key=int)
        rows.append((f"E[L_K] for K = {', '.join(str(k) for k in ks)}",
                     ", ".join(f"{metrics['bounds'][k]:.2f}" for k in ks)))
    if metrics.get("active_units") is not None:
        rows.append(("active latent units (Cov_x E_q[z_j|x] > 0.01)", f"{metrics['active_units']} of {metrics['z_dim']}"))
        if metrics.get("active_units_per_layer"):
            rows.append(("active units per layer z1, z2, ..", ", ".join(map(str, metrics["active_units_per_layer"]))))
            rows.append(("KL per layer (nats)", ", ".join(f"{k} {v:.2f}" for k, v in metrics["kl_per_layer"].items())))
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'metric'.ljust(width)} | value (nats per image; ± standard error) |",
             f"| {'-' * width} | --- |"]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    if paths:
        folders = {path.parent for path in paths.values()}
        names = ", ".join(sorted(path.name for path in paths.values()))
        lines.append(f"\nwritten to {'/, '.join(str(f) for f in sorted(folders))}/: {names}")
    return "\n".join(lines)
