"""Atomic checkpoints: parameters, optimizer, RNG state and the configuration that built the model.

A checkpoint is a plain ``dict`` saved with :func:`torch.save` and loaded with
``torch.load(weights_only=True)`` (the safe loader, torch's default): everything in it is tensors,
numbers, strings, lists and dicts. Pyro's RNG state holds a NumPy array, which the safe loader
refuses, so it is stored as tensors and rebuilt on load.

Writing is atomic: the file is written next to its destination and renamed over it, so an
interrupted run never leaves a truncated checkpoint.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .build import build_vae
from .vae import VAE

FORMAT_VERSION = 1


def get_rng_state() -> dict[str, Any]:
    """Torch (CPU and every CUDA device), Python and NumPy generator states, as safe types."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))


def save_checkpoint(path: str | os.PathLike, vae: VAE, optimizer: torch.optim.Optimizer | None = None,
                    **record: Any) -> None:
    """Write ``vae`` (its parameters and its ``config``), the optimizer state, the RNG state and any
    extra ``record`` entries (epoch, history, run settings) to ``path`` atomically."""
    if vae.config is None:
        raise ValueError("this VAE has no config; build it with pyro_vae.build_vae to checkpoint it")
    checkpoint = {
        "format_version": FORMAT_VERSION,
        "model_config": vae.config,
        "model_state": vae.state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "rng_state": get_rng_state(),
        **record,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(checkpoint, file)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint dictionary, loaded with the safe ``weights_only=True`` loader."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if checkpoint.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a pyro_vae checkpoint of format {FORMAT_VERSION}")
    return checkpoint


def load(path: str | os.PathLike, map_location: Any = "cpu") -> VAE:
    """Rebuild a trained :class:`VAE` from a checkpoint file alone."""
    checkpoint = load_checkpoint(path, map_location)
    vae = build_vae(checkpoint["model_config"])
    vae.load_state_dict(checkpoint["model_state"])
    return vae.to(map_location) if map_location is not None else vae
