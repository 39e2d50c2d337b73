"""The run layer end to end: resume without surprises, divergence and non-finite results stopped
with the last good checkpoint kept, data files verified, requests too big refused up front, and the
same contract from Python (pyro_vae.run with a RunConfig) as from the command line."""

import json
import math
import shutil

import pytest
import torch

import pyro_vae
from pyro_vae import RunConfig, distributed, experiment
from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.cli import main
from pyro_vae.data import load_data
from pyro_vae.errors import DataError, OutputError, ResourceError, ResumeConflictError, TrainingDivergedError

from .conftest import exit_status, real_data_dir
from .test_example import quick_args


def small_config(data_dir, out, **changes):
    settings = {"data_dir": data_dir, "out": out, "train_size": 300, "val_size": 100, "test_size": 40,
                "eval_samples": 100, "net_options": {"hidden_dims": [32]}, "batch_size": 50, "progress": False,
                "num_epochs": 1}
    return RunConfig(**{**settings, **changes})


# -- resume --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_data_dir):
    """A finished two-epoch run, copied for each test that may change it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(quick_args(synthetic_data_dir, out, "--num-epochs", "2")) == 0
    return out


@pytest.fixture
def run_copy(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("extra,named", [
    (["--z-dim", "20"], "--z-dim 20 (the checkpoint has 50)"),
    (["--lr", "0.01"], "--lr 0.01 (the checkpoint has 0.001)"),
    (["--hidden-dims", "64"], "--hidden-dims 64 (the checkpoint has 32)"),
    (["--objective", "iwae", "--num-particles", "5"], "--objective iwae (the checkpoint has elbo)"),
    (["--binarize", "static"], "--binarize static"),
    (["--seed", "7", "--batch-size", "10"], "--batch-size 10 (the checkpoint has 50), --seed 7"),
])
def test_a_flag_that_conflicts_with_the_checkpoint_is_an_error_naming_it(synthetic_data_dir, run_copy, capsys, extra,
                                                                         named):
    before = (run_copy / "checkpoint.pt").read_bytes()
    status = exit_status(main, quick_args(synthetic_data_dir, run_copy, "--resume", str(run_copy), "--num-epochs", "3",
                                          *extra))
    err = capsys.readouterr().err
    assert status == 2 and named in err and "a resumed run keeps" in err, err
    assert len(err.strip().splitlines()) == 1
    assert (run_copy / "checkpoint.pt").read_bytes() == before


def test_deliberate_overrides_on_resume_are_printed(synthetic_data_dir, run_copy, capsys):
    argv = quick_args(synthetic_data_dir, run_copy, "--resume", str(run_copy), "--num-epochs", "3", "--test-size", "20")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "resuming with num_epochs = 3 (the checkpoint was run with 2)" in out
    assert "resuming with test_size = 20 (the checkpoint was run with 40)" in out
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert metrics["num_epochs"] == 3 and metrics["num_test_images"] == 20


def test_resume_writes_to_the_resumed_folder_unless_out_is_given(synthetic_data_dir, run_copy, tmp_path):
    """Without --out a resumed run continues in its own folder (never into the default one); with
    another --out it forks: the new folder gets the selected model and the continued checkpoints."""
    argv = [a for a in quick_args(synthetic_data_dir, run_copy) if a not in ("--out", str(run_copy))]
    assert main([*argv, "--resume", str(run_copy), "--num-epochs", "3"]) == 0
    assert load_checkpoint(run_copy / "checkpoint.pt")["epoch"] == 3
    fork = tmp_path / "fork"
    assert main([*argv, "--resume", str(run_copy), "--num-epochs", "4", "--out", str(fork)]) == 0
    assert load_checkpoint(fork / "checkpoint.pt")["epoch"] == 4 and (fork / "best.pt").is_file()
    assert load_checkpoint(run_copy / "checkpoint.pt")["epoch"] == 3  # the original is untouched


def test_best_pt_is_a_model_not_a_training_state(synthetic_data_dir, run_copy, capsys):
    status = exit_status(main, quick_args(synthetic_data_dir, run_copy, "--resume", str(run_copy / "best.pt"),
                                          "--num-epochs", "3"))
    assert status == 2 and "holds a selected model, not a training state" in capsys.readouterr().err
    assert main(quick_args(synthetic_data_dir, run_copy, "--resume", str(run_copy / "best.pt"), "--evaluate-only",
                           "--eval-samples", "150")) == 0
    assert json.loads((run_copy / "metrics.json").read_text())["eval_samples"] == 150


def test_an_interrupted_run_says_what_it_kept_and_how_to_continue(synthetic_data_dir, tmp_path, capsys,
                                                                  monkeypatch):
    real_on_epoch_end = experiment._Run._on_epoch_end

    def interrupt_after_epoch_2(self, history):
        real_on_epoch_end(self, history)
        if history[-1]["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(experiment._Run, "_on_epoch_end", interrupt_after_epoch_2)
    out = tmp_path / "run"
    assert main(quick_args(synthetic_data_dir, out, "--num-epochs", "5")) == 130
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"interrupted; {out / 'checkpoint.pt'} holds epoch 2: continue with --resume {out}")
    monkeypatch.undo()
    assert main(quick_args(synthetic_data_dir, out, "--num-epochs", "5", "--resume", str(out))) == 0


def test_fewer_epochs_than_trained_is_an_error(synthetic_data_dir, run_copy, capsys):
    status = exit_status(main, quick_args(synthetic_data_dir, run_copy, "--resume", str(run_copy), "--num-epochs", "1"))
    assert status == 2 and "--num-epochs: 1, but" in capsys.readouterr().err


def test_resume_from_python_starts_from_the_checkpoints_settings(run_copy):
    config = RunConfig.resume_from(run_copy, num_epochs=3)
    assert config.out == str(run_copy) and config.num_epochs == 3 and config.net_options["hidden_dims"] == [32]
    result = pyro_vae.run(config)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert result.paths["checkpoint"] == run_copy / "checkpoint.pt"
    with pytest.raises(ResumeConflictError, match=r"z_dim = 3 \(the checkpoint has 50\).*RunConfig.resume_from"):
        pyro_vae.run(config.replace(z_dim=3, num_epochs=4))


# -- divergence and non-finite results --------------------------------------------------------------------------

def test_an_exploding_objective_stops_the_run_with_exit_2(synthetic_data_dir, tmp_path, capsys):
    """lr = 10 sends the ELBO far below the untrained model's (issue #9 measured −39661 with exit 0)."""
    out = tmp_path / "run"
    assert exit_status(main, quick_args(synthetic_data_dir, out, "--num-epochs", "3", "--lr", "10")) == 2
    err = capsys.readouterr().err
    assert "training diverged in epoch 1: the training objective fell to" in err
    assert "far below the untrained model's" in err and "lr = 10" in err
    assert not (out / "metrics.json").exists() and not (out / "best.pt").exists()


