"""Trace_ELBO against importance-weighted bounds: same model, data, seeds and epochs.

    python examples/compare_bounds.py --data-dir ../shared/data --runs elbo:1 elbo:50 iwae:5 iwae:50
    python examples/compare_bounds.py --protocol burda2015 --cuda     # the paper's full schedule

Each run is ``OBJECTIVE:K`` (K = --num-particles of that run: particles of the ELBO, importance
samples of IWAE; Burda et al., arXiv:1509.00519, Table 1 compares VAE k=1, VAE k=50, IWAE k=5 and
IWAE k=50). Every trained model is evaluated with the same protocol: test ELBO, the bounds E[L_K]
for the --eval-ks, and the importance-sampled test log-likelihood with K = --eval-samples, all from
one set of log-weights per image; the share of images whose PSIS k̂ exceeds 0.7; active units.
Differences between runs are paired over the same test images. All other flags are those of
examples/mnist_svi.py. Writes to --out: one folder per run (as mnist_svi.py writes), results.md,
results.json, bounds_vs_k.png, khat.png, training_curves.png. With --resume OUT, each run
continues from its own checkpoint in OUT when there is one.
"""

import argparse
import copy
import json
import math
import sys
from pathlib import Path

import torch

from pyro_vae import plots
from pyro_vae.cli import build_parser, parse_args
from pyro_vae.data import DataNotFoundError
from pyro_vae.experiment import run
from pyro_vae.objectives import OBJECTIVES
from pyro_vae.train import NonFiniteLossError


def run_spec(text: str):
    name, _, k = text.partition(":")
    if name not in OBJECTIVES:
        raise argparse.ArgumentTypeError(f"unknown objective {name!r} in {text!r}; choose from {OBJECTIVES.names()}")
    try:
        k = int(k or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"K must be an integer in {text!r} (e.g. iwae:50)") from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"K must be >= 1 in {text!r}")
    return name, k


def mean_and_stderr(values):
    values = torch.as_tensor(values, dtype=torch.float64)
    stderr = (values.std(unbiased=True) / math.sqrt(len(values))).item() if len(values) > 1 else float("nan")
    return values.mean().item(), stderr


def summarize(results, eval_samples):
    """One row per run: means over seeds (± their standard error over seeds, or, with one seed, the
    standard error over test images); Δ log p(x) against the first run, paired per image within
    each seed."""
    reference = results[0]
    rows = []
    for result in results:
        seeds = result["seeds"]
        row = {"objective": result["objective"], "K": result["K"], "seeds": len(seeds)}
        for key in ("test_elbo", "test_log_likelihood", "active_units", "psis_khat_share_above_0.7",
                    "seconds_per_epoch"):
            row[key], row[key + "_se"] = mean_and_stderr([m[key] for m in seeds])
        if len(seeds) == 1:
            row["test_elbo_se"] = seeds[0]["test_elbo_stderr"]
            row["test_log_likelihood_se"] = seeds[0]["test_log_likelihood_stderr"]
        # paired over images (and averaged over seeds): this run minus the reference run
        differences = [(ev["log_likelihood"] - ref["log_likelihood"]).double()
                       for ev, ref in zip(result["evaluations"], reference["evaluations"])]
        if len(differences) == 1:  # one seed: the error of the test-image sample
            row["delta_log_likelihood"] = differences[0].mean().item()
            row["delta_log_likelihood_se"] = (differences[0].std() / math.sqrt(len(differences[0]))).item()
        else:  # several seeds: training noise dominates, so the error is over seeds
            row["delta_log_likelihood"], row["delta_log_likelihood_se"] = mean_and_stderr(
                [d.mean() for d in differences])
        rows.append(row)
    return rows


def markdown_table(rows, eval_samples, reference_label):
    def pm(value, se, digits=2):
        return f"{value:.{digits}f}" if math.isnan(se) else f"{value:.{digits}f} ± {se:.{digits}f}"

    lines = [
        (f"| objective | K | test ELBO | test log p(x), IWAE-{eval_samples} | NLL = −log p(x) | "
         f"Δ log p(x) vs {reference_label} (paired) | active units | k̂ > 0.7 | s / epoch |"),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['objective']} | {r['K']} | {pm(r['test_elbo'], r['test_elbo_se'])} | "
            f"{pm(r['test_log_likelihood'], r['test_log_likelihood_se'])} | {-r['test_log_likelihood']:.2f} | "
            f"{pm(r['delta_log_likelihood'], r['delta_log_likelihood_se'])} | "
            f"{pm(r['active_units'], r['active_units_se'], 1)} | "
            f"{pm(r['psis_khat_share_above_0.7'], r['psis_khat_share_above_0.7_se'])} | "
            f"{r['seconds_per_epoch']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = build_parser(__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--runs", type=run_spec, nargs="+",
                        default=[("elbo", 1), ("elbo", 50), ("iwae", 5), ("iwae", 50)],
                        help="OBJECTIVE:K for each run (default: elbo:1 elbo:50 iwae:5 iwae:50)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: --seed)")
    parser.set_defaults(out="results/compare_bounds")
    args = parse_args(parser, argv)
    out = Path(args.out)
    resume_root = Path(args.resume) if args.resume else None
    if resume_root is not None and not resume_root.is_dir():
        parser.error(f"--resume {resume_root}: give the --out folder of an earlier compare_bounds run")
    seeds = args.seeds or [args.seed]
    results = []
    try:
        for objective, k in args.runs:
            result = {"objective": objective, "K": k, "seeds": [], "evaluations": [], "histories": []}
            for seed in seeds:
                name = f"{objective}_K{k}_seed{seed}"
                print(f"\n=== {name} ===")
                run_args = copy.copy(args)
                run_args.objective, run_args.objective__num_particles, run_args.seed = objective, k, seed
                run_args.out = str(out / name)
                checkpoint = resume_root / name / "checkpoint.pt" if resume_root else None
                run_args.resume = str(checkpoint) if checkpoint is not None and checkpoint.is_file() else None
                metrics = run(parser, run_args)
                result["seeds"].append(metrics)
                result["evaluations"].append(torch.load(out / name / "evaluation.pt", weights_only=True))
                result["histories"].append(metrics["history"])
            results.append(result)
    except (DataNotFoundError, NonFiniteLossError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    rows = summarize(results, args.eval_samples)
    reference = f"{rows[0]['objective']} K={rows[0]['K']}"
    table = markdown_table(rows, args.eval_samples, reference)
    first = results[0]["seeds"][0]
    protocol = (f"{first['config']['run']['dataset']}, {first['num_test_images']} test images, "
                f"{first['num_epochs']} epochs, seeds {seeds}, device {first['device']}")
    (out / "results.md").write_text(f"{protocol}\n\n{table}\n")
    (out / "results.json").write_text(json.dumps({"protocol": protocol, "rows": rows}, indent=2))
    labels = [f"{r['objective']} K={r['K']}" for r in results]
    plots.plot_bounds_vs_k({label: r["seeds"][0]["bounds"] for label, r in zip(labels, results)},
                           out / "bounds_vs_k.png")
    khats = {label: r["evaluations"][0]["khat"] for label, r in zip(labels, results)
             if r["evaluations"][0]["khat"] is not None}
    if khats:
        plots.plot_khat(khats, out / "khat.png")
    plots.plot_training_curves({label: r["histories"][0] for label, r in zip(labels, results)},
                               out / "training_curves.png")
    print(f"\n{protocol}\n\n{table}\n\nNLL is the negative log-likelihood, as papers report it (lower is better); "
          f"log p(x) and the bounds are log-densities (higher is better).\nwritten to {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
