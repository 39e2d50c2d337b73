"""examples/compare_priors.py end to end on small synthetic data: one row per prior × guide, the
options of each piece applied to the rows that use it, means and standard errors over seeds."""

import importlib.util
import json

import torch

from .conftest import REPO
from .test_example import quick_args


def load_script():
    spec = importlib.util.spec_from_file_location("compare_priors", REPO / "examples" / "compare_priors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_priors_writes_a_table_over_seeds(synthetic_data_dir, tmp_path, capsys):
    script = load_script()
    out = tmp_path / "compare"
    argv = quick_args(synthetic_data_dir, out, "--num-epochs", "1", "--z-dim", "2", "--eval-samples", "20",
                      "--rows", "standard_normal:diagonal_normal", "vamp:full_rank", "--seeds", "0", "1",
                      "--vamp-num-components", "3")
    assert script.main(argv) == 0
    for name in ("table.md", "results.json", "samples.png"):
        assert (out / name).stat().st_size > 0, name
    table = (out / "table.md").read_text().splitlines()
    assert table[0].startswith("| prior | guide | test ELBO | log p(x), K = 20 | active units |")
    assert table[2].startswith("| `standard_normal` | `diagonal_normal` |")
    assert table[3].startswith("| `vamp` | `full_rank` |")
    results = json.loads((out / "results.json").read_text())
    standard, vamp = results
    assert standard["model"]["prior"]["options"] == {} and standard["model"]["guide"]["name"] == "diagonal_normal"
    assert vamp["model"]["prior"]["options"] == {"num_components": 3} and vamp["model"]["guide"]["name"] == "full_rank"
    for row in results:
        assert len(row["runs"]) == 2 and row["runs"][0]["test_elbo"] != row["runs"][1]["test_elbo"]  # two seeds
        elbos = [run["test_elbo"] for run in row["runs"]]
        assert abs(row["test_elbo"] - sum(elbos) / 2) < 1e-9
        assert abs(row["test_elbo_se"] - abs(elbos[0] - elbos[1]) / 2) < 1e-9  # s/√2 with s = |a − b|/√2
        assert all(0 <= run["active_units"] <= 2 for run in row["runs"])
    # an interrupted comparison resumes: existing runs are reused, not retrained
    stamp = (out / "vamp-full_rank" / "seed1" / "metrics.json").stat().st_mtime_ns
    assert script.main(argv + ["--resume"]) == 0
    assert (out / "vamp-full_rank" / "seed1" / "metrics.json").stat().st_mtime_ns == stamp
    assert (out / "table.md").read_text().splitlines() == table


def test_jobs_run_the_comparison_in_parallel_and_keep_finished_runs_when_one_fails(synthetic_data_dir, tmp_path,
                                                                                   monkeypatch):
    from pyro_vae import compare
    from pyro_vae.errors import ConfigError

    # fork: the synthetic files' checksums are accepted in this process only (conftest.accept_as_real)
    monkeypatch.setattr(compare, "START_METHOD", "fork")
    script = load_script()
    rows = ["--num-epochs", "1", "--z-dim", "2", "--eval-samples", "20", "--rows", "standard_normal:diagonal_normal",
            "learned_normal:diagonal_normal", "--seeds", "0", "1"]
    # Both at one thread: matrix products round differently at other thread counts (the jobs get
    # cores // jobs threads by default), and the property tested is the split into jobs, not that.
    threads = torch.get_num_threads()
    try:
        assert script.main(quick_args(synthetic_data_dir, tmp_path / "one", *rows, "--threads", "1")) == 0
    finally:
        torch.set_num_threads(threads)  # the in-process run set it
    assert script.main(quick_args(synthetic_data_dir, tmp_path / "two", *rows, "--jobs", "2", "--threads", "1")) == 0
    one, two = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("one", "two"))
    assert [[run["test_elbo"] for run in row["runs"]] for row in one] == \
        [[run["test_elbo"] for run in row["runs"]] for row in two]  # the same runs, whatever the order they ran in

    real = compare.run_or_reuse

    def failing(config, resume):
        if config.prior == "learned_normal" and config.seed == 0:
            raise ConfigError("lr", "injected failure")
        return real(config, resume)

    monkeypatch.setattr(compare, "run_or_reuse", failing)
    out = tmp_path / "failing"
    assert script.main(quick_args(synthetic_data_dir, out, *rows, "--jobs", "2")) == 2
    finished = sorted(path.parent.relative_to(out).as_posix() for path in out.glob("*/*/metrics.json"))
    assert finished == ["learned_normal-diagonal_normal/seed1", "standard_normal-diagonal_normal/seed0",
                        "standard_normal-diagonal_normal/seed1"]
    table = (out / "table.md").read_text()
    assert "`standard_normal`" in table and "`learned_normal`" not in table  # seed 0 of the row is missing
