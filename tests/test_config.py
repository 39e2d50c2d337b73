"""A run is a value: RunConfig is checked when made, round-trips through plain data and JSON, and
names the field at fault."""

import dataclasses
import json
import re

import pytest

from pyro_vae import RunConfig
from pyro_vae.config import FIXED, FREE, OVERRIDE, PIECE_KINDS, SECTIONS
from pyro_vae.errors import ConfigError


def test_defaults_are_the_main_job_and_options_are_stored_resolved():
    config = RunConfig()
    assert (config.dataset, config.z_dim, config.num_epochs, config.eval_samples) == ("mnist", 50, 20, 1000)
    assert config.net_options == {"hidden_dims": [400], "activation": "relu"}  # defaults of the piece, filled in
    assert config.objective_options == {"num_particles": 1, "beta": 1.0, "kl_warmup_steps": 0}
    assert RunConfig(net_options={"hidden_dims": [400]}) == config  # the same model compares equal


def test_round_trip_through_plain_data_and_json():
    config = RunConfig(prior="vamp", prior_options={"num_components": 7}, guide="full_rank", z_dim=8, eval_ks=(50, 5, 5),
                       lr=0.003, out="somewhere", threads=1, time_limit_hours=float("inf"))
    assert config.eval_ks == (5, 50)  # sorted, unique
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data  # JSON-ready
    assert RunConfig.from_dict(data) == config
    assert RunConfig.from_json(config.to_json()) == config
    assert set(data) == {field.name for field in dataclasses.fields(RunConfig)}


@pytest.mark.parametrize("changes,field,match", [
    ({"z_dim": 0}, "z_dim", "must be >= 1"),
    ({"z_dim": 2.5}, "z_dim", "takes an integer"),
    ({"z_dim": True}, "z_dim", "takes an integer"),
    ({"lr": 0.0}, "lr", "must be > 0"),
    ({"lr": float("nan")}, "lr", "got nan"),
    ({"lr": float("inf")}, "lr", "must be finite"),
    ({"lr": "fast"}, "lr", "takes a number"),
    ({"seed": -1}, "seed", "must be >= 0"),
    ({"seed": 2 ** 32}, "seed", "below 2^32"),
    ({"dataset": "cifar10"}, "dataset", "unknown choice 'cifar10'"),
    ({"prior": "gamma"}, "prior", "unknown choice 'gamma'"),
    ({"eval_ks": []}, "eval_ks", "at least one value"),
    ({"eval_ks": [0]}, "eval_ks", "must be >= 1"),
    ({"eval_ks": "5"}, "eval_ks", "takes a list"),
    ({"out": ""}, "out", "non-empty string"),
    ({"progress": "yes"}, "progress", "true or false"),
    ({"device": "quantum"}, "device", "not a torch device"),
    ({"evaluate_only": True}, "evaluate_only", "needs resume"),
    ({"binarize": "none"}, "binarize", "density on binary images only"),
    ({"net_options": {"hidden_dims": [0]}}, "net_options", "must be >= 1"),
    ({"net_options": {"depth": 3}}, "net_options", "has no option(s) ['depth']"),
    ({"net_options": [400]}, "net_options", "mapping of option names"),
    ({"objective_options": {"num_particles": 0}}, "objective_options", "must be >= 1"),
    ({"time_limit_hours": 0}, "time_limit_hours", "must be > 0"),
])
def test_a_bad_setting_names_its_field(changes, field, match):
    with pytest.raises(ConfigError, match=re.escape(match)) as error:
        RunConfig(**changes)
    assert error.value.field == field


def test_from_dict_refuses_unknown_settings_and_non_mappings():
    with pytest.raises(ConfigError, match="not a setting of a run.*'z_dims'"):
        RunConfig.from_dict({"z_dims": 3})
    with pytest.raises(ConfigError, match="mapping of settings"):
        RunConfig.from_dict([("z_dim", 3)])
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json("{z_dim: 3")


def test_paths_may_be_path_objects(tmp_path):
    config = RunConfig(out=tmp_path / "run", data_dir=tmp_path)
    assert config.out == str(tmp_path / "run") and isinstance(config.data_dir, str)


def test_replace_with_another_piece_drops_the_old_pieces_options():
    config = RunConfig(prior="mixture", prior_options={"num_components": 3})
    assert config.replace(prior="vamp").prior_options == {"num_components": 500}
    assert config.replace(z_dim=3).prior_options == {"num_components": 3}


def test_protocol_is_a_configuration_and_explicit_settings_win():
    burda = RunConfig.from_protocol("burda2015", num_epochs=10, net_options={"activation": "relu"})
    assert (burda.batch_size, burda.lr_schedule, burda.adam_eps, burda.num_epochs) == (20, "burda2015", 1e-4, 10)
    assert burda.net_options == {"hidden_dims": [200, 200], "activation": "relu"}
    assert burda.protocol == "burda2015"
    with pytest.raises(ConfigError, match="unknown protocol"):
        RunConfig.from_protocol("kingma2013")


def test_every_field_is_described_for_help_and_resume():
    for field in dataclasses.fields(RunConfig):
        meta = field.metadata
        assert meta["help"] and meta["section"] in SECTIONS, field.name
        assert meta["resume"] in (FIXED, OVERRIDE, FREE), field.name
    fixed = {f.name for f in dataclasses.fields(RunConfig) if f.metadata["resume"] == FIXED}
    # what decides the model, the data and the trajectory of training is fixed on resume
    assert {"dataset", "binarize", "train_size", "val_size", "z_dim", "batch_size", "lr", "lr_schedule", "adam_eps",
            "seed"} <= fixed
    assert {kind for kind in PIECE_KINDS} <= fixed and {f"{kind}_options" for kind in PIECE_KINDS} <= fixed
    assert {"out", "device", "threads", "progress", "eval_samples"}.isdisjoint(fixed)


def test_differences_and_bound_ks():
    a, b = RunConfig(), RunConfig(z_dim=2, num_epochs=3, out="x", eval_samples=100)
    assert a.differences(b) == ["z_dim", "num_epochs", "eval_samples", "out"]
    assert a.differences(b, (FIXED, OVERRIDE)) == ["z_dim", "num_epochs"]
    assert a.differences(b, (FIXED,)) == ["z_dim"]
    assert b.bound_ks() == [1, 5, 50, 100]
    assert RunConfig(objective="iwae", objective_options={"num_particles": 5}).label() == "iwae K=5"


def test_a_refused_pair_is_refused_by_the_configuration_before_any_data_is_read():
    with pytest.raises(ConfigError, match="guide: prior=vamp with guide=iaf is not supported: the VampPrior's "
                                          "components would be IAF flows"):
        RunConfig(prior="vamp", guide="iaf", data_dir="/nonexistent")
