"""A run folder is one run: files of two runs mixed in one folder are one clear error, never a
traceback or another run's numbers; old folders (no run id) still resume."""

import hashlib
import io
import json
import shutil
import warnings

import pytest
import torch

from pyro_vae import RunConfig, experiment, run_identity
from pyro_vae.certify import certify
from pyro_vae.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint
from pyro_vae.cli import main
from pyro_vae.compare import load_run
from pyro_vae.errors import CheckpointError

from .conftest import exit_status
from .test_example import quick_args


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synthetic_data_dir):
    """Three finished one-epoch runs: the reference, another model (z_dim 10), another seed."""
    root = tmp_path_factory.mktemp("identity")
    made = {}
    for name, extra in {"a": [], "z10": ["--z-dim", "10"], "seed1": ["--seed", "1"]}.items():
        assert main(quick_args(synthetic_data_dir, root / name, "--num-epochs", "1", *extra)) == 0
        made[name] = root / name
    return made


@pytest.fixture
def run_a(runs, tmp_path):
    shutil.copytree(runs["a"], tmp_path / "a")
    return tmp_path / "a"


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if "warning:" not in line]
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("other", ["z10", "seed1"])
@pytest.mark.parametrize("mode", [["--num-epochs", "2"], ["--evaluate-only"]])
def test_a_best_pt_of_another_run_is_one_error_naming_both_files(synthetic_data_dir, runs, run_a, capsys, other, mode):
    shutil.copy(runs[other] / "best.pt", run_a / "best.pt")
    metrics_before = (run_a / "metrics.json").read_bytes()
    status = exit_status(main, quick_args(synthetic_data_dir, run_a, "--resume", str(run_a), *mode))
    line = _one_error(capsys)
    assert status == 2 and "mixes the files of two runs" in line and "best.pt" in line, line
    assert "checkpoint.pt" in line and "move the file" in line
    assert (run_a / "metrics.json").read_bytes() == metrics_before  # no other run's numbers written


def test_from_python_the_mix_is_a_checkpoint_error(synthetic_data_dir, runs, run_a):
    shutil.copy(runs["seed1"] / "best.pt", run_a / "best.pt")
    config = RunConfig.resume_from(run_a, evaluate_only=True, data_dir=str(synthetic_data_dir), progress=False)
    with pytest.raises(CheckpointError, match="mixes the files of two runs"):
        experiment.run(config)


def test_metrics_of_another_run_are_refused_by_compare_and_by_resume(synthetic_data_dir, runs, run_a, capsys):
    shutil.copy(runs["seed1"] / "metrics.json", run_a / "metrics.json")
    with pytest.raises(CheckpointError, match=r"evaluation.pt .* metrics.json|mixes the files"):
        load_run(run_a)
    assert exit_status(main, quick_args(synthetic_data_dir, run_a, "--resume", str(run_a), "--num-epochs", "2")) == 2
    assert "metrics.json" in _one_error(capsys)


def test_certify_refuses_a_folder_whose_best_pt_is_of_another_run(runs, run_a, tmp_path):
    shutil.copy(runs["z10"] / "best.pt", run_a / "best.pt")
    with pytest.raises(CheckpointError, match="mixes the files of two runs"):
        certify(run_a, out=tmp_path / "likelihood")


def test_every_file_carries_one_identity_kept_on_resume_and_new_on_fork(synthetic_data_dir, run_a, tmp_path):
    def ids(folder):
        return {load_checkpoint(folder / "checkpoint.pt")["run_id"], load_checkpoint(folder / "best.pt")["run_id"],
                torch.load(folder / "evaluation.pt", weights_only=True)["run_id"],
                json.loads((folder / "metrics.json").read_text())["run_id"]}

    (first,) = ids(run_a)
    argv = [a for a in quick_args(synthetic_data_dir, run_a) if a not in ("--out", str(run_a))]
    assert main([*argv, "--resume", str(run_a), "--num-epochs", "2"]) == 0
    assert ids(run_a) == {first}
    fork = tmp_path / "fork"
    assert main([*argv, "--resume", str(run_a), "--num-epochs", "3", "--out", str(fork)]) == 0
    (forked,) = ids(fork)
    assert forked != first and json.loads((fork / "metrics.json").read_text())["parent_run_id"] == first
    hashes = {load_checkpoint(f / "checkpoint.pt")["config_hash"] for f in (run_a, fork)}
    assert len(hashes) == 1  # the same model and fixed settings