@pytest.mark.parametrize("bad,message", [(math.nan, "the validation ELBO is nan"),
                                         (-5000.0, "the validation ELBO fell to -5000.0 nats per image, far below")])
def test_divergence_keeps_the_last_good_checkpoint(synthetic_data_dir, tmp_path, monkeypatch, bad, message):
    """A NaN or exploded validation ELBO in epoch 2 (injected) stops the run before anything of
    epoch 2 is saved."""
    real_validate = experiment._Run.validate
    calls = []

    def bad_in_epoch_2(self):
        calls.append(1)
        return bad if len(calls) == 3 else real_validate(self)  # calls: reference, epoch 1, epoch 2

    monkeypatch.setattr(experiment._Run, "validate", bad_in_epoch_2)
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=rf"epoch 2: {message}.*last good state is kept"):
        pyro_vae.run(small_config(synthetic_data_dir, out, num_epochs=3))
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert load_checkpoint(out / "best.pt")["epoch"] == 1
    assert not (out / "metrics.json").exists()


def test_a_non_finite_evaluation_writes_no_result(synthetic_data_dir, tmp_path, monkeypatch):
    real_evaluate = distributed.evaluate

    def one_nan(world, vae, data, num_samples=1, *args, **kwargs):
        result = real_evaluate(world, vae, data, num_samples, *args, **kwargs)
        if num_samples > 1:  # the test evaluation, not validation
            result.log_likelihood[3] = math.nan
        return result

    monkeypatch.setattr(distributed, "evaluate", one_nan)
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"for 1 of 40 test images \(the first is image 3\); no result"):
        pyro_vae.run(small_config(synthetic_data_dir, out))
    assert not (out / "metrics.json").exists() and not (out / "evaluation.pt").exists()
    assert (out / "checkpoint.pt").is_file()  # training was fine and is kept


# -- data files ----------------------------------------------------------------------------------------------------

