"""MNIST, Fashion-MNIST and Larochelle's binarized MNIST as tensors resident on the training device.

Files: torchvision's dataset classes read ``<root>/<ClassName>/raw/``. The directory given by
``data_dir`` (``--data-dir`` or ``$PYRO_VAE_DATA``) is treated as read-only: its files
(``*-ubyte.gz``, or already extracted ``*-ubyte``) are linked into a cache of ours
(``$PYRO_VAE_CACHE``, default ``~/.cache/pyro_vae``; one folder per data directory), and torchvision
is pointed at that cache with
``download=True``. torchvision then verifies each ``.gz`` against its MD5 and extracts it there,
without touching the network; files that are missing everywhere are downloaded, with checksums,
by torchvision's own download path. Offline with no data, :class:`DataNotFoundError` says which
directories were searched and how to fix it.

Verification: every file is checked against the MD5 of the named data set's file, the ``.gz``
archives (torchvision's checksums) *and* the extracted ``*-ubyte`` files (which torchvision uses
unchecked), before and after extraction. A file that is another data set's (Fashion-MNIST images
under ``MNIST/raw``) or corrupt ends in a :class:`~pyro_vae.errors.DataError` naming the file; a
half-extracted file left in our cache by an interrupted run is removed and extracted again.

Binarization (the Bernoulli likelihood is a density on {0, 1}^D only):

* ``dynamic``: every training batch is a fresh draw x ~ Bernoulli(intensity), so each epoch sees
  a new binarization (the protocol of Burda et al., arXiv:1509.00519); validation and test images
  are binarized once with a fixed seed, so every evaluation sees the same data;
* ``static``: one fixed, seeded draw of every split;
* ``none``: grey levels in [0, 1] (for continuous likelihoods such as the Gaussian).

The binarization seed is a constant of the data (:data:`BINARIZE_SEED`), not the training seed, so
runs with different seeds are evaluated on the same binary images.

``binarized-mnist`` is already binary, one fixed draw published with its own train / validation /
test split and no labels (:mod:`pyro_vae.binarized_mnist`): no binarization applies to it, its
validation images come from its own validation split, and its training images are all 50,000 of
its training split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from . import binarized_mnist
from .errors import ConfigError, DataError, DataNotFoundError, OutputError
from .outputs import describe_os_error

__all__ = ["BINARIZATIONS", "DATASETS", "DataError", "DataNotFoundError", "ImageData", "Split", "load_data"]

RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A data set in torchvision's MNIST layout: its folder (and torchvision class) name, the shape
    of one image, the sizes of its training and test sets, and for each raw file the MD5s accepted
    for it (the ``.gz`` and the extracted file)."""

    name: str
    class_name: str
    x_shape: tuple
    num_train: int
    num_test: int
    checksums: dict
    #: the size of a validation split of its own (0: validation images are held out of the training set)
    num_val: int = 0
    #: one fixed, published binarization: the images are binary and ``binarize`` does not apply
    binarized: bool = False

    @property
    def layout(self) -> str:
        """Where its files go under a data directory (for messages)."""
        if self.binarized:
            return f"{self.class_name}/binarized_mnist_{{train,valid,test}}.amat[.gz]"
        return f"{self.class_name}/raw/*-ubyte.gz, torchvision's layout"

    def num_fit(self, val_size: int) -> int:
        """The training images left once ``val_size`` validation images are set aside."""
        return self.num_train if self.num_val else self.num_train - val_size


DATASETS = {
    "mnist": DatasetSpec("mnist", "MNIST", (1, 28, 28), 60_000, 10_000, {
        "train-images-idx3-ubyte": {"f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"},
        "train-labels-idx1-ubyte": {"d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"},
        "t10k-images-idx3-ubyte": {"9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"},
        "t10k-labels-idx1-ubyte": {"ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"},
    }),
    "fashion-mnist": DatasetSpec("fashion-mnist", "FashionMNIST", (1, 28, 28), 60_000, 10_000, {
        "train-images-idx3-ubyte": {"8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"},
        "train-labels-idx1-ubyte": {"25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"},
        "t10k-images-idx3-ubyte": {"bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"},
        "t10k-labels-idx1-ubyte": {"bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"},
    }),
    "binarized-mnist": DatasetSpec("binarized-mnist", binarized_mnist.FOLDER, (1, 28, 28), 50_000, 10_000,
                                   binarized_mnist.CHECKSUMS, num_val=10_000, binarized=True),
}
BINARIZATIONS = ("dynamic", "static", "none")
BINARIZE_SEED = 0


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


