"""Checkpoints: safe loading, RNG state, rebuilding a model from the file alone."""

import random

import numpy as np
import pyro
import torch

import pyro_vae
from pyro_vae import build_vae, make_config
from pyro_vae.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
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
