"""examples/compare_bounds.py end to end on tiny data, and the burda2015 preset."""

import importlib.util
import json

import pytest

from pyro_vae import RunConfig
from pyro_vae.cli import build_parser, parse
from pyro_vae.cli import main as mnist_svi
from pyro_vae.train import burda2015_lr_factor

from .conftest import REPO, exit_status


def load_compare_bounds():
    spec = importlib.util.spec_from_file_location("compare_bounds", REPO / "examples" / "compare_bounds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare_args(synthetic_data_dir, out, *extra):
    return ["--data-dir", str(synthetic_data_dir), "--out", str(out), "--train-size", "200", "--val-size", "50",
            "--test-size", "30", "--num-epochs", "2", "--eval-samples", "100", "--hidden-dims", "16",
            "--z-dim", "4", "--batch-size", "50", "--no-progress", *extra]


def test_compare_bounds_runs_end_to_end_and_writes_every_output(synthetic_data_dir, tmp_path):
    out = tmp_path / "compare"
    status = load_compare_bounds().main(compare_args(synthetic_data_dir, out, "--runs", "elbo:1", "iwae:3",
                                                     "iwae_dreg:3", "--seeds", "0", "1"))
    assert status == 0
    for name in ("results.md", "results.json", "bounds_vs_k.png", "khat.png", "training_curves.png"):
        assert (out / name).stat().st_size > 0, name
    for run in ("elbo_K1", "iwae_K3", "iwae_dreg_K3"):
        for seed in (0, 1):
            assert (out / f"{run}_seed{seed}" / "metrics.json").is_file()
            assert (out / f"{run}_seed{seed}" / "evaluation.pt").is_file()
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["objective"], r["K"], r["seeds"]) for r in rows] == [("elbo", 1, 2), ("iwae", 3, 2), ("iwae_dreg", 3, 2)]
    assert rows[0]["delta_log_likelihood"] == 0.0
    # with several seeds, Δ is the mean over seeds of the paired per-seed differences
    per_seed = []
    for seed in (0, 1):
        reference = json.loads((out / f"elbo_K1_seed{seed}" / "metrics.json").read_text())["test_log_likelihood"]
        iwae = json.loads((out / f"iwae_K3_seed{seed}" / "metrics.json").read_text())["test_log_likelihood"]
        per_seed.append(iwae - reference)
    assert rows[1]["delta_log_likelihood"] == pytest.approx(sum(per_seed) / 2, abs=1e-4)
    metrics = json.loads((out / "iwae_K3_seed0" / "metrics.json").read_text())
    assert metrics["config"]["run"]["objective_options"]["num_particles"] == 3
    bounds = [metrics["bounds"][k] for k in sorted(metrics["bounds"], key=int)]
    assert sorted(metrics["bounds"], key=int) == ["1", "5", "50", "100"]
    assert bounds[0] == pytest.approx(metrics["test_elbo"]) and bounds[-1] == pytest.approx(metrics["test_log_likelihood"])
    table = (out / "results.md").read_text()
    assert "NLL = −log p(x)" in table and "IWAE-100" in table


def test_compare_bounds_below_the_psis_sample_size_reports_n_a(synthetic_data_dir, tmp_path):
    """K = 50 < 100: no PSIS k̂, which the table shows as n/a instead of crashing after every run."""
    out = tmp_path / "compare"
    argv = compare_args(synthetic_data_dir, out, "--runs", "elbo:1", "iwae:2", "--eval-samples", "50")
    assert load_compare_bounds().main(argv) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert all(row["psis_khat_share_above_0.7"] is None for row in rows)
    data_rows = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("| elbo")]
    assert data_rows and "n/a" in data_rows[0]


