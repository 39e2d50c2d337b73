"""MNIST and Fashion-MNIST as tensors resident on the training device.

Files: torchvision's dataset classes read ``<root>/<ClassName>/raw/``. The directory given by
``data_dir`` (``--data-dir`` or ``$PYRO_VAE_DATA``) is treated as read-only: its files
(``*-ubyte.gz``, or already extracted ``*-ubyte``) are linked into a cache of ours
(``$PYRO_VAE_CACHE``, default ``~/.cache/pyro_vae``; one folder per data directory), and torchvision
is pointed at that cache with
``download=True``. torchvision then verifies each ``.gz`` against its MD5 and extracts it there,
without touching the network; files that are missing everywhere are downloaded, with checksums,
by torchvision's own download path. Offline with no data, :class:`DataNotFoundError` says which
directories were searched and how to fix it.

Binarization (the Bernoulli likelihood is a density on {0, 1}^D only):

* ``dynamic``: every training batch is a fresh draw x ~ Bernoulli(intensity), so each epoch sees
  a new binarization (the protocol of Burda et al., arXiv:1509.00519); validation and test images
  are binarized once with a fixed seed, so every evaluation sees the same data;
* ``static``: one fixed, seeded draw of every split;
* ``none``: grey levels in [0, 1] (for continuous likelihoods such as the Gaussian).

The binarization seed is a constant of the data (:data:`BINARIZE_SEED`), not the training seed, so
runs with different seeds are evaluated on the same binary images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch

DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
BINARIZATIONS = ("dynamic", "static", "none")
BINARIZE_SEED = 0
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DataNotFoundError(RuntimeError):
    """The data set is neither in the data directory nor downloadable."""


def default_data_dir() -> Path | None:
    value = os.environ.get("PYRO_VAE_DATA")
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    return Path(os.environ.get("PYRO_VAE_CACHE", "~/.cache/pyro_vae")).expanduser()


def _cache_for(data_dir: Path | None) -> Path:
    """One cache folder per source directory, so that files extracted from one data directory are
    never mistaken for another's; downloads (no data directory) go to ``<cache>/data/download``."""
    if data_dir is None:
        return cache_dir() / "data" / "download"
    key = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return cache_dir() / "data" / key


def _link_raw_files(class_name: str, data_dir: Path, cache: Path) -> None:
    """Symlink ``data_dir/<Class>/raw/*-ubyte[.gz]`` into ``cache/<Class>/raw/``."""
    source, target = data_dir / class_name / "raw", cache / class_name / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for name in RAW_FILES:
        for filename in (name, name + ".gz"):
            src, dst = source / filename, target / filename
            if src.is_file() and not dst.exists():
                if dst.is_symlink():  # a dangling link left by an earlier data dir
                    dst.unlink()
                dst.symlink_to(src.resolve())


def load_torchvision(dataset: str, data_dir: Path | None = None, train: bool = True):
    """The torchvision dataset object (``.data`` uint8 images, ``.targets`` labels)."""
    from ._torchvision import torchvision

    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    class_name = DATASETS[dataset]
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        if not data_dir.is_dir():
            raise DataNotFoundError(
                f"data directory {data_dir} does not exist. Pass --data-dir (or set PYRO_VAE_DATA) "
                f"to a directory holding {class_name}/raw/*-ubyte.gz (torchvision's layout)."
            )
    cache = _cache_for(data_dir)
    searched = [str(cache / class_name / "raw")]
    if data_dir is not None:
        searched.insert(0, str(data_dir / class_name / "raw"))
        _link_raw_files(class_name, data_dir, cache)
    try:
        return getattr(torchvision.datasets, class_name)(root=str(cache), train=train, download=True)
    except Exception as error:  # noqa: BLE001  (network errors, "Dataset not found", bad checksums)
        raise DataNotFoundError(
            f"{dataset} is not available: no usable files in {' or '.join(searched)}, and the "
            f"download failed ({type(error).__name__}: {error}). Either connect to the internet "
            f"(torchvision downloads and verifies the files), or pass --data-dir / set PYRO_VAE_DATA "
            f"to a directory holding {class_name}/raw/{{{','.join(RAW_FILES)}}}.gz."
        ) from None


def binarize(images: torch.Tensor, seed: int | None = None) -> torch.Tensor:
    """x ~ Bernoulli(intensity), elementwise; seeded draws are made on the CPU (reproducible on any
    device), unseeded ones on the images' device from the global generator."""
    if seed is None:
        return torch.bernoulli(images)
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(images.cpu(), generator=generator).to(images.device)


@dataclasses.dataclass
class Split:
    """Images ``(N, 1, 28, 28)`` in [0, 1] (or {0, 1}) and labels ``(N,)``, on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclasses.dataclass
class ImageData:
    """Train / validation / test splits resident on the training device."""

    train: Split
    val: Split
    test: Split
    binarize: str
    name: str

    @property
    def x_shape(self) -> tuple:
        return tuple(self.train.images.shape[1:])

    def train_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """One epoch: a random permutation (on the device, from the global torch generator) sliced
        into batches; with ``dynamic`` binarization each batch is a fresh Bernoulli draw."""
        images = self.train.images
        order = torch.randperm(images.shape[0], device=images.device)
        for start in range(0, images.shape[0], batch_size):
            x = images[order[start:start + batch_size]]
            yield binarize(x) if self.binarize == "dynamic" else x

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self.train) // batch_size)


def load_data(dataset: str = "mnist", data_dir: Path | None = None, binarization: str = "dynamic",
              train_size: int | None = None, val_size: int = 1000, test_size: int | None = None,
              device: torch.device | str = "cpu") -> ImageData:
    """Load a data set into memory on ``device``.

    The validation split is the *last* ``val_size`` training images (held out, never trained on;
    used for model selection); the training split is the first ``train_size`` of the rest, the test
    split the first ``test_size`` test images (``None``: all). The test split is never used to
    choose anything.
    """
    if binarization not in BINARIZATIONS:
        raise ValueError(f"unknown binarization {binarization!r}; choose one of {list(BINARIZATIONS)}")
    for name, size in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
        if size is not None and size < 0:
            raise ValueError(f"{name} must be >= 0, got {size}")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    train_set = load_torchvision(dataset, data_dir, train=True)
    test_set = load_torchvision(dataset, data_dir, train=False)

    def to_split(images: torch.Tensor, labels: torch.Tensor) -> Split:
        return Split(images.unsqueeze(1).to(device=device, dtype=torch.float32) / 255.0,
                     labels.to(device=device))

    n_train_all = train_set.data.shape[0]
    if val_size >= n_train_all:
        raise ValueError(f"val_size={val_size} leaves no training images (the set has {n_train_all})")
    n_fit = n_train_all - val_size
    n_train = n_fit if train_size is None else min(train_size, n_fit)
    train = to_split(train_set.data[:n_train], train_set.targets[:n_train])
    val = to_split(train_set.data[n_fit:], train_set.targets[n_fit:])
    n_test = test_set.data.shape[0] if test_size is None else min(test_size, test_set.data.shape[0])
    test = to_split(test_set.data[:n_test], test_set.targets[:n_test])
    if n_train == 0:
        raise ValueError("train_size=0: there is nothing to train on")

    if binarization != "none":
        # Fixed draws for the evaluation splits (and for the training split when static).
        val.images = binarize(val.images, seed=BINARIZE_SEED + 1)
        test.images = binarize(test.images, seed=BINARIZE_SEED + 2)
        if binarization == "static":
            train.images = binarize(train.images, seed=BINARIZE_SEED)
    return ImageData(train, val, test, binarization, dataset)
