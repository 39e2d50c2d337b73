"""One run of the main job, step by step: data -> model -> objective -> fit -> evaluate -> plots.

``examples/mnist_svi.py`` is a thin command line around :func:`run`; other examples reuse it.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from . import checkpoint, plots
from .build import build_vae, describe, make_config
from .cli import SELECTORS, build_parser, parse_args, piece_options
from .compatibility import check_combination
from .data import DataNotFoundError, load_data
from .evaluate import active_units, evaluate, kl_per_dimension
from .kl import describe_kl_term, has_closed_form_kl
from .objectives import make_objective
from .registry import LIKELIHOODS
from .train import LR_SCHEDULES, NonFiniteLossError, fit, make_adam

#: Settings that decide what a resumed run trains; on --resume they come from the checkpoint.
TRAINING_SETTINGS = ("dataset", "binarize", "train_size", "val_size", "batch_size", "lr", "lr_schedule",
                     "adam_eps", "seed", "objective", "objective_options")


def run_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """Every setting of the run as plain data (stored in metrics.json and in checkpoints)."""
    return {
        "dataset": args.dataset, "binarize": args.binarize, "train_size": args.train_size,
        "val_size": args.val_size, "test_size": args.test_size, "batch_size": args.batch_size,
        "lr": args.lr, "lr_schedule": args.lr_schedule, "adam_eps": args.adam_eps, "seed": args.seed,
        "num_epochs": args.num_epochs, "protocol": args.protocol,
        "objective": args.objective, "objective_options": piece_options(parser, args, "objective"),
        "eval_samples": args.eval_samples, "eval_batch_size": args.eval_batch_size,
        "eval_ks": sorted({k for k in args.eval_ks if k <= args.eval_samples} | {args.eval_samples}),
        "cuda": args.cuda, "data_dir": args.data_dir, "pyro_validation": args.pyro_validation,
    }


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject impossible combinations up front (``parser.error``: message and exit status 2)."""
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda was given but no CUDA GPU is available (torch.cuda.is_available() is False); "
                     "drop --cuda to run on the CPU")
    if args.evaluate_only and not args.resume:
        parser.error("--evaluate-only needs --resume PATH (the checkpoint to evaluate)")
    if args.data_dir is not None and not Path(args.data_dir).expanduser().is_dir():
        parser.error(f"--data-dir {args.data_dir}: no such directory. It should hold "
                     "MNIST/raw/*-ubyte.gz (torchvision's layout), e.g. --data-dir ../shared/data")
    if args.resume is not None and not _checkpoint_path(args.resume).is_file():
        parser.error(f"--resume {args.resume}: no checkpoint file there")
    likelihood = LIKELIHOODS[args.likelihood].factory
    if getattr(likelihood, "data", None) == "binary" and args.binarize == "none":
        parser.error(f"--likelihood {args.likelihood} is a density on binary images only, but --binarize is "
                     "'none' (grey levels); use --binarize dynamic/static, or a continuous likelihood "
                     "such as --likelihood gaussian")


