"""Compare priors p(z) and guides q(z|x) on MNIST: one table row per prior × guide, several seeds.

    python examples/compare_priors.py --data-dir ../shared/data          # every default below
    python examples/compare_priors.py --rows vamp:diagonal_normal standard_normal:iaf --seeds 0 1 2
    python examples/compare_priors.py ... --resume     # continue an interrupted comparison in --out

Each (row, seed) is one run of the main job (pyro_vae.run with the settings of the flags of
examples/mnist_svi.py: same data, architecture, epochs and evaluation for every row), written to
--out/<prior>-<guide>/seed<k>/ and kept as soon as it finishes. Option flags of a piece
(--vamp-num-components, --iaf-depth, ...) apply to the rows that use it. Active latent units are
counted by the main job on the test images (Burda et al., arXiv:1509.00519: Cov_x(E_q[z_j|x]) > 1e-2).

Outputs in --out: table.md (means over seeds ± standard error over seeds, pyro_vae.compare) and
results.json, rewritten after every run, and samples.png (new images from each row's model of the
first seed). --resume reuses finished runs and continues an interrupted one from its checkpoint.
With --ais-images N, every run is also certified by AIS on its first N test images (beside
importance sampling on the same images), kept in <run>/likelihood/.
--jobs N runs N runs at once, each in its own process (with --cuda, one GPU each, in turn).
"""

import sys
import time
from pathlib import Path

import pyro_vae
from pyro_vae.cli import add_ais_flags, add_jobs_flag, ais_column, build_parser, parse, report_errors
from pyro_vae.compare import Variant, markdown_table, run_comparison, summarize
from pyro_vae.compatibility import REFUSED
from pyro_vae.outputs import write_json, write_text
from pyro_vae.plots import plot_sample_panels
from pyro_vae.registry import GUIDES, PRIORS

DEFAULT_ROWS = ("standard_normal:diagonal_normal", "learned_normal:diagonal_normal", "mixture:diagonal_normal",
                "vamp:diagonal_normal", "flow:diagonal_normal", "standard_normal:full_rank", "standard_normal:iaf")
COLUMNS = (("test_elbo", "test ELBO", 2), ("test_log_likelihood", "log p(x)", 2), ("active_units", "active units", 1),
           ("seconds_per_epoch", "s / epoch", 1))
OUTPUTS = ("table.md", "results.json", "samples.png")


def row_spec(flags, text: str) -> tuple[str, str]:
    prior, _, guide = text.partition(":")
    if prior not in PRIORS or guide not in GUIDES:
        flags.error(f"--rows {text}: give PRIOR:GUIDE with a prior of {PRIORS.names()} and a guide of {GUIDES.names()}")
    if (prior, guide) in REFUSED:
        flags.error(f"--rows {text}: prior={prior} with guide={guide} is not supported: {REFUSED[prior, guide]}; "
                    f"choose another pair")
    return prior, guide


def format_table(rows, eval_samples: int, z_dim: int, ais_images: int = 0) -> str:
    columns = [("prior", "prior", lambda r: f"`{r['prior']}`"), ("guide", "guide", lambda r: f"`{r['guide']}`")]
    columns += [(f"log p(x), K = {eval_samples}" if key == "test_log_likelihood" else name, key, digits)
                for key, name, digits in COLUMNS]
    if ais_images:
        columns[-1:-1] = [(f"log p(x), AIS, first {ais_images} test images", "ais_log_likelihood", 2),
                          (f"K = {eval_samples}, same images", "is_subset_log_likelihood", 2)]
    return (markdown_table(rows, columns) + f"\n\nMeans over {rows[0]['seeds']} seeds ± standard error over seeds; "
            f"nats per test image; active units of z_dim = {z_dim} (threshold 1e-2).")


def compare(flags) -> None:
    start = time.perf_counter()
    resume, seeds = flags.extra["resume"], list(dict.fromkeys(flags.extra["seeds"]))
    if len(seeds) < 2:
        flags.error("--seeds needs at least two different seeds: the table's ± is a standard error over seeds")
    pairs = list(dict.fromkeys(row_spec(flags, text) for text in flags.extra["rows"]))
    flags.check_options(prior=[prior for prior, _ in pairs], guide=[guide for _, guide in pairs])
    out = Path(flags.settings["out"])

    def variant(prior: str, guide: str) -> Variant:
        return Variant(f"{prior} × {guide}", {"prior": prior, "guide": guide}, lambda seed: flags.config(
            strict=False, prior=prior, guide=guide, seed=seed, out=str(out / f"{prior}-{guide}" / f"seed{seed}")))

    ais = ais_column(flags)

    def write_summary(groups) -> None:
        rows = summarize(groups, [key for key, _, _ in COLUMNS] + (["ais_log_likelihood", "is_subset_log_likelihood"]
                                                                     if ais else []))
        write_json(out / "results.json", [
            {**row, "runs": [{key: run.metrics[key] for key, _, _ in COLUMNS} for run in group.runs],
             "model": group.runs[0].metrics["config"]["model"]} for row, group in zip(rows, groups, strict=True)])
        config = groups[0].runs[0].config
        write_text(out / "table.md", format_table(rows, config.eval_samples, config.z_dim, ais.images if ais else 0)
                   + "\n")
        if len(groups) == len(pairs) and len(groups[-1].runs) == len(seeds):  # the last run: the samples figure
            plot_sample_panels({g.label: pyro_vae.load(g.runs[0].folder) for g in groups}, out / "samples.png")

    run_comparison(out, [variant(prior, guide) for prior, guide in pairs], seeds, resume=resume,
                   overwrite=flags.settings.get("overwrite", False), outputs=OUTPUTS, after_each_run=write_summary,
                   ais=ais, jobs=flags.extra["jobs"])
    print(f"\n{(out / 'table.md').read_text()}\nwritten to {out}/: table.md, results.json, samples.png "
          f"({(time.perf_counter() - start) / 60:.1f} min)")


def main(argv=None) -> int:
    parser = build_parser(__doc__, exclude=("resume", "evaluate_only", "prior", "guide"),
                          defaults={"out": "results/compare_priors"})
    comparison = parser.add_argument_group("comparison")
    comparison.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), metavar="PRIOR:GUIDE",
                            help="the prior × guide pairs to compare, one table row each")
    comparison.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="N",
                            help="training seeds per row (default: 0 1 2)")
    comparison.add_argument("--resume", action="store_true", default=False,
                            help="continue the comparison in --out: reuse finished runs, continue unfinished ones")
    add_ais_flags(comparison)
    add_jobs_flag(comparison)
    flags = parse(parser, argv)
    return report_errors(parser.prog, compare, flags)


if __name__ == "__main__":
    sys.exit(main())
