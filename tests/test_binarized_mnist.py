"""``--dataset binarized-mnist``: Larochelle's fixed binarization with its own splits and no labels."""

import gzip
import json

import numpy as np
import pytest
import torch

from pyro_vae import RunConfig, run
from pyro_vae import binarized_mnist as bm
from pyro_vae.cli import main
from pyro_vae.data import DATASETS, load_data
from pyro_vae.errors import ConfigError, DataError, DataNotFoundError

from .conftest import exit_status, make_synthetic_binarized_mnist, real_data_dir


@pytest.fixture()
def synthetic(tmp_path):
    return tmp_path, make_synthetic_binarized_mnist(tmp_path)


def test_the_published_splits_are_read_exactly(synthetic):
    root, written = synthetic
    data = load_data("binarized-mnist", root, val_size=40, test_size=30)
    assert (len(data.train), len(data.val), len(data.test)) == (300, 40, 30)  # all training images; val from its own split
    assert data.binarize == "fixed" and data.train.labels is None and data.x_shape == (1, 28, 28)
    torch.testing.assert_close(data.train.images.reshape(300, 784), torch.from_numpy(written["train"]).float())
    torch.testing.assert_close(data.val.images.reshape(40, 784), torch.from_numpy(written["valid"][:40]).float())
    torch.testing.assert_close(data.test.images.reshape(30, 784), torch.from_numpy(written["test"][:30]).float())
    batches = torch.cat(list(data.train_batches(64)))  # fixed images: an epoch is a permutation of them
    assert torch.equal(batches.sum(), data.train.images.sum())


def test_gzipped_files_are_verified_by_their_content(synthetic):
    root, written = synthetic
    folder = root / bm.FOLDER
    for name in bm.SPLITS.values():
        (folder / name).with_suffix(".amat.gz").write_bytes(gzip.compress((folder / name).read_bytes()))
        (folder / name).unlink()
    data = load_data("binarized-mnist", root, val_size=10)
    torch.testing.assert_close(data.test.images.reshape(100, 784), torch.from_numpy(written["test"]).float())


def test_a_corrupt_file_is_an_error_naming_it(synthetic):
    root, _ = synthetic
    path = root / bm.FOLDER / bm.SPLITS["valid"]
    text = path.read_bytes()
    path.write_bytes(text[:10] + (b"1" if text[10:11] == b"0" else b"0") + text[11:])
    with pytest.raises(DataError, match=f"{path}.*not binarized MNIST's {bm.SPLITS['valid']}"):
        load_data("binarized-mnist", root)


def test_a_missing_file_says_where_it_looked_and_how_to_fix_it(synthetic):
    root, _ = synthetic
    (root / bm.FOLDER / bm.SPLITS["test"]).unlink()
    with pytest.raises(DataNotFoundError, match=f"{root / bm.FOLDER} holds no {bm.SPLITS['test']}"):
        load_data("binarized-mnist", root)


def test_offline_without_a_data_directory_says_so(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", offline)
    monkeypatch.delenv("PYRO_VAE_DATA", raising=False)
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match="download from http.*failed \\(network is unreachable\\)"):
        load_data("binarized-mnist")


@pytest.mark.parametrize("binarize", ["dynamic", "static", "none"])
def test_binarize_does_not_apply_and_says_so(binarize):
    with pytest.raises(ConfigError, match="binarize: does not apply to binarized-mnist"):
        RunConfig(dataset="binarized-mnist", binarize=binarize)
    assert RunConfig(dataset="binarized-mnist").binarize is None
    assert RunConfig().binarize == "dynamic"  # the grey-level data sets' default is unchanged


def test_sizes_beyond_its_splits_are_errors(synthetic):
    root, _ = synthetic
    with pytest.raises(ConfigError, match="val_size: 10001 asks for more than the 10000 images"):
        load_data("binarized-mnist", root, val_size=10_001)
    with pytest.raises(ConfigError, match="train_size: 0 leaves nothing"):
        load_data("binarized-mnist", root, train_size=0)


def test_the_command_line_refuses_binarize_with_one_line_and_status_2(capsys, tmp_path):
    status = exit_status(main, ["--dataset", "binarized-mnist", "--binarize", "dynamic", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "does not apply to binarized-mnist" in err[0]


def test_a_run_on_it_trains_evaluates_and_plots_without_labels(synthetic, tmp_path):
    root, _ = synthetic
    config = RunConfig(dataset="binarized-mnist", data_dir=str(root), val_size=50, test_size=40, num_epochs=1,
                       z_dim=2, eval_samples=100, out=str(tmp_path / "run"), progress=False,
                       net_options={"hidden_dims": [16]})
    result = run(config)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["config"]["run"]["dataset"] == "binarized-mnist" and metrics["config"]["run"]["binarize"] is None
    assert set(metrics["data_files"]) == set(bm.SPLITS.values())
    assert (tmp_path / "run" / "latent.png").is_file() and np.isfinite(result.metrics["test_log_likelihood"])


@pytest.mark.skipif(real_data_dir() is None or not (real_data_dir() / bm.FOLDER).is_dir(),
                    reason="Larochelle's binarized MNIST is not in ../shared/data (or $PYRO_VAE_DATA)")
def test_the_real_files_are_the_published_ones():
    data = load_data("binarized-mnist", real_data_dir())
    assert (len(data.train), len(data.test)) == (DATASETS["binarized-mnist"].num_train, 10_000)
    assert data.files == {"binarized_mnist_train.amat": "db28b1a6ae0fe70cbd3da91acf46e477",  # ../shared/data's README
                          "binarized_mnist_valid.amat": "bf37822a04e94123630de6a7dfd9c9ef",
                          "binarized_mnist_test.amat": "14e41ae11040adba6ab8cb291eda0dd8"}
    assert set(data.train.images.unique().tolist()) == {0.0, 1.0}
    assert 0.12 < data.test.images.mean() < 0.14  # MNIST's ink