def _checkpoint_path(path: str) -> Path:
    path = Path(path).expanduser()
    return path / "checkpoint.pt" if path.is_dir() else path


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
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyro_vae")
    except PackageNotFoundError:
        return "unknown"


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or, with --evaluate-only, just evaluate) and write every output to ``args.out``.

    Pyro's validation is off unless ``--pyro-validation``: the data's compatibility with the
    likelihood is checked once, up front, instead of on every step."""
    check_args(parser, args)
    with pyro.validation_enabled(args.pyro_validation):
        return _run(parser, args)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cuda" if args.cuda else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    config = run_config(parser, args)

    # 1. The model: from the command line, or from the checkpoint being resumed.
    resumed = checkpoint.load_checkpoint(_checkpoint_path(args.resume), device) if args.resume else None
    if resumed is not None:
        saved = resumed["run_config"]
        config.update({key: saved[key] for key in TRAINING_SETTINGS})
        model_config = resumed["model_config"]
        print(f"resuming {args.resume} at epoch {resumed['epoch']}: model and training settings "
              "come from the checkpoint")
    else:
        model_config = None
    pyro.set_rng_seed(config["seed"])
    pyro.clear_param_store()

    # 2. The data, resident on the device.
    data = load_data(config["dataset"], args.data_dir, config["binarize"], config["train_size"],
                     config["val_size"], config["test_size"], device)
    if model_config is None:
        model_config = make_config(
            data.x_shape, args.z_dim, prior=args.prior, guide=args.guide, likelihood=args.likelihood,
            net=args.net, options={kind: piece_options(parser, args, kind) for kind in SELECTORS if kind != "objective"})
    vae = build_vae(model_config).to(device)

    # 3. The objective: a Pyro ELBO, seen by the training loop only as a loss module.
    objective = make_objective(config["objective"], config["objective_options"])
    loss = objective(vae.model, vae.guide)
    probe = data.test.images[:2]
    check_combination(vae, config["objective"], loss, probe)  # fails now, naming the combination
    with torch.no_grad():
        q_probe, p_probe = vae.encode(probe), vae.prior()
    optimizer = make_adam(vae.parameters(), lr=config["lr"], eps=config["adam_eps"])
    history, start_epoch = [], 0
    best = {"val_elbo": -float("inf"), "epoch": 0, "state": copy.deepcopy(vae.state_dict())}
    if resumed is not None:
        vae.load_state_dict(resumed["model_state"])
        optimizer.load_state_dict(resumed["optimizer_state"])
        loss.load_state_dict(resumed["objective_state"])  # e.g. the KL warm-up position
        checkpoint.set_rng_state(resumed["rng_state"])
        history, start_epoch = resumed["history"], resumed["epoch"]
        best_path = _checkpoint_path(args.resume).parent / "best.pt"
        best = {"val_elbo": resumed["best_val_elbo"], "epoch": resumed["best_epoch"],
                "state": checkpoint.load_checkpoint(best_path, device)["model_state"]
                if best_path.is_file() else copy.deepcopy(vae.state_dict())}
    print(_describe(model_config, config, data))
    print(describe_kl_term(q_probe, p_probe))  # closed form (mean_field uses it) or Monte Carlo

    def validate() -> float:
        """Validation ELBO per image, one z per image. The draws use a fixed seed on a forked
        generator: every epoch is scored with the same ε (less noise in model selection), and the
        training stream of random numbers is left untouched."""
        if len(data.val) == 0:
            return float("nan")
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config["seed"])
            return evaluate(vae, data.val.images, 1, args.eval_batch_size).elbo.mean().item()

    def on_epoch_end(history) -> None:
        record = history[-1]
        if len(data.val) == 0 or record["val_elbo"] > best["val_elbo"]:  # model selection on validation only
            best.update(val_elbo=record.get("val_elbo", float("nan")), epoch=record["epoch"],
                        state=copy.deepcopy(vae.state_dict()))
            checkpoint.save_checkpoint(out / "best.pt", vae, None, epoch=record["epoch"], run_config=config)
        checkpoint.save_checkpoint(out / "checkpoint.pt", vae, optimizer, epoch=record["epoch"],
                                   history=history, run_config=config, best_val_elbo=best["val_elbo"],
                                   best_epoch=best["epoch"], objective_state=loss.state_dict())

    # 4. Fit.
    if not args.evaluate_only and args.num_epochs > start_epoch:
        history = fit(loss, optimizer, lambda: data.train_batches(config["batch_size"]), args.num_epochs,
                      start_epoch=start_epoch, history=history, num_batches=data.num_batches(config["batch_size"]),
                      validate=validate, on_epoch_end=on_epoch_end, lr_factor=LR_SCHEDULES[config["lr_schedule"]],
                      progress=progress)
    if best["epoch"] > 0:
        vae.load_state_dict(best["state"])

    # 5. Evaluate the selected model: test ELBO and importance-sampled log p(x) from one set of
    #    K log-weights per image; validation ELBO of the same model beside them.
    start = time.perf_counter()
    test = evaluate(vae, data.test.images, args.eval_samples, args.eval_batch_size,
                    psis=args.eval_samples >= 100, ks=config["eval_ks"], progress=progress)
    eval_seconds = time.perf_counter() - start
    num_active, activity = active_units(vae, data.test.images)
    kl_dims = kl_per_dimension(vae, data.test.images)
    torch.save({"elbo": test.elbo, "log_likelihood": test.log_likelihood, "khat": test.khat,
                "bounds": test.bounds, "activity": activity, "kl_per_dim": kl_dims}, out / "evaluation.pt")
    summary = test.summary()
    metrics = {
        "test_elbo": summary["elbo"], "test_elbo_stderr": summary["elbo_stderr"],
        "test_log_likelihood": summary["log_likelihood"],
        "test_log_likelihood_stderr": summary["log_likelihood_stderr"],
        "val_elbo": validate() if len(data.val) else None,
        "eval_samples": args.eval_samples, "num_test_images": summary["num_images"],
        "eval_seconds": eval_seconds,
        "psis_khat_share_above_0.7": summary.get("khat_share_above_0.7"),
        "bounds": summary["bounds"], "bounds_stderr": summary["bounds_stderr"],
        "active_units": num_active, "z_dim": model_config["z_dim"],
        "kl_per_dim": kl_dims.tolist() if kl_dims is not None else None,
        "selected_epoch": best["epoch"],
        "kl_closed_form": has_closed_form_kl(q_probe, p_probe),
        "num_epochs": len(history),
        "seconds_per_epoch": sum(r["seconds"] for r in history) / len(history) if history else None,
        "history": history,
        "config": {"run": config, "model": model_config},
        "versions": versions(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))

    # 6. Plots.
    plots.plot_reconstructions(vae, data.test.images, out / "reconstructions.png")
    plots.plot_samples(vae, out / "samples.png")
    plots.plot_latent(vae, data.test.images, data.test.labels, out / "latent.png")
    if model_config["z_dim"] == 2:
        plots.plot_manifold(vae, out / "manifold.png")
    if history:
        plots.plot_elbo(history, out / "elbo.png", test_elbo=summary["elbo"])
    if test.khat is not None:
        plots.plot_khat({_label(config): test.khat}, out / "khat.png")
    print(format_summary(metrics, out))
    return metrics


def _label(config: dict[str, Any]) -> str:
    """e.g. ``iwae K=50``: the objective and its number of particles."""
    k = config["objective_options"].get("num_particles", 1)
    return f"{config['objective']} K={k}"


def _describe(model_config: dict[str, Any], config: dict[str, Any], data) -> str:
    return (f"{data.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images, "
            f"binarize={data.binarize}\nmodel: z_dim={model_config['z_dim']}, {describe(model_config)}\n"
            f"objective: {config['objective']} {config['objective_options']}")


def format_summary(metrics: dict[str, Any], out: Path | None = None) -> str:
    """The final numbers as a short Markdown table (nats per image)."""
    k = metrics["eval_samples"]
    rows = [
        ("test ELBO", f"{metrics['test_elbo']:.2f} ± {metrics['test_elbo_stderr']:.2f}"),
        (f"test log p(x), importance-sampled, K={k}",
         f"{metrics['test_log_likelihood']:.2f} ± {metrics['test_log_likelihood_stderr']:.2f}"),
        ("validation ELBO", "n/a" if metrics["val_elbo"] is None else f"{metrics['val_elbo']:.2f}"),
        ("test images", str(metrics["num_test_images"])),
        ("epochs (selected)", f"{metrics['num_epochs']} ({metrics['selected_epoch']})"),
        ("seconds per epoch", "n/a" if metrics["seconds_per_epoch"] is None
         else f"{metrics['seconds_per_epoch']:.2f}"),
    ]
    if metrics.get("psis_khat_share_above_0.7") is not None:
        rows.append(("share of test images with PSIS k̂ > 0.7",
                     f"{metrics['psis_khat_share_above_0.7']:.2f}"))
    if metrics.get("bounds"):
        ks = sorted(metrics["bounds"], key=int)
        rows.append((f"E[L_K] for K = {', '.join(str(k) for k in ks)}",
                     ", ".join(f"{metrics['bounds'][k]:.2f}" for k in ks)))
    if metrics.get("active_units") is not None:
        rows.append(("active latent units (Cov_x E_q[z_j|x] > 0.01)", f"{metrics['active_units']} of {metrics['z_dim']}"))
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'metric'.ljust(width)} | value (nats per image; ± standard error) |",
             f"| {'-' * width} | --- |"]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    if out is not None:
        written = sorted(p.name for p in Path(out).iterdir() if p.suffix in (".json", ".pt", ".png"))
        lines.append(f"\nwritten to {out}/: {', '.join(written)}")
    return "\n".join(lines)


def main(argv=None, description: str = __doc__) -> int:
    """Command-line entry point; returns the exit status (2 for bad input)."""
    parser = build_parser(description)
    args = parse_args(parser, argv)
    try:
        run(parser, args)
    except (DataNotFoundError, NonFiniteLossError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
