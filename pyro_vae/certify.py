"""Certify a saved run's test log-likelihood: importance sampling against AIS on the same test images,
the BDMC sandwich on images simulated from the model, and the inference gap in its parts.

:func:`certify` reads a run folder (its selected model, ``best.pt``, and its settings), takes the
first ``images`` test images of the run's data set (binarized as the run binarized them), and
writes to ``out`` (default ``<run>/likelihood``), atomically and in a locked folder:

* ``likelihood.json``: for each estimate, the mean over images ± its standard error, its seconds
  per image, and every setting;
* ``likelihood.pt``: the per-image values (IS for each K, AIS with its standard error and
  acceptance, BDMC's bounds, the gaps);
* ``ais_vs_is.png`` (per image, AIS minus IS) and, with BDMC, ``bdmc.png`` (the sandwich's width
  against the number of steps).

A comparison of models can then be judged on AIS where importance sampling's PSIS k̂ says its
estimate is unreliable.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch

from . import plots
from .annealing import ais
from .bdmc import bdmc
from .checkpoint import load_checkpoint, resolve_checkpoint
from .config import RunConfig
from .data import load_data
from .errors import ConfigError, InputError
from .evaluate import MIN_PSIS_SAMPLES, evaluate
from .gaps import inference_gaps
from .outputs import RunDirectory, save_torch, write_json
from .run_identity import check_folder
from .stats import mean_and_stderr

OUTPUTS = ("likelihood.json", "likelihood.pt", "ais_vs_is.png", "bdmc.png")


@dataclasses.dataclass(frozen=True)
class CertifySettings:
    """What :func:`certify` computes. ``images``: the first N test images; ``is_samples``: the K of
    the importance-sampled estimates; ``ais_steps``/``ais_chains``: AIS on those images;
    ``bdmc_images`` simulated images with the sandwich at each of ``bdmc_steps``; ``gaps``: the
    inference gaps (local optimization for ``gap_steps`` steps) on the same images."""

    images: int = 100
    is_samples: tuple = (1000, 5000)
    ais_steps: int = 500
    ais_chains: int = 16
    bdmc_images: int = 0
    bdmc_steps: tuple = (100, 500)
    gaps: bool = False
    gap_steps: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("images", "ais_steps", "ais_chains", "gap_steps"):
            _positive(name, getattr(self, name))
        if isinstance(self.bdmc_images, bool) or not isinstance(self.bdmc_images, int) or self.bdmc_images < 0:
            raise ConfigError("bdmc_images", f"must be an integer >= 0, got {self.bdmc_images!r}")
        for name in ("is_samples", "bdmc_steps"):
            values = tuple(getattr(self, name))
            if not values:
                raise ConfigError(name, "takes at least one value")
            for value in values:
                _positive(name, value)
            object.__setattr__(self, name, tuple(sorted(set(values))))


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(name, f"must be a positive integer, got {value!r}")


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def certify(run: str | Path, settings: CertifySettings = CertifySettings(), *, out: str | Path | None = None,
            data_dir: str | None = None, device: str = "cpu", overwrite: bool = False,
            progress: bool = True) -> dict[str, Any]:
    """Compute the estimates of the module's description for the run in ``run`` and write them to
    ``out``; return the summary written to ``likelihood.json``."""
    from .experiment import _device

    file = resolve_checkpoint(run, "best.pt")
    record = load_checkpoint(file, "cpu")
    if Path(run).expanduser().is_dir():  # a run folder: its selected model must be of its own run
        check_folder(file.parent, {file: record}, files=("checkpoint.pt", "best.pt"))
    if not record.get("run_config"):
        raise InputError(f"{file} holds no run settings: certify a folder written by pyro_vae.run")
    config = RunConfig.from_dict(record["run_config"]).replace(device=device, **({"data_dir": data_dir} if data_dir
                                                                                  else {}))
    target = _device(config)
    from .checkpoint import load

    vae = load(file, map_location=target)
    data = load_data(config.dataset, config.data_dir, config.binarize, config.train_size, config.val_size,
                     settings.images, target)
    x = data.test.images
    folder = RunDirectory(Path(out) if out is not None else file.parent / "likelihood", markers=("likelihood.json",),
                          outputs=OUTPUTS)
    summary: dict[str, Any] = {"run": str(file.parent), "model": record["model_config"],
                               "settings": dataclasses.asdict(settings), "test_images": len(x),
                               "dataset": config.dataset, "binarize": config.binarize, "device": str(target)}
    per_image: dict[str, Any] = {}
    with folder.claim(fresh=True, overwrite=overwrite):
        for k in settings.is_samples:
            torch.manual_seed(settings.seed)
            result, seconds = _timed(evaluate, vae, x, k, psis=k >= MIN_PSIS_SAMPLES, progress=progress)
            per_image[f"is_{k}"] = result.log_likelihood
            summary[f"is_{k}"] = {**_mean(result.log_likelihood), "seconds_per_image": seconds / len(x),
                                  "khat_share_above_0.7": result.summary()["khat_share_above_0.7"]}
            per_image.setdefault("elbo", result.elbo)
        torch.manual_seed(settings.seed)
        estimate, seconds = _timed(ais, vae, x, settings.ais_steps, settings.ais_chains, progress=progress)
        per_image.update(ais=estimate.log_likelihood, ais_stderr=estimate.stderr, ais_acceptance=estimate.acceptance)
        summary["ais"] = {**_mean(estimate.log_likelihood), "seconds_per_image": seconds / len(x),
                          "steps": settings.ais_steps, "chains": settings.ais_chains,
                          "mean_chain_stderr": estimate.stderr.mean().item(),
                          "acceptance": estimate.acceptance.mean().item()}
        best_is = f"is_{max(settings.is_samples)}"
        summary["ais_minus_is"] = _mean(estimate.log_likelihood - per_image[best_is])
        summary["ais_minus_is"]["is"] = best_is
        if settings.bdmc_images:
            summary["bdmc"] = []
            for steps in settings.bdmc_steps:
                torch.manual_seed(settings.seed)
                sandwich, seconds = _timed(bdmc, vae, settings.bdmc_images, steps, settings.ais_chains,
                                           progress=progress)
                per_image[f"bdmc_{steps}"] = {"lower": sandwich.lower, "upper": sandwich.upper}
                summary["bdmc"].append({"steps": steps, "lower": _mean(sandwich.lower), "upper": _mean(sandwich.upper),
                                        "width": _mean(sandwich.width), "seconds_per_image": seconds / settings.bdmc_images})
        if settings.gaps:
            torch.manual_seed(settings.seed)
            gaps, seconds = _timed(inference_gaps, vae, x, optimize_steps=settings.gap_steps, log_likelihood=estimate,
                                   progress=progress)
            per_image.update(approximation_gap=gaps.approximation, amortization_gap=gaps.amortization)
            summary["gaps"] = {name: _mean(getattr(gaps, name)) for name in
                               ("approximation", "amortization", "elbo_optimized", "elbo_amortized")}
            summary["gaps"]["seconds_per_image"] = seconds / len(x)
        save_torch(folder / "likelihood.pt", per_image)
        write_json(folder / "likelihood.json", summary)
        plots.plot_ais_vs_is(per_image[best_is], per_image["ais"], folder / "ais_vs_is.png",
                             label=f"K = {max(settings.is_samples)}")
        if settings.bdmc_images:
            plots.plot_bdmc(summary["bdmc"], folder / "bdmc.png")
    summary["out"] = str(folder.path)
    return summary


def _mean(values: torch.Tensor) -> dict[str, float]:
    mean, stderr = mean_and_stderr(values)
    return {"mean": mean, "stderr": stderr if math.isfinite(stderr) else None}