def test_an_interrupted_comparison_resumes_and_rebuilds_its_summary(synthetic_data_dir, tmp_path, capsys):
    """Each finished run is kept: after a crash in the second run, --resume reuses the first (not
    retrained) and runs the rest; a second --resume retrains nothing and rebuilds the same table."""
    script = load_compare_bounds()
    out = tmp_path / "compare"
    argv = compare_args(synthetic_data_dir, out, "--runs", "elbo:1", "iwae:2")
    from pyro_vae import compare

    real_run_or_reuse = compare.run_or_reuse
    calls = []

    def crash_on_second(config, resume):
        calls.append(config.out)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_or_reuse(config, resume)

    compare.run_or_reuse = crash_on_second
    try:
        assert script.main(argv) == 130  # interrupted
    finally:
        compare.run_or_reuse = real_run_or_reuse
    assert "continue the comparison with the same flags and --resume" in capsys.readouterr().err
    first = out / "elbo_K1_seed0" / "metrics.json"
    stamp = first.stat().st_mtime_ns
    assert json.loads((out / "results.json").read_text())["rows"][0]["objective"] == "elbo"  # summary so far
    assert exit_status(script.main, argv) == 2  # a fresh comparison refuses the folder
    assert "already holds a run" in capsys.readouterr().err
    assert script.main(argv + ["--resume"]) == 0
    assert first.stat().st_mtime_ns == stamp
    table = (out / "results.md").read_text()
    assert script.main(argv + ["--resume"]) == 0
    assert "finished earlier, reused" in capsys.readouterr().out
    assert (out / "results.md").read_text() == table
    assert exit_status(script.main, argv + ["--resume", "--num-epochs", "3"]) == 2  # other settings: not reused
    assert "holds a finished run with other settings" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--runs", "iwea:5"], "unknown objective 'iwea'"),
    (["--runs", "iwae:0"], "K must be >= 1"),
    (["--num-particles", "3"], "unrecognized arguments: --num-particles 3"),
    (["--runs", "elbo:1", "--alpha", "0.3"], "--alpha is an option of objective 'renyi'"),
    (["--runs", "elbo:1", "--flow-depth", "3"], "--flow-depth is an option of prior 'flow', but --prior is"),
])
def test_bad_comparison_flags_are_one_line(argv, message, capsys):
    assert exit_status(load_compare_bounds().main, argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_burda2015_preset_and_explicit_flags_override_it():
    config = parse(build_parser("test"), ["--protocol", "burda2015", "--num-epochs", "7", "--mlp-activation",
                                          "relu"]).config()
    assert (config.batch_size, config.adam_eps, config.lr_schedule, config.eval_samples, config.z_dim) == (
        20, 1e-4, "burda2015", 5000, 50)
    assert config.num_epochs == 7  # given explicitly: wins over the preset's 3280
    assert config.net_options == {"hidden_dims": [200, 200], "activation": "relu"}  # merged option by option
    assert config.protocol == "burda2015"
    assert parse(build_parser("test"), ["--protocol", "burda2015"]).config() == RunConfig.from_protocol("burda2015")
    assert RunConfig.from_protocol("burda2015").num_epochs == 3280
    # another network drops the protocol's options of the MLP instead of failing on them
    assert RunConfig.from_protocol("burda2015", net="conv").net_options == RunConfig(net="conv").net_options


def test_burda2015_learning_rate_schedule():
    """3^i epochs at 0.001·10^(−i/7), i = 0..7: 3280 epochs."""
    factors = [burda2015_lr_factor(epoch) for epoch in range(1, 3281)]
    for i in range(8):
        assert factors.count(pytest.approx(10 ** (-i / 7))) == 3 ** i


def test_preset_runs_with_its_schedule_and_resumes(synthetic_data_dir, tmp_path):
    base = ["--protocol", "burda2015", "--data-dir", str(synthetic_data_dir), "--train-size", "60",
            "--val-size", "20", "--test-size", "10", "--eval-samples", "20", "--no-progress",
            "--objective", "elbo", "--beta", "0.5", "--kl-warmup-steps", "20"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert mnist_svi(base + ["--out", str(straight), "--num-epochs", "3"]) == 0
    assert mnist_svi(base + ["--out", str(split), "--num-epochs", "2"]) == 0
    assert mnist_svi(base + ["--out", str(split), "--num-epochs", "3", "--resume", str(split)]) == 0
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((split / "metrics.json").read_text())
    assert [r["lr"] for r in a["history"]] == pytest.approx([1e-3, 1e-3 * 10 ** (-1 / 7), 1e-3 * 10 ** (-1 / 7)])
    # the KL warm-up position and the schedule survive the resume: identical training
    assert [r["train_elbo"] for r in a["history"]] == [r["train_elbo"] for r in b["history"]]
    assert a["config"]["model"]["net"]["options"] == {"hidden_dims": [200, 200], "activation": "tanh"}