_MD5_MEMO: dict = {}


def file_md5(path: Path) -> str:
    """MD5 of a file's bytes, remembered per (path, size, modification time) within the process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _MD5_MEMO:
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        _MD5_MEMO[key] = digest.hexdigest()
    return _MD5_MEMO[key]


def _identify(md5: str) -> tuple[str, str] | None:
    """(data set, raw file name) whose checksum ``md5`` is, if any."""
    for spec in DATASETS.values():
        for name, accepted in spec.checksums.items():
            if md5 in accepted:
                return spec.name, name
    return None


def verify_file(path: Path, spec: DatasetSpec, name: str) -> str:
    """Check that ``path`` is the file ``name`` of ``spec`` (its ``.gz`` or extracted form); return
    its MD5, or raise :class:`~pyro_vae.errors.DataError` naming the file and what it is instead."""
    try:
        md5 = file_md5(path)
    except OSError as error:
        raise DataError(describe_os_error(error, path, "read the data file")) from None
    if md5 in spec.checksums[name]:
        return md5
    known = _identify(md5)
    if known is not None:
        other = DATASETS[known[0]]
        raise DataError(f"{path} is {other.name}'s {known[1]}, not {spec.name}'s {name}: it belongs in "
                        f"<data dir>/{other.class_name}/raw/; put {spec.name}'s own file here (or choose "
                        f"--dataset {other.name})")
    raise DataError(f"{path} is not {spec.name}'s {name} (its MD5 {md5} matches no known file): it is corrupt, "
                    f"truncated or from another data set; replace it with the original file")


@contextlib.contextmanager
def _cache_lock(folder: Path) -> Iterator[None]:
    """Runs sharing a cache folder take turns preparing it (extraction is not atomic)."""
    import fcntl

    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _prepare_files(spec: DatasetSpec, data_dir: Path | None, cache: Path) -> None:
    """Verify the files of ``data_dir`` and link them into the cache, and remove from the cache the
    extracted files of ours that fail verification, so that torchvision extracts them again."""
    source, target = (data_dir / spec.class_name / "raw") if data_dir else None, cache / spec.class_name / "raw"
    for name in RAW_FILES:
        for filename in (name, name + ".gz"):
            src, dst = (source / filename) if source else None, target / filename
            if src is not None and src.is_file():
                verify_file(src, spec, name)
                if not (dst.is_symlink() and os.readlink(dst) == str(src.resolve())):
                    dst.unlink(missing_ok=True)
                    dst.symlink_to(src.resolve())
            elif dst.is_symlink() and not dst.exists():  # a dangling link left by a removed file
                dst.unlink()
        extracted = target / name
        if extracted.is_file() and not extracted.is_symlink():
            try:
                verify_file(extracted, spec, name)
            except DataError:  # ours: an interrupted extraction, or a file extracted from a bad archive
                extracted.unlink()


def load_torchvision(dataset: str, data_dir: Path | None = None, train: bool = True):
    """The torchvision dataset object (``.data`` uint8 images, ``.targets`` labels), from verified files."""
    from ._torchvision import torchvision

    if dataset not in DATASETS:
        raise ConfigError("dataset", f"unknown data set {dataset!r}; choose one of {sorted(DATASETS)}")
    spec = DATASETS[dataset]
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        if not data_dir.is_dir():
            raise DataNotFoundError(
                f"data directory {data_dir} does not exist. Pass --data-dir (or set PYRO_VAE_DATA) "
                f"to a directory holding {spec.class_name}/raw/*-ubyte.gz (torchvision's layout).")
    cache = _cache_for(data_dir)
    raw = cache / spec.class_name / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
        with _cache_lock(raw):
            _prepare_files(spec, data_dir, cache)
            try:
                data = getattr(torchvision.datasets, spec.class_name)(root=str(cache), train=train, download=True)
            except OSError:
                raise
            except Exception as error:  # noqa: BLE001  (network errors, "Dataset not found", bad checksums)
                searched = ([str(data_dir / spec.class_name / "raw")] if data_dir else []) + [str(raw)]
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise DataNotFoundError(
                    f"{dataset} is not available: no usable files in {' or '.join(searched)}, and the download "
                    f"failed ({reason}). Either connect to the internet (torchvision downloads and verifies the "
                    f"files), or pass --data-dir / set PYRO_VAE_DATA to a directory holding "
                    f"{spec.class_name}/raw/{{{','.join(RAW_FILES)}}}.gz.") from None
            for name in RAW_FILES:  # what torchvision read: extracted here, or linked from the data directory
                if (raw / name).exists():
                    verify_file(raw / name, spec, name)
    except OSError as error:
        raise OutputError(describe_os_error(error, error.filename or raw, "use the data cache") +
                          " (the cache is $PYRO_VAE_CACHE, default ~/.cache/pyro_vae)") from None
    return data


def data_fingerprint(dataset: str, data_dir: Path | None = None) -> dict:
    """{raw file name: MD5 of the extracted file} of the files a load of ``dataset`` reads."""
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    raw = _cache_for(data_dir) / DATASETS[dataset].class_name / "raw"
    return {name: file_md5(raw / name) for name in RAW_FILES}


def binarize(images: torch.Tensor, seed: int | None = None) -> torch.Tensor:
    """x ~ Bernoulli(intensity), elementwise; seeded draws are made on the CPU (reproducible on any
    device), unseeded ones on the images' device from the global generator."""
    if seed is None:
        return torch.bernoulli(images)
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(images.cpu(), generator=generator).to(images.device)


