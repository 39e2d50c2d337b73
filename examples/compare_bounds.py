"""Trace_ELBO against importance-weighted bounds: same model, data, seeds and epochs.

    python examples/compare_bounds.py --data-dir ../shared/data --runs elbo:1 elbo:50 iwae:5 iwae:50
    python examples/compare_bounds.py --protocol burda2015 --cuda     # the paper's full schedule
    python examples/compare_bounds.py ... --resume     # continue an interrupted comparison in --out

Each run is OBJECTIVE:K (K = --num-particles of that run: particles of the ELBO, importance
samples of IWAE; Burda et al., arXiv:1509.00519, Table 1 compares VAE k=1, VAE k=50, IWAE k=5 and
IWAE k=50). Every trained model is evaluated with the same protocol: test ELBO, the bounds E[L_K]
for the --eval-ks, and the importance-sampled test log-likelihood with K = --eval-samples, all from
one set of log-weights per image; the share of images whose PSIS k̂ exceeds 0.7 (n/a below
K = 100); active units. Differences between runs are paired over the same test images
(pyro_vae.compare). All other flags are those of examples/mnist_svi.py.

Writes to --out: one folder per run (as mnist_svi.py writes), kept as soon as the run finishes;
results.md and results.json, rewritten after every run; bounds_vs_k.png, khat.png,
training_curves.png. With --ais-images N, every run is also certified by AIS on its first N test
images (beside importance sampling on the same images), kept in <run>/likelihood/. With --resume, finished runs are reused and an interrupted one continues from
its checkpoint, so the summary is rebuilt without training again.
--jobs N runs N runs at once, each in its own process (with --cuda, one GPU each, in turn).
"""

import argparse
import sys
from pathlib import Path

from pyro_vae import plots
from pyro_vae.cli import add_ais_flags, add_jobs_flag, ais_column, build_parser, parse, report_errors
from pyro_vae.compare import Variant, markdown_table, run_comparison, summarize
from pyro_vae.objectives import OBJECTIVES
from pyro_vae.outputs import write_json, write_text

OUTPUTS = ("results.md", "results.json", "bounds_vs_k.png", "khat.png", "training_curves.png")
METRICS = ("test_elbo", "test_log_likelihood", "active_units", "psis_khat_share_above_0.7", "seconds_per_epoch")
AIS_METRICS = ("ais_log_likelihood", "is_subset_log_likelihood")


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


def table(rows, eval_samples: int, ais_images: int = 0) -> str:
    reference = f"{rows[0]['objective']} K={rows[0]['K']}"
    certified = [(f"log p(x), AIS, first {ais_images} test images", "ais_log_likelihood", 2),
                 (f"IWAE-{eval_samples}, same images", "is_subset_log_likelihood", 2)] if ais_images else []
    return markdown_table(rows, [
        ("objective", "objective", None), ("K", "K", None), ("test ELBO", "test_elbo", 2),
        (f"test log p(x), IWAE-{eval_samples}", "test_log_likelihood", 2),
        ("NLL = −log p(x)", "nll", lambda r: "n/a" if r["test_log_likelihood"] is None
         else f"{-r['test_log_likelihood']:.2f}"),
        (f"Δ log p(x) vs {reference} (paired)", "delta_log_likelihood", 2),
        ("active units", "active_units", 1), ("k̂ > 0.7", "psis_khat_share_above_0.7", 2),
        *certified,
        ("s / epoch", "seconds_per_epoch", lambda r: "n/a" if r["seconds_per_epoch"] is None
         else f"{r['seconds_per_epoch']:.1f}"),
    ])


def write_summary(out: Path, groups, seeds, ais_images: int = 0) -> str:
    """results.md / results.json and the plots, from the runs finished so far."""
    rows = summarize(groups, METRICS + (AIS_METRICS if ais_images else ()))
    first = groups[0].runs[0].metrics
    eval_samples = first["eval_samples"]
    protocol = (f"{first['config']['run']['dataset']}, {first['num_test_images']} test images, "
                f"{first['num_epochs']} epochs, seeds {list(seeds)}, device {first['device']}")
    text = table(rows, eval_samples, ais_images)
    write_text(out / "results.md", f"{protocol}\n\n{text}\n")
    write_json(out / "results.json", {"protocol": protocol, "rows": rows})
    plots.plot_bounds_vs_k({g.label: g.runs[0].metrics["bounds"] for g in groups}, out / "bounds_vs_k.png")
    khats = {g.label: g.runs[0].evaluation["khat"] for g in groups if g.runs[0].evaluation.get("khat") is not None}
    if khats:
        plots.plot_khat(khats, out / "khat.png")
    plots.plot_training_curves({g.label: g.runs[0].metrics["history"] for g in groups}, out / "training_curves.png")
    return f"{protocol}\n\n{text}"


def compare(flags) -> None:
    runs, resume = list(dict.fromkeys(flags.extra["runs"])), flags.extra["resume"]
    seeds = list(dict.fromkeys(flags.extra.get("seeds") or [flags.settings.get("seed", 0)]))
    flags.check_options(objective=[name for name, _ in runs])
    out = Path(flags.settings["out"])

    def variant(objective: str, k: int) -> Variant:
        return Variant(f"{objective} K={k}", {"objective": objective, "K": k}, lambda seed: flags.config(
            strict=False, objective=objective, objective_options={"num_particles": k}, seed=seed,
            out=str(out / f"{objective}_K{k}_seed{seed}")))

    summary, ais = [], ais_column(flags)
    run_comparison(out, [variant(objective, k) for objective, k in runs], seeds, resume=resume,
                   overwrite=flags.settings.get("overwrite", False), outputs=OUTPUTS, ais=ais, jobs=flags.extra["jobs"],
                   after_each_run=lambda groups: summary.append(
                       write_summary(out, groups, seeds, ais.images if ais else 0)))
    print(f"\n{summary[-1]}\n\nNLL is the negative log-likelihood, as papers report it (lower is better); log p(x) "
          f"and the bounds are log-densities (higher is better).\nwritten to {out}/")


def main(argv=None) -> int:
    parser = build_parser(__doc__, exclude=("resume", "evaluate_only", "objective", "--num-particles"),
                          defaults={"out": "results/compare_bounds"})
    comparison = parser.add_argument_group("comparison")
    comparison.add_argument("--runs", type=run_spec, nargs="+", default=[("elbo", 1), ("elbo", 50), ("iwae", 5),
                                                                        ("iwae", 50)],
                            metavar="OBJECTIVE:K", help="the runs (default: elbo:1 elbo:50 iwae:5 iwae:50)")
    comparison.add_argument("--seeds", type=int, nargs="+", metavar="N", help="seeds of every run (default: --seed)")
    comparison.add_argument("--resume", action="store_true", default=False,
                            help="continue the comparison in --out: reuse finished runs, continue unfinished ones")
    add_ais_flags(comparison)
    add_jobs_flag(comparison)
    flags = parse(parser, argv)
    return report_errors(parser.prog, compare, flags)


if __name__ == "__main__":
    sys.exit(main())
