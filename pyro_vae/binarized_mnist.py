"""Larochelle's statically binarized MNIST: its files, verified, as uint8 tensors.

One fixed stochastic binarization of MNIST (Salakhutdinov & Murray, ICML 2008; distributed by
Larochelle & Murray with NADE, AISTATS 2011), split into 50,000 training, 10,000 validation and
10,000 test images, without labels. It is the data set of the likelihood tables of the VampPrior
(Tomczak & Welling, arXiv:1705.07120, Sec. 5) and IAF (Kingma et al., arXiv:1606.04934, Sec. 5.1)
papers. Each ``.amat`` file is text, one image per line: 784 values ``0``/``1`` in row-major 28×28
order.

Files: ``<data dir>/binarized_mnist/binarized_mnist_{train,valid,test}.amat``, plain or gzipped
(``.amat.gz``). Whatever the compression, the *content* is checked against the MD5 of the original
file before use, so a corrupt file or another data set's is an error naming the file. With no data
directory the files are downloaded from Larochelle's address into the cache by torchvision's
``download_url``, checksummed; offline, the error says where it looked.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np
import torch

from .errors import DataError, DataNotFoundError
from .outputs import describe_os_error

FOLDER = "binarized_mnist"
URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
#: split -> file name (50,000, 10,000 and 10,000 images)
SPLITS = {"train": "binarized_mnist_train.amat", "valid": "binarized_mnist_valid.amat",
          "test": "binarized_mnist_test.amat"}
#: file name -> MD5s accepted for its uncompressed content (the original files')
CHECKSUMS = {"binarized_mnist_train.amat": {"db28b1a6ae0fe70cbd3da91acf46e477"},
             "binarized_mnist_valid.amat": {"bf37822a04e94123630de6a7dfd9c9ef"},
             "binarized_mnist_test.amat": {"14e41ae11040adba6ab8cb291eda0dd8"}}
PIXELS = 28 * 28


def _candidates(folder: Path, name: str) -> list[Path]:
    return [path for path in (folder / name, folder / (name + ".gz")) if path.is_file()]


def read_content(path: Path) -> bytes:
    """The uncompressed bytes of ``path`` (gunzipped when it ends in ``.gz``)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as file:
                return file.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DataError(f"{path} is not a readable gzip file ({error}); replace it with the original "
                        f"{path.name}") from None
    except OSError as error:
        raise DataError(describe_os_error(error, path, "read the data file")) from None


def parse(content: bytes, path: Path) -> torch.Tensor:
    """The ``(N, 784)`` uint8 matrix of an ``.amat`` text (its content already verified)."""
    codes = np.frombuffer(content, dtype=np.uint8)
    digits = codes[(codes == ord("0")) | (codes == ord("1"))] - ord("0")
    rows = content.count(b"\n")
    if rows == 0 or digits.size != rows * PIXELS:
        raise DataError(f"{path} holds {digits.size} pixel values on {rows} lines, not {PIXELS} per line")
    return torch.from_numpy(digits.reshape(rows, PIXELS).copy())


def verify(content: bytes, name: str, path: Path) -> str:
    """The content's MD5, or a :class:`~pyro_vae.errors.DataError` naming the file."""
    md5 = hashlib.md5(content, usedforsecurity=False).hexdigest()
    if md5 not in CHECKSUMS[name]:
        raise DataError(f"{path} is not binarized MNIST's {name} (the MD5 of its content, {md5}, is not the "
                        f"original's): it is corrupt, truncated or another file; replace it with the original")
    return md5


def locate(name: str, data_dir: Path | None, cache: Path) -> Path:
    """The file to read for ``name``: in the data directory if it has one, else in the cache,
    downloading it there when no data directory is given."""
    if data_dir is not None:
        found = _candidates(data_dir / FOLDER, name)
        if not found:
            raise DataNotFoundError(
                f"binarized-mnist: {data_dir / FOLDER} holds no {name} (or {name}.gz). Put Larochelle's files "
                f"{', '.join(SPLITS.values())} there (plain or gzipped), or leave --data-dir "
                f"and PYRO_VAE_DATA unset to download them from {URL}")
        return found[0]
    folder = cache / FOLDER
    found = _candidates(folder, name)
    if found:
        return found[0]
    from torchvision.datasets.utils import download_url

    try:
        folder.mkdir(parents=True, exist_ok=True)
        download_url(URL + name, str(folder), name, md5=next(iter(CHECKSUMS[name])))
    except Exception as error:  # noqa: BLE001  (network errors, a bad checksum)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataNotFoundError(
            f"binarized-mnist is not available: no {name} in {folder}, and the download from {URL} failed "
            f"({reason}). Connect to the internet, or pass --data-dir / set PYRO_VAE_DATA to a directory holding "
            f"{FOLDER}/{{{','.join(SPLITS.values())}}}[.gz]") from None
    return folder / name


def load_splits(data_dir: Path | None, cache: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """{split: (N, 784) uint8 images} for train, valid and test, and {file name: MD5 of its content}."""
    images, files = {}, {}
    for split, name in SPLITS.items():
        path = locate(name, data_dir, cache)
        content = read_content(path)
        files[name] = verify(content, name, path)
        images[split] = parse(content, path)
    return images, files
