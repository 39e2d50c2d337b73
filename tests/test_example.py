"""The main job end to end on small synthetic data, resuming, and clear errors for bad input."""

import json
import subprocess
import sys

import pytest
import torch

from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.cli import main

from .conftest import REPO, exit_status

OUTPUTS = ("metrics.json", "checkpoint.pt", "best.pt", "reconstructions.png", "samples.png",
           "latent.png", "elbo.png")


def quick_args(data_dir, out, *extra):
    return ["--data-dir", str(data_dir), "--out", str(out), "--train-size", "300", "--val-size", "100",
            "--test-size", "40", "--eval-samples", "100", "--hidden-dims", "32", "--batch-size", "50",
            "--no-progress", *extra]


def test_example_runs_end_to_end_and_writes_every_output(synthetic_data_dir, tmp_path):
    out = tmp_path / "run"
    assert main(quick_args(synthetic_data_dir, out, "--num-epochs", "3", "--z-dim", "2", "--pyro-validation")) == 0
    for name in OUTPUTS + ("manifold.png",):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_elbo", "test_log_likelihood", "test_log_likelihood_stderr", "val_elbo", "eval_samples",
                "num_epochs", "seconds_per_epoch", "history", "config", "versions"):
        assert key in metrics, key
    assert metrics["eval_samples"] == 100 and metrics["num_epochs"] == 3
    assert metrics["config"]["run"]["pyro_validation"] is True
    assert [r["epoch"] for r in metrics["history"]] == [1, 2, 3]
    assert all({"train_elbo", "val_elbo"} <= set(r) for r in metrics["history"])
    assert metrics["config"]["model"]["net"]["options"]["hidden_dims"] == [32]
    assert metrics["test_log_likelihood"] < 0  # a log-probability of binary images
    assert metrics["test_log_likelihood"] >= metrics["test_elbo"]
    # it learned: the ELBO rose over the epochs
    history = metrics["history"]
    assert history[-1]["train_elbo"] > history[0]["train_elbo"]


def test_gaussian_likelihood_on_grey_levels(synthetic_data_dir, tmp_path):
    out = tmp_path / "gaussian"
    argv = quick_args(synthetic_data_dir, out, "--num-epochs", "1", "--likelihood", "gaussian",
                      "--binarize", "none", "--gaussian-learn-scale", "--gaussian-min-scale", "0.05")
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["model"]["likelihood"] == {
        "name": "gaussian", "options": {"scale": 0.1, "learn_scale": True, "min_scale": 0.05}}


def test_resume_continues_exactly_where_it_stopped(synthetic_data_dir, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(quick_args(synthetic_data_dir, straight, "--num-epochs", "2")) == 0
    assert main(quick_args(synthetic_data_dir, split, "--num-epochs", "1")) == 0
    assert main(quick_args(synthetic_data_dir, split, "--num-epochs", "2", "--resume", str(split))) == 0
    a = json.loads((straight / "metrics.json").read_text())["history"]
    b = json.loads((split / "metrics.json").read_text())["history"]
    assert [(r["train_elbo"], r["val_elbo"]) for r in a] == [(r["train_elbo"], r["val_elbo"]) for r in b]
    state_a = load_checkpoint(straight / "checkpoint.pt")["model_state"]
    state_b = load_checkpoint(split / "checkpoint.pt")["model_state"]
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_evaluate_only_evaluates_a_saved_model(synthetic_data_dir, tmp_path):
    out = tmp_path / "run"
    assert main(quick_args(synthetic_data_dir, out, "--num-epochs", "1")) == 0
    first = json.loads((out / "metrics.json").read_text())
    (out / "metrics.json").unlink()
    assert main(quick_args(synthetic_data_dir, out, "--resume", str(out / "checkpoint.pt"), "--evaluate-only",
                           "--eval-samples", "200")) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["eval_samples"] == 200 and again["history"] == first["history"]
    # same selected model, same test images: the ELBO estimates agree within their standard errors
    assert abs(again["test_elbo"] - first["test_elbo"]) < 4 * first["test_elbo_stderr"]


@pytest.mark.parametrize("extra,message", [
    (["--data-dir", "/nonexistent/pyro_vae"], "/nonexistent/pyro_vae does not exist (--data-dir)"),
    (["--dataset", "cifar10"], "invalid choice"),
    (["--train-size", "-5"], "argument --train-size: must be >= 1"),
    (["--val-size", "-1"], "argument --val-size: must be >= 0"),
    (["--batch-size", "0"], "argument --batch-size: must be >= 1"),
    (["--lr", "0"], "argument --lr: must be > 0"),
    (["--num-epochs", "two"], "argument --num-epochs: must be an integer"),
    (["--binarize", "none"], "--binarize: 'none' keeps grey levels, but the bernoulli likelihood"),
    (["--evaluate-only"], "--evaluate-only: needs resume"),
    (["--gaussian-scale", "0.3"], "--gaussian-scale is an option of likelihood 'gaussian', but --likelihood is"),
    (["--resume", "/nonexistent/ckpt.pt"], "/nonexistent/ckpt.pt: no such checkpoint file or run folder"),
    (["--flow-depth", "0", "--prior", "flow"], "argument --flow-depth: must be >= 1"),
    (["--seed", "4294967296"], "--seed: must be below 2^32"),
    (["--cuda"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "--cuda / --device:"),
])
def test_bad_input_is_one_line_and_status_2(synthetic_data_dir, tmp_path, capsys, extra, message):
    status = exit_status(main, quick_args(synthetic_data_dir, tmp_path / "bad", *extra))
    err = capsys.readouterr().err
    assert status == 2
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "usage:" not in err and "Traceback" not in err, err
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_command_line_script(tmp_path):
    """The real script: --help lists the flags; bad input exits 2 with one line, no traceback."""
    script = REPO / "examples" / "mnist_svi.py"
    help_text = subprocess.run([sys.executable, str(script), "--help"], check=False, capture_output=True, text=True,
                               timeout=300)
    assert help_text.returncode == 0
    for flag in ("--cuda", "--num-epochs", "--batch-size", "--lr", "--z-dim", "--hidden-dims", "--likelihood",
                 "--objective", "--num-particles", "--binarize", "--dataset", "--data-dir", "--train-size",
                 "--val-size", "--test-size", "--eval-samples", "--seed", "--out", "--resume", "--evaluate-only",
                 "--prior", "--guide"):
        assert flag in help_text.stdout, flag
    bad = subprocess.run([sys.executable, str(script), "--data-dir", str(tmp_path / "missing")],
                         check=False, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--data-dir" in bad.stderr
