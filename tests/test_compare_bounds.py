"""examples/compare_bounds.py end to end on tiny data, and the burda2015 preset."""

import importlib.util
import json

import pytest

from pyro_vae.cli import build_parser, parse_args
from pyro_vae.experiment import main as mnist_svi
from pyro_vae.train import burda2015_lr_factor

from .conftest import REPO


def load_compare_bounds():
    spec = importlib.util.spec_from_file_location("compare_bounds", REPO / "examples" / "compare_bounds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_bounds_runs_end_to_end_and_writes_every_output(synthetic_data_dir, tmp_path):
    out = tmp_path / "compare"
    status = load_compare_bounds().main([
        "--data-dir", str(synthetic_data_dir), "--out", str(out), "--train-size", "200", "--val-size", "50",
        "--test-size", "30", "--num-epochs", "2", "--eval-samples", "100", "--hidden-dims", "16",
        "--z-dim", "4", "--batch-size", "50", "--no-progress", "--runs", "elbo:1", "iwae:3", "iwae_dreg:3",
        "--seeds", "0", "1"])
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


def test_bad_run_spec_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_compare_bounds().main(["--runs", "iwea:5"])
    assert exit_info.value.code == 2 and "unknown objective 'iwea'" in capsys.readouterr().err


def test_burda2015_preset_and_explicit_flags_override_it():
    parser = build_parser("test")
    args = parse_args(parser, ["--protocol", "burda2015", "--num-epochs", "7"])
    assert (args.batch_size, args.adam_eps, args.lr_schedule, args.eval_samples, args.z_dim) == (20, 1e-4, "burda2015", 5000, 50)
    assert args.net__hidden_dims == [200, 200] and args.net__mlp_activation == "tanh"
    assert args.num_epochs == 7  # given explicitly: wins over the preset's 3280
    assert parse_args(build_parser("test"), ["--protocol", "burda2015"]).num_epochs == 3280


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
