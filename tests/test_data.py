"""Data loading: layout, splits, binarization protocols, and clear errors."""

import urllib.error

import pytest
import torch

from pyro_vae import data as data_module
from pyro_vae.data import DataNotFoundError, load_data
from pyro_vae.errors import ConfigError


def test_splits_and_shapes(synthetic_data_dir):
    data = load_data("mnist", synthetic_data_dir, "none", train_size=100, val_size=50, test_size=30)
    assert (len(data.train), len(data.val), len(data.test)) == (100, 50, 30)
    assert data.x_shape == (1, 28, 28)
    assert data.train.images.dtype == torch.float32
    assert 0 <= data.train.images.min() and data.train.images.max() <= 1
    assert data.train.images.unique().numel() > 2  # grey levels kept
    # the validation split is held out of the training images: the last val_size of them
    full = load_data("mnist", synthetic_data_dir, "none", val_size=0)
    torch.testing.assert_close(data.val.images, full.train.images[-50:])
    torch.testing.assert_close(data.train.images, full.train.images[:100])


def test_static_binarization_is_one_fixed_draw(synthetic_data_dir):
    a = load_data("mnist", synthetic_data_dir, "static", val_size=50)
    b = load_data("mnist", synthetic_data_dir, "static", val_size=50)
    assert set(a.train.images.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(a.train.images, b.train.images)
    batches = torch.cat(list(a.train_batches(64)))
    assert torch.equal(batches.sum(), a.train.images.sum())  # batches are a permutation of fixed images


def test_dynamic_binarization_draws_afresh_but_evaluates_on_fixed_images(synthetic_data_dir):
    data = load_data("mnist", synthetic_data_dir, "dynamic", val_size=50)
    again = load_data("mnist", synthetic_data_dir, "dynamic", val_size=50)
    torch.testing.assert_close(data.test.images, again.test.images)
    torch.testing.assert_close(data.val.images, again.val.images)
    assert set(data.test.images.unique().tolist()) == {0.0, 1.0}
    torch.manual_seed(0)
    epoch1 = torch.cat(list(data.train_batches(1000)))  # one batch: same order is irrelevant to the sum check
    epoch2 = torch.cat(list(data.train_batches(1000)))
    assert set(epoch1.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(epoch1.sort(0).values, epoch2.sort(0).values)
    # Each pixel is Bernoulli(intensity): the mean over a draw matches the mean intensity.
    n = epoch1.numel()
    p = data.train.images.mean()
    assert abs(epoch1.mean() - p) < 4 * (p * (1 - p) / n).sqrt()


def test_fashion_mnist_is_loaded_from_its_own_folder(synthetic_data_dir):
    data = load_data("fashion-mnist", synthetic_data_dir, "none", val_size=10)
    assert data.name == "fashion-mnist" and len(data.test) == 200


def test_missing_data_directory_is_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_data("mnist", tmp_path / "nowhere")


def test_offline_without_files_says_where_it_looked(tmp_path, monkeypatch):
    from pyro_vae._torchvision import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", offline)
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as error:
        load_data("mnist", empty)
    message = str(error.value)
    assert str(empty / "MNIST" / "raw") in message and "--data-dir" in message and "PYRO_VAE_DATA" in message


def test_data_dir_is_never_written(synthetic_data_dir):
    before = sorted(p.name for p in (synthetic_data_dir / "MNIST" / "raw").iterdir())
    load_data("mnist", synthetic_data_dir, "none", val_size=50)
    assert sorted(p.name for p in (synthetic_data_dir / "MNIST" / "raw").iterdir()) == before
    linked = data_module._cache_for(synthetic_data_dir) / "MNIST" / "raw" / "train-images-idx3-ubyte"
    assert linked.is_symlink()


def test_two_data_directories_do_not_share_cached_files(synthetic_data_dir, tmp_path):
    from .conftest import make_synthetic_mnist

    other = make_synthetic_mnist(tmp_path / "other", n_train=120, n_test=30, seed=1)
    assert len(load_data("mnist", synthetic_data_dir, "none", val_size=10).test) == 200
    assert len(load_data("mnist", other, "none", val_size=10).test) == 30


@pytest.mark.parametrize("kwargs,field,match", [
    ({"binarization": "sometimes"}, "binarize", "unknown binarization"),
    ({"dataset": "cifar"}, "dataset", "unknown data set"),
    ({"val_size": -1}, "val_size", "must be an integer >= 0"),
    ({"val_size": 10_000}, "val_size", "leaves no training images"),
    ({"train_size": 0}, "train_size", "nothing to train on"),
    ({"train_size": 10_000}, "train_size", "asks for more than the 500 training images"),
    ({"test_size": 10_000}, "test_size", "between 1 and the 200 test images"),
])
def test_bad_arguments_name_the_argument(synthetic_data_dir, kwargs, field, match):
    with pytest.raises(ConfigError, match=match) as error:
        load_data(**{"dataset": "mnist", "data_dir": synthetic_data_dir, "val_size": 100, **kwargs})
    assert error.value.field == field