@dataclasses.dataclass
class Split:
    """Images ``(N, 1, 28, 28)`` in [0, 1] (or {0, 1}) and labels ``(N,)`` (``None`` for a data set
    without labels), on one device."""

    images: torch.Tensor
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclasses.dataclass
class ImageData:
    """Train / validation / test splits resident on the training device."""

    train: Split
    val: Split
    test: Split
    binarize: str  # dynamic, static or none; "fixed" for a data set published binarized
    name: str
    files: dict = dataclasses.field(default_factory=dict)  # raw file name -> MD5 of the file read

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

    def example_batch(self, batch_size: int) -> torch.Tensor:
        """A batch like those of :meth:`train_batches` (the first images, binarized with a fixed seed
        under dynamic binarization), drawn without touching the global random-number generator."""
        x = self.train.images[:batch_size]
        return binarize(x, seed=BINARIZE_SEED + 3) if self.binarize == "dynamic" else x

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self.train) // batch_size)


def load_data(dataset: str = "mnist", data_dir: Path | None = None, binarization: str | None = None,
              train_size: int | None = None, val_size: int = 1000, test_size: int | None = None,
              device: torch.device | str = "cpu") -> ImageData:
    """Load a data set into memory on ``device``, from files verified against its checksums.

    The validation split is the *last* ``val_size`` training images (held out, never trained on;
    used for model selection); the training split is the first ``train_size`` of the rest, the test
    split the first ``test_size`` test images (``None``: all). The test split is never used to
    choose anything. A data set with a validation split of its own (``binarized-mnist``) takes the
    first ``val_size`` images of that split instead, and trains on its whole training split.
    ``binarization`` ``None`` is the data set's own: dynamic for grey-level images, the published one
    for ``binarized-mnist`` (which takes no other).

    :raises ConfigError: for a size or name that does not fit the data set (naming the argument).
    :raises DataError: for a missing, corrupt or misplaced data file (naming the file).
    """
    if dataset not in DATASETS:
        raise ConfigError("dataset", f"unknown data set {dataset!r}; choose one of {sorted(DATASETS)}")
    spec = DATASETS[dataset]
    binarization = check_binarization(spec, binarization)
    for name, size in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ConfigError(name, f"must be an integer >= 0, got {size!r}")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if spec.binarized:
        return _load_binarized(spec, data_dir, train_size, val_size, test_size, device)
    train_set = load_torchvision(dataset, data_dir, train=True)
    test_set = load_torchvision(dataset, data_dir, train=False)

    def to_split(images: torch.Tensor, labels: torch.Tensor) -> Split:
        return Split(images.unsqueeze(1).to(device=device, dtype=torch.float32) / 255.0,
                     labels.to(device=device))

    n_train_all, n_test_all = train_set.data.shape[0], test_set.data.shape[0]
    if val_size >= n_train_all:
        raise ConfigError("val_size", f"{val_size} leaves no training images (the set has {n_train_all})")
    n_fit = n_train_all - val_size
    if train_size == 0:
        raise ConfigError("train_size", "0 leaves nothing to train on")
    if train_size is not None and train_size > n_fit:
        raise ConfigError("train_size", f"{train_size} asks for more than the {n_fit} training images left after "
                          f"the {val_size} held out for validation; use at most {n_fit}, or leave it unset for all")
    if test_size is not None and not 1 <= test_size <= n_test_all:
        raise ConfigError("test_size", f"must be between 1 and the {n_test_all} test images, got {test_size}")
    n_train = n_fit if train_size is None else train_size
    train = to_split(train_set.data[:n_train], train_set.targets[:n_train])
    val = to_split(train_set.data[n_fit:], train_set.targets[n_fit:])
    n_test = n_test_all if test_size is None else test_size
    test = to_split(test_set.data[:n_test], test_set.targets[:n_test])

    if binarization != "none":
        # Fixed draws for the evaluation splits (and for the training split when static).
        val.images = binarize(val.images, seed=BINARIZE_SEED + 1)
        test.images = binarize(test.images, seed=BINARIZE_SEED + 2)
        if binarization == "static":
            train.images = binarize(train.images, seed=BINARIZE_SEED)
    return ImageData(train, val, test, binarization, dataset, data_fingerprint(dataset, data_dir))


