"""Checkpoints: safe loading, RNG state, rebuilding a model from the file alone, and every kind of
file that is not a usable checkpoint refused with a message naming it."""

import os
import random

import numpy as np
import pyro
import pytest
import torch

import pyro_vae
from pyro_vae import build_vae, make_config
from pyro_vae.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from pyro_vae.errors import CheckpointError, InputError
from pyro_vae.evaluate import log_weights


def _draws():
    return torch.rand(3).tolist(), random.random(), np.random.rand(2).tolist()


def test_rng_state_round_trips_through_the_safe_loader(tmp_path):
    pyro.set_rng_seed(3)
    _draws()
    state = get_rng_state()
    expected = _draws()
    torch.save(state, tmp_path / "rng.pt")
    _draws()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == expected


def test_load_rebuilds_the_trained_model_from_the_file_alone(tmp_path):
    config = make_config((1, 6, 6), 3, likelihood="gaussian",
                         options={"net": {"hidden_dims": [8, 8], "activation": "tanh"},
                                  "likelihood": {"learn_scale": True, "scale": 0.2}})
    vae = build_vae(config)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.1 * torch.randn_like(p))  # "trained": away from the initialization
    optimizer = torch.optim.Adam(vae.parameters())
    save_checkpoint(tmp_path / "ckpt.pt", vae, optimizer, epoch=4, history=[{"epoch": 4}])
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left behind
    loaded = pyro_vae.load(tmp_path / "ckpt.pt")
    assert loaded.config == vae.config and loaded.config["likelihood"]["options"]["learn_scale"] is True
    for (name, a), (_, b) in zip(vae.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.rand(4, 1, 6, 6)
    pyro.set_rng_seed(1)
    expected = log_weights(vae, x, 5)
    pyro.set_rng_seed(1)
    torch.testing.assert_close(log_weights(loaded, x, 5), expected, rtol=0, atol=0)
    record = load_checkpoint(tmp_path / "ckpt.pt")
    assert record["epoch"] == 4 and record["optimizer_state"] is not None


# -- files that are not usable checkpoints: each one clear error naming the file --------------------------------

def _saved(tmp_path):
    vae = build_vae(make_config((1, 6, 6), 3, options={"net": {"hidden_dims": [8]}}))
    path = tmp_path / "best.pt"
    save_checkpoint(path, vae, None, epoch=1)
    return path


def test_a_flipped_bit_is_caught_by_the_hash(tmp_path):
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    record = load_checkpoint(path)
    # flip one bit inside the serialized record (the payload tensor's bytes), keeping the file a valid archive
    payload = torch.load(path, weights_only=True)["payload"].numpy().tobytes()
    offset = data.find(payload[len(payload) // 2: len(payload) // 2 + 64])
    assert offset > 0
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"is corrupt: its contents do not match the SHA-256"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="is corrupt"):
        pyro_vae.load(path)
    assert record["epoch"] == 1


@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
def test_truncated_empty_or_non_torch_files_are_refused(tmp_path, damage):
    path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "text": b"hello"}[damage])
    with pytest.raises(CheckpointError, match=f"{path} is not a readable checkpoint: truncated, corrupt or not a "
                                              "torch file"):
        pyro_vae.load(path)


def test_a_foreign_torch_file_is_not_a_pyro_vae_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"is not a pyro_vae checkpoint \(it holds a OrderedDict with keys"):
        pyro_vae.load(path)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = "/tmp/pyro_vae_unsafe_checkpoint_ran"


def test_an_unsafe_checkpoint_is_refused_without_running_its_code(tmp_path):
    """A pickle whose loading would run a shell command: the safe loader refuses it, nothing runs."""
    if os.path.exists(MARKER):
        os.unlink(MARKER)
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model_config": _Payload()}, path)
    with pytest.raises(CheckpointError, match="safe loader refuses.*could run code"):
        load_checkpoint(path)
    assert not os.path.exists(MARKER)


def test_load_takes_a_run_folder_meaning_its_selected_model(tmp_path):
    path = _saved(tmp_path)
    assert pyro_vae.load(tmp_path).config == pyro_vae.load(path).config
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="is a folder without best.pt"):
        pyro_vae.load(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no such checkpoint file or run folder"):
        pyro_vae.load(tmp_path / "missing")


def test_non_finite_parameters_are_refused(tmp_path):
    vae = build_vae(make_config((1, 6, 6), 3, options={"net": {"hidden_dims": [8]}}))
    with torch.no_grad():
        vae.decoder.net[0].weight[0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", vae)
    with pytest.raises(CheckpointError, match="holds NaN or infinite parameters"):
        pyro_vae.load(tmp_path / "nan.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_loading_onto_a_missing_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no CUDA GPU is available here"):
        pyro_vae.load(_saved(tmp_path), map_location="cuda")


def write_format_1(path, new_path=None):
    """Rewrite a format-2 checkpoint of a run as pyro_vae 0.1 wrote it (no hash, the old run settings)."""
    record = load_checkpoint(path)
    run = record["run_config"]
    old = {key: run[key] for key in ("dataset", "binarize", "train_size", "val_size", "test_size", "batch_size", "lr",
                                     "lr_schedule", "adam_eps", "seed", "num_epochs", "protocol", "objective",
                                     "objective_options", "eval_samples", "eval_batch_size", "eval_ks", "data_dir",
                                     "pyro_validation")}
    old["cuda"] = False
    v1 = {key: value for key, value in record.items() if key not in ("kind", "pyro_vae_version", "data_files",
                                                                     "val_elbo")}
    v1.update(format_version=1, run_config=old)
    torch.save(v1, new_path or path)


def test_format_1_checkpoints_still_load_and_resume_exactly(synthetic_data_dir, tmp_path, capsys):
    from pyro_vae.cli import main

    from .test_example import quick_args

    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(quick_args(synthetic_data_dir, straight, "--num-epochs", "2")) == 0
    assert main(quick_args(synthetic_data_dir, split, "--num-epochs", "1")) == 0
    write_format_1(split / "checkpoint.pt")
    write_format_1(split / "best.pt")
    with pytest.warns(UserWarning, match="format 1, no integrity hash"):
        assert pyro_vae.load(split).config == pyro_vae.load(straight).config
    assert main(quick_args(synthetic_data_dir, split, "--num-epochs", "2", "--resume", str(split))) == 0
    err = capsys.readouterr().err  # the command line prints the warning as one line
    assert "warning: " in err and "is a checkpoint of pyro_vae 0.1 (format 1, no integrity hash)" in err
    a = load_checkpoint(straight / "checkpoint.pt")
    b = load_checkpoint(split / "checkpoint.pt")  # rewritten in format 2 by the resumed run
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