def test_another_data_sets_files_are_named_not_trained_on(synthetic_data_dir, tmp_path, capsys):
    """Fashion-MNIST's extracted images under MNIST/raw used to train as "mnist" (issue #9)."""
    wrong = tmp_path / "wrong"
    shutil.copytree(synthetic_data_dir / "MNIST", wrong / "MNIST")
    shutil.copy(synthetic_data_dir / "FashionMNIST" / "raw" / "train-images-idx3-ubyte",
                wrong / "MNIST" / "raw" / "train-images-idx3-ubyte")
    with pytest.raises(DataError, match=r"MNIST/raw/train-images-idx3-ubyte is fashion-mnist's train-images-idx3-ubyte,"
                                        r" not mnist's.*--dataset fashion-mnist"):
        load_data("mnist", wrong)
    assert exit_status(main, quick_args(wrong, tmp_path / "out")) == 2
    assert "is fashion-mnist's train-images-idx3-ubyte" in capsys.readouterr().err


def test_a_corrupt_data_file_is_named(synthetic_data_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_data_dir / "MNIST", broken / "MNIST")
    target = broken / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    data = bytearray(target.read_bytes())
    data[20] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte is not mnist's t10k-labels-idx1-ubyte \(its MD5 .* "
                                        r"matches no known file\): it is corrupt"):
        load_data("mnist", broken)


@pytest.mark.skipif(real_data_dir() is None, reason="real MNIST not found (../shared/data): torchvision extracts "
                    "only archives with its own checksums")
def test_a_half_extracted_file_in_the_cache_is_extracted_again(tmp_path, monkeypatch):
    """Data given as .gz is extracted into our cache; an extraction cut short (truncated file) is
    detected by its checksum, removed and redone from the verified archive."""
    from pyro_vae import data as data_module

    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path / "cache"))
    first = load_data("mnist", real_data_dir(), "none", test_size=50)
    extracted = data_module._cache_for(real_data_dir()) / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    assert extracted.is_file() and not extracted.is_symlink()
    extracted.write_bytes(extracted.read_bytes()[:1000])  # an interrupted extraction
    again = load_data("mnist", real_data_dir(), "none", test_size=50)
    assert torch.equal(first.test.images, again.test.images)


def test_an_unusable_cache_is_one_clear_error(synthetic_data_dir, tmp_path, monkeypatch):
    not_a_folder = tmp_path / "cache_file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("PYRO_VAE_CACHE", str(not_a_folder))
    with pytest.raises(OutputError, match=r"cannot use the data cache.*\$PYRO_VAE_CACHE"):
        load_data("mnist", synthetic_data_dir)


@pytest.mark.skipif(real_data_dir() is None, reason="real MNIST and Fashion-MNIST not found (../shared/data)")
def test_real_fashion_archives_under_mnist_are_refused(tmp_path):
    real = real_data_dir()
    wrong = tmp_path / "wrong" / "MNIST" / "raw"
    wrong.mkdir(parents=True)
    for path in (real / "MNIST" / "raw").iterdir():
        shutil.copy(path, wrong / path.name)
    shutil.copy(real / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz", wrong / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is fashion-mnist's t10k-images-idx3-ubyte"):
        load_data("mnist", tmp_path / "wrong")


# -- requests that cannot fit ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,part", [
    (["--eval-samples", "1000000000"], "one evaluation batch (--eval-batch-size × --eval-samples)"),
    (["--z-dim", "1000000000"], "the model's size"),
    (["--hidden-dims", "100000", "100000"], "the model's size"),
    (["--num-particles", "100000000"], "one training step (--batch-size × --num-particles)"),
])
def test_requests_that_cannot_fit_in_memory_fail_before_anything_is_written(synthetic_data_dir, tmp_path, capsys,
                                                                            extra, part):
    out = tmp_path / "run"
    assert exit_status(main, quick_args(synthetic_data_dir, out, *extra)) == 2
    err = capsys.readouterr().err
    assert "of memory on cpu but" in err and part in err, err
    assert not out.exists()


def test_a_run_over_the_time_limit_is_refused_with_its_estimate(synthetic_data_dir, tmp_path, capsys):
    argv = quick_args(synthetic_data_dir, tmp_path / "run", "--num-epochs", "1000", "--time-limit-hours", "0.0001")
    assert exit_status(main, argv) == 2
    err = capsys.readouterr().err
    assert "this run would take about" in err and "over the limit of 0.0001 h" in err and "training" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    with pytest.raises(ResourceError, match="evaluation"):
        pyro_vae.run(small_config(synthetic_data_dir, tmp_path / "run2", eval_samples=5000, test_size=200,
                                  num_epochs=0, time_limit_hours=1e-6))
