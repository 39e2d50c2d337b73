"""What the tutorials share: MNIST (or a stated stand-in where it is absent), small models trained
once and cached, and the plotting style.

Every tutorial runs on this project's 2-core CPU in well under a minute: the models are small
(784–200–20 MLPs), trained on 20,000 images for a few epochs with the library's own ``fit``, and
saved with ``save_checkpoint`` in the cache (``$PYRO_VAE_CACHE/tutorials``), so the tutorials that
need the same model train it once per build.

The data is real MNIST from ``$PYRO_VAE_DATA`` (or, where it is not set, ``../shared/data`` beside
the repository). Where it is absent, the tutorials run on a *stand-in*: 28 × 28 images made of ten noisy blob patterns. The
numbers then mean little, and every tutorial says so in its first output (``DATA.note``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch

import pyro_vae
from pyro_vae.data import BINARIZE_SEED, ImageData, Split, binarize, cache_dir

REPO = Path(__file__).resolve().parents[2]
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})


def _real_data_dir() -> Path | None:
    """``$PYRO_VAE_DATA`` when it is set (set it to an empty folder to build with the stand-in),
    else ``../shared/data`` beside the repository, if it holds MNIST."""
    candidate = os.environ.get("PYRO_VAE_DATA", str(REPO.parent / "shared" / "data"))
    return Path(candidate) if (Path(candidate) / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file() else None


@dataclasses.dataclass
class TutorialData:
    """Grey-level images (``grey``) and their fixed binarization (``binary``), train and test."""

    grey: ImageData
    binary: ImageData
    real: bool

    @property
    def note(self) -> str:
        if self.real:
            return f"Data: MNIST, {len(self.grey.train)} training and {len(self.grey.test)} test images."
        return ("Data: MNIST was not found ($PYRO_VAE_DATA or ../shared/data), so this page runs on a synthetic "
                "stand-in of noisy blob patterns; its numbers illustrate the method, not MNIST.")


def _stand_in(n_train: int, n_test: int) -> ImageData:
    generator = torch.Generator().manual_seed(0)
    prototypes = (torch.rand(10, 7, 7, generator=generator) > 0.6).float().repeat_interleave(4, 1).repeat_interleave(4, 2)

    def split(n: int) -> Split:
        labels = torch.randint(0, 10, (n,), generator=generator)
        shifts = torch.randint(-2, 3, (n, 2), generator=generator)
        images = torch.stack([torch.roll(prototypes[y], tuple(s.tolist()), (0, 1)) for y, s in zip(labels, shifts)]
                             ) if n else torch.zeros(0, 28, 28)
        images = (images * 0.9 + 0.08 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
        return Split(images.unsqueeze(1), labels)

    return ImageData(split(n_train), split(0), split(n_test), "none", "stand-in")


def load(n_train: int = 20_000, n_test: int = 1_000) -> TutorialData:
    """The tutorials' data: the first ``n_train`` training and ``n_test`` test images."""
    data_dir = _real_data_dir()
    if data_dir is not None:
        grey = pyro_vae.load_data("mnist", data_dir, "none", train_size=n_train, val_size=0, test_size=n_test)
    else:
        grey = _stand_in(n_train, n_test)
    binary = dataclasses.replace(
        grey, train=Split(binarize(grey.train.images, seed=BINARIZE_SEED), grey.train.labels),
        test=Split(binarize(grey.test.images, seed=BINARIZE_SEED + 2), grey.test.labels), binarize="static")
    return TutorialData(grey, binary, data_dir is not None)


DATA = load()


def trained(z_dim: int = 20, likelihood: str = "bernoulli", likelihood_options: dict | None = None,
            hidden_dims=(200,), num_epochs: int = 8, seed: int = 0) -> pyro_vae.VAE:
    """A VAE trained with the ``elbo`` objective on the tutorials' training images (binary for the
    Bernoulli likelihood, grey levels otherwise), cached by its settings."""
    likelihood_options = likelihood_options or {}
    settings = {"z_dim": z_dim, "likelihood": likelihood, "likelihood_options": likelihood_options,
                "hidden_dims": list(hidden_dims), "num_epochs": num_epochs, "seed": seed, "real": DATA.real,
                "train": len(DATA.grey.train)}
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / "tutorials" / f"{likelihood}-z{z_dim}-{key}.pt"
    if path.is_file():
        return pyro_vae.load(path)
    pyro.set_rng_seed(seed)
    config = pyro_vae.make_config((1, 28, 28), z_dim, likelihood=likelihood, options={
        "likelihood": likelihood_options, "net": {"hidden_dims": list(hidden_dims)}})
    vae = pyro_vae.build_vae(config)
    images = (DATA.binary if likelihood == "bernoulli" else DATA.grey).train.images
    loss = pyro_vae.make_objective("elbo")(vae.model, vae.guide)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    with pyro.validation_enabled(False):
        pyro_vae.fit(loss, optimizer, lambda: images[torch.randperm(len(images))].split(100), num_epochs,
                     progress=False, verbose=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    pyro_vae.save_checkpoint(path, vae, None, settings=settings)
    return vae


def show_images(images: torch.Tensor, title: str, nrow: int = 10, ax=None):
    """A grid of images with a title (no axes)."""
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 8 * grid.shape[1] / grid.shape[2] + 0.4))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    return ax
