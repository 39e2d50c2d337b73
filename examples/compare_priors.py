"""Compare priors p(z) and guides q(z|x) on MNIST: one table row per prior × guide, several seeds.

    python examples/compare_priors.py --data-dir ../shared/data          # every default below
    python examples/compare_priors.py --rows vamp:diagonal_normal standard_normal:iaf --seeds 0 1 2

Each (row, seed) is one run of the main job (pyro_vae/experiment.py, the flags of
examples/mnist_svi.py: same data, architecture, epochs and evaluation for every row), written to
--out/<prior>-<guide>/seed<k>/. Option flags of a piece (--vamp-num-components, --iaf-depth, ...)
apply to the rows that use it. Active latent units are counted by the main job on the test
images (Burda et al., arXiv:1509.00519: Cov_x(E_q[z_j|x]) > 1e-2).

Outputs in --out: table.md (means over seeds ± standard error over seeds), results.json (every
seed's numbers) and samples.png (new images from each row's model of the first seed).
--skip-existing reuses runs that already wrote metrics.json, so an interrupted comparison resumes.
"""

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import pyro_vae
from pyro_vae.cli import build_parser, choose
from pyro_vae.cli import parse_args as parse_flags
from pyro_vae.data import DataNotFoundError
from pyro_vae.experiment import run
from pyro_vae.plots import plot_sample_panels
from pyro_vae.train import NonFiniteLossError

DEFAULT_ROWS = ("standard_normal:diagonal_normal", "learned_normal:diagonal_normal", "mixture:diagonal_normal",
                "vamp:diagonal_normal", "flow:diagonal_normal", "standard_normal:full_rank", "standard_normal:iaf")
COLUMNS = (("test_elbo", "test ELBO"), ("test_log_likelihood", "log p(x)"), ("active_units", "active units"),
           ("seconds_per_epoch", "s / epoch"))


def parse_args(argv=None):
    parser = build_parser(__doc__)
    parser.set_defaults(out="results/compare_priors")
    comparison = parser.add_argument_group("comparison")
    comparison.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), metavar="PRIOR:GUIDE",
                            help="the prior × guide pairs to compare, one table row each")
    comparison.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds per row")
    comparison.add_argument("--skip-existing", action="store_true",
                            help="reuse a run whose directory already holds metrics.json")
    args = parse_flags(parser, argv)
    rows = []
    for row in args.rows:
        prior, _, guide = row.partition(":")
        try:
            rows.append(choose(args, prior=prior, guide=guide))
        except KeyError as error:
            parser.error(f"--rows {row}: {error.args[0]}")
    if len(args.seeds) < 2:
        parser.error("--seeds needs at least two seeds: the table's ± is a standard error over seeds")
    return parser, args, rows


def run_once(parser, row_args, seed, out):
    """The metrics of one training run (test ELBO, log p(x), active units, seconds per epoch):
    read from ``out`` with --skip-existing when it already holds them, else trained and evaluated."""
    metrics_path = out / "metrics.json"
    if not (row_args.skip_existing and metrics_path.is_file()):
        run(parser, argparse.Namespace(**{**vars(row_args), "seed": seed, "out": str(out)}))
    return json.loads(metrics_path.read_text())


def summarize(runs):
    """Mean over seeds and its standard error (sample standard deviation / √seeds) per column."""
    summary = {}
    for key, _ in COLUMNS:
        values = [m[key] for m in runs]
        summary[key] = (statistics.mean(values), statistics.stdev(values) / math.sqrt(len(values)))
    return summary


def format_table(results, eval_samples, z_dim):
    header = ["prior", "guide"] + [name if key != "test_log_likelihood" else f"log p(x), K = {eval_samples}"
                                   for key, name in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in results:
        cells = [f"`{row['prior']}`", f"`{row['guide']}`"]
        for key, _ in COLUMNS:
            mean, stderr = row["summary"][key]
            digits = 1 if key in ("active_units", "seconds_per_epoch") else 2
            cells.append(f"{mean:.{digits}f} ± {stderr:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nMeans over {len(results[0]['seeds'])} seeds ± standard error over seeds; nats per test image; "
                 f"active units of z_dim = {z_dim} (threshold 1e-2).")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser, args, rows = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, first_seed_models = [], {}
    start = time.perf_counter()
    try:
        for row_args in rows:
            row_dir = out / f"{row_args.prior}-{row_args.guide}"
            runs = [run_once(parser, row_args, seed, row_dir / f"seed{seed}") for seed in args.seeds]
            results.append({"prior": row_args.prior, "guide": row_args.guide, "seeds": args.seeds,
                            "summary": summarize(runs),
                            "runs": [{key: m[key] for key, _ in COLUMNS} for m in runs],
                            "model": runs[0]["config"]["model"]})
            first_seed = row_dir / f"seed{args.seeds[0]}" / "best.pt"
            first_seed_models[f"{row_args.prior} × {row_args.guide}"] = pyro_vae.load(first_seed)
            (out / "results.json").write_text(json.dumps(results, indent=2))
    except (DataNotFoundError, NonFiniteLossError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = format_table(results, args.eval_samples, args.z_dim)
    (out / "table.md").write_text(table + "\n")
    plot_sample_panels(first_seed_models, out / "samples.png")
    print(f"\n{table}\n\nwritten to {out}/: table.md, results.json, samples.png "
          f"({(time.perf_counter() - start) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