def test_the_run_id_does_not_touch_the_seeded_random_streams():
    import random

    import numpy as np

    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    identities = {run_identity.for_run(None, False, {}, {})["run_id"] for _ in range(5)}
    assert len(identities) == 5
    assert torch.equal(states[0], torch.get_rng_state()) and states[1] == random.getstate()
    assert (states[2] == np.random.get_state()[1]).all()


def _strip_identity(file):
    """Rewrite a checkpoint as pyro_vae wrote it before run ids (format 2, no identity keys)."""
    record = {k: v for k, v in load_checkpoint(file).items() if k not in run_identity.KEYS}
    buffer = io.BytesIO()
    torch.save(record, buffer)
    data = buffer.getvalue()
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "sha256": hashlib.sha256(data).hexdigest(),
                "payload": torch.frombuffer(bytearray(data), dtype=torch.uint8)}, file)


def _make_legacy(folder):
    for name in ("checkpoint.pt", "best.pt"):
        _strip_identity(folder / name)
    evaluation = {k: v for k, v in torch.load(folder / "evaluation.pt", weights_only=True).items()
                  if k not in run_identity.KEYS}
    torch.save(evaluation, folder / "evaluation.pt")
    metrics = {k: v for k, v in json.loads((folder / "metrics.json").read_text()).items() if k not in run_identity.KEYS}
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_an_old_folder_without_run_id_resumes_with_a_one_line_notice(synthetic_data_dir, run_a, capsys):
    _make_legacy(run_a)
    assert main(quick_args(synthetic_data_dir, run_a, "--resume", str(run_a), "--num-epochs", "2")) == 0
    notices = [line for line in capsys.readouterr().out.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "has no run id" in notices[0]
    assert isinstance(load_checkpoint(run_a / "checkpoint.pt")["run_id"], str)
    assert main(quick_args(synthetic_data_dir, run_a, "--resume", str(run_a), "--num-epochs", "3")) == 0
    assert "has no run id" not in capsys.readouterr().out


def test_an_old_folder_with_another_models_best_pt_is_a_checkpoint_error_naming_it(synthetic_data_dir, runs, run_a,
                                                                                  capsys):
    shutil.copy(runs["z10"] / "best.pt", run_a / "best.pt")
    _make_legacy(run_a)
    status = exit_status(main, quick_args(synthetic_data_dir, run_a, "--resume", str(run_a), "--num-epochs", "2"))
    line = _one_error(capsys)
    assert status == 2 and f"{run_a / 'best.pt'}: its parameters do not fit the model" in line, line


def test_continuous_bernoulli_on_binarized_images_is_a_warning_in_python_and_on_the_command_line(tmp_path, capsys):
    with pytest.warns(UserWarning, match="continuous_bernoulli on binarized images"):
        RunConfig(likelihood="continuous_bernoulli", binarize="dynamic")
    with pytest.warns(UserWarning, match="continuous_bernoulli on binarized images"):
        RunConfig(likelihood="continuous_bernoulli", dataset="binarized-mnist")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RunConfig(likelihood="continuous_bernoulli", binarize="none")  # grey levels: its data
        RunConfig(likelihood="bernoulli", binarize="dynamic")
    status = exit_status(main, ["--likelihood", "continuous_bernoulli", "--binarize", "static", "--data-dir",
                                str(tmp_path / "absent"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and sum("warning: likelihood continuous_bernoulli on binarized images" in line
                               for line in err) == 1, err
