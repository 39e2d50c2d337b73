"""Shared fixtures: a fresh Pyro state per test, a private data cache, small synthetic MNIST files."""

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pyro
import pytest

REPO = Path(__file__).resolve().parents[1]


def real_data_dir():
    """``$PYRO_VAE_DATA`` or ``../shared/data`` beside the checkout, if it holds MNIST."""
    for candidate in (os.environ.get("PYRO_VAE_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    return None


@pytest.fixture(autouse=True)
def fresh_pyro():
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Tests never write into the user's ~/.cache."""
    old = os.environ.get("PYRO_VAE_CACHE")
    os.environ["PYRO_VAE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        del os.environ["PYRO_VAE_CACHE"]
    else:
        os.environ["PYRO_VAE_CACHE"] = old


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    magic = 2051 if array.ndim == 3 else 2049
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as file:
            file.write(payload)
    else:
        path.write_bytes(payload)


def make_synthetic_mnist(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Ten classes of 28×28 uint8 images, each a noisy copy of a class prototype (a random
    stroke-like blob pattern), in torchvision's extracted layout ``<root>/<Class>/raw/*-ubyte``."""
    rng = np.random.default_rng(seed)
    prototypes = (rng.random((10, 7, 7)) > 0.6).repeat(4, 1).repeat(4, 2).astype(np.float64)
    for class_name in ("MNIST", "FashionMNIST"):
        raw = root / class_name / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for prefix, n in (("train", n_train), ("t10k", n_test)):
            labels = rng.integers(0, 10, n)
            shift = rng.integers(-2, 3, size=(n, 2))
            images = np.stack([np.roll(prototypes[y], tuple(s), axis=(0, 1)) for y, s in zip(labels, shift)])
            images = np.clip(images * 230 + rng.normal(0, 20, images.shape), 0, 255)
            _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, compress=False)
            _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, compress=False)
    accept_as_real(root)
    return root


def accept_as_real(root: Path) -> None:
    """Let the files under ``root`` pass the data sets' checksum verification, as if they were the
    real MNIST and Fashion-MNIST files of their folders (tests train on small synthetic data)."""
    from pyro_vae.data import DATASETS, file_md5

    for spec in DATASETS.values():
        for name, accepted in spec.checksums.items():
            path = root / spec.class_name / ("" if spec.binarized else "raw") / name
            if path.is_file():
                accepted.add(file_md5(path))


def make_synthetic_binarized_mnist(root: Path, sizes=(300, 100, 100), seed: int = 0) -> dict:
    """Larochelle's layout with small random {0, 1} images, ``<root>/binarized_mnist/*.amat``, accepted as
    real; returns {split: the (N, 784) uint8 array written}."""
    from pyro_vae.binarized_mnist import FOLDER, SPLITS

    rng = np.random.default_rng(seed)
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for (split, name), n in zip(SPLITS.items(), sizes):
        bits = (rng.random((n, 784)) < 0.13).astype(np.uint8)
        (folder / name).write_text("".join(" ".join(map(str, row)) + "\n" for row in bits))
        written[split] = bits
    accept_as_real(root)
    return written


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
    return make_synthetic_mnist(tmp_path_factory.mktemp("synthetic_data"))


def exit_status(main, argv) -> int:
    """The exit status of a command-line ``main(argv)``, whether it returns it or exits (argparse)."""
    try:
        return main(argv)
    except SystemExit as exit_info:
        return exit_info.code