def check_binarization(spec: DatasetSpec, binarization: str | None) -> str:
    """The binarization of ``spec``'s images: ``binarization`` (``None``: dynamic) for a grey-level
    data set, ``"fixed"`` for a published binarized one, which takes none (:class:`ConfigError`)."""
    if spec.binarized:
        if binarization is not None:
            raise ConfigError("binarize", f"does not apply to {spec.name}: its images are already binary, one fixed "
                              f"published binarization with its own splits; leave binarize unset (got "
                              f"{binarization!r}), or choose --dataset mnist for {binarization} binarization")
        return "fixed"
    if binarization is None:
        return "dynamic"
    if binarization not in BINARIZATIONS:
        raise ConfigError("binarize", f"unknown binarization {binarization!r}; choose one of {list(BINARIZATIONS)}")
    return binarization


def _load_binarized(spec: DatasetSpec, data_dir: Path | None, train_size: int | None, val_size: int,
                    test_size: int | None, device) -> ImageData:
    """The published splits: the first ``train_size`` training images, the first ``val_size`` of the
    validation split, the first ``test_size`` test images; no labels."""
    if data_dir is not None and not data_dir.is_dir():
        raise DataNotFoundError(f"data directory {data_dir} does not exist. Pass --data-dir (or set PYRO_VAE_DATA) "
                                f"to a directory holding {spec.layout}.")
    for name, size, available in (("train_size", train_size, spec.num_train), ("val_size", val_size, spec.num_val),
                                  ("test_size", test_size, spec.num_test)):
        if size is not None and size > available:
            raise ConfigError(name, f"{size} asks for more than the {available} images of {spec.name}'s "
                              f"{name.removesuffix('_size')} split; use at most {available}")
    if train_size == 0:
        raise ConfigError("train_size", "0 leaves nothing to train on")
    if test_size == 0:
        raise ConfigError("test_size", f"must be between 1 and the {spec.num_test} test images, got 0")
    try:
        images, files = binarized_mnist.load_splits(data_dir, _cache_for(data_dir))
    except OSError as error:
        raise OutputError(describe_os_error(error, error.filename or cache_dir(), "use the data cache")) from None

    def to_split(x: torch.Tensor, n: int | None) -> Split:
        x = x[:n] if n is not None else x
        return Split(x.reshape(-1, *spec.x_shape).to(device=device, dtype=torch.float32), None)

    return ImageData(to_split(images["train"], train_size), to_split(images["valid"], val_size),
                     to_split(images["test"], test_size), "fixed", spec.name, files)
