"""Checkpoints: parameters, optimizer, RNG state and the configuration that built the model, written
atomically, hashed, and loaded only with the safe loader.

A run folder holds two kinds:

* ``checkpoint.pt``, kind ``"training"``: everything needed to continue training exactly (model and
  optimizer state, RNG state, the objective's state such as a KL warm-up position, history, run
  configuration, model selection so far);
* ``best.pt``, kind ``"model"``: the selected model (best validation ELBO) with its configuration.

**Format 2.** The record (a plain ``dict`` of tensors, numbers, strings, lists and dicts) is
serialized with :func:`torch.save` into bytes; the file holds those bytes as a ``uint8`` tensor
beside their SHA-256 and the format's name and version, and is itself written with
:func:`torch.save` through :func:`pyro_vae.outputs.atomic_write`. Loading checks the hash before
reading the record, so a bit flipped on disk or a truncated copy is an error naming the file, never
a model that silently evaluates to NaN. Both layers are read with ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain containers: no code from a file ever runs.

**Format 1** (pyro_vae 0.1: the record itself, no hash) still loads: it is converted in memory
(:func:`migrate_v1`), with a warning, and the next save of a resumed run writes format 2.

Every failure to read a checkpoint is a :class:`~pyro_vae.errors.CheckpointError` whose message
names the file and says what it is instead.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .build import build_vae
from .errors import CheckpointError, ConfigError, InputError
from .outputs import atomic_write, describe_os_error
from .vae import VAE

FORMAT = "pyro_vae.checkpoint"
FORMAT_VERSION = 2
KINDS = ("training", "model")
#: Keys every record has, and those a run's training checkpoint adds (what resuming needs).
REQUIRED = ("kind", "model_config", "model_state")
REQUIRED_TRAINING = ("run_config", "optimizer_state", "rng_state", "epoch", "history", "best_val_elbo",
                     "best_epoch", "objective_state")


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
                    **record: Any) -> Path:
    """Write ``vae`` (its parameters and its ``config``), the optimizer state (a ``"training"``
    checkpoint; without an optimizer, a ``"model"`` one), the RNG state and the extra ``record``
    entries (epoch, history, run settings) to ``path``, atomically and hashed."""
    if vae.config is None:
        raise InputError("this VAE has no config; build it with pyro_vae.build_vae to checkpoint it")
    from . import __version__

    payload = {
        "kind": "training" if optimizer is not None else "model",
        "model_config": vae.config,
        "model_state": vae.state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "rng_state": get_rng_state(),
        "pyro_vae_version": __version__,
        "run_config": None,
        **record,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    container = {"format": FORMAT, "format_version": FORMAT_VERSION, "sha256": hashlib.sha256(data).hexdigest(),
                 "payload": torch.frombuffer(bytearray(data), dtype=torch.uint8)}
    return atomic_write(path, lambda file: torch.save(container, file))


def resolve_checkpoint(path: str | os.PathLike, name: str = "best.pt") -> Path:
    """``path`` itself if it is a file; ``path/name`` if it is a run folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / name).is_file():
            return path / name
        raise CheckpointError(f"{path} is a folder without {name}: pass the folder of a pyro_vae run (it holds "
                              "checkpoint.pt and best.pt) or a checkpoint file")
    if path.is_file():
        return path
    raise CheckpointError(f"{path}: no such checkpoint file or run folder")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint record of the file ``path``, its integrity checked, read with the safe loader.

    :raises CheckpointError: the file is unreadable, truncated, corrupt (hash mismatch), unsafe
        (holds objects the safe loader refuses), or not a pyro_vae checkpoint; the message says which.
    """
    path = Path(path).expanduser()
    _check_map_location(map_location)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass a checkpoint file (e.g. {path / 'checkpoint.pt'})")
    outer = _safe_load(path, None, "cpu")
    if isinstance(outer, dict) and outer.get("format") == FORMAT:
        record = _unpack(path, outer, map_location)
    elif isinstance(outer, dict) and outer.get("format_version") == 1 and "model_config" in outer:
        warnings.warn(f"{path} is a checkpoint of pyro_vae 0.1 (format 1, no integrity hash); it was read as it "
                      "is, and the next save of a resumed run writes it in format 2", stacklevel=2)
        record = migrate_v1(_to(outer, map_location))
    else:
        kind = f"a {type(outer).__name__}" + (f" with keys {sorted(map(str, outer))[:6]}" if isinstance(outer, dict)
                                              else "")
        raise CheckpointError(f"{path} is not a pyro_vae checkpoint (it holds {kind}); pyro_vae reads the "
                              "checkpoint.pt and best.pt files that a pyro_vae run writes")
    _check_record(path, record)
    return record


def _check_map_location(map_location: Any) -> None:
    try:
        device = torch.device(map_location) if isinstance(map_location, (str, torch.device)) else None
    except RuntimeError:
        raise InputError(f"map_location {map_location!r} is not a torch device") from None
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"map_location {map_location!r}: no CUDA GPU is available here; load on the CPU")


def _safe_load(path: Path, data: bytes | None, map_location: Any) -> Any:
    """``torch.load(weights_only=True)`` of the file ``path``, or of ``data`` read from it."""
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise CheckpointError(describe_os_error(error, path, "read")) from None
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights_only" in str(error) or "Weights only load failed" in str(error):
            raise CheckpointError(f"{path} holds Python objects that the safe loader refuses (torch.load with "
                                  "weights_only=True): it was not written by pyro_vae, and it is not loaded, since "
                                  "loading it could run code from the file") from None
        raise CheckpointError(f"{path} is corrupt ({_first_line(error)}); use another copy, or train again") from None
    except Exception as error:  # noqa: BLE001  (a damaged archive fails in many ways; the safe loader runs no code)
        raise CheckpointError(f"{path} is not a readable checkpoint: truncated, corrupt or not a torch file "
                              f"({type(error).__name__}: {_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _unpack(path: Path, outer: dict, map_location: Any) -> dict[str, Any]:
    version = outer.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} is a pyro_vae checkpoint of format {version!r}, which this version "
                              f"({FORMAT_VERSION}) cannot read; load it with the pyro_vae that wrote it")
    payload = outer.get("payload")
    if not torch.is_tensor(payload) or payload.dtype != torch.uint8 or not isinstance(outer.get("sha256"), str):
        raise CheckpointError(f"{path} is a damaged pyro_vae checkpoint (its contents or hash are missing)")
    data = payload.numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != outer["sha256"]:
        raise CheckpointError(f"{path} is corrupt: its contents do not match the SHA-256 written with them (the file "
                              "changed after it was written, e.g. a damaged disk or copy); use another copy, or "
                              "train again")
    record = _safe_load(path, data, map_location)
    if not isinstance(record, dict):
        raise CheckpointError(f"{path} is a damaged pyro_vae checkpoint (its record is not a dict)")
    return record


def _to(record: dict, map_location: Any) -> dict:
    return torch.utils._pytree.tree_map(  # format 1 was loaded on the CPU; move its tensors
        lambda v: v.to(map_location) if torch.is_tensor(v) and map_location is not None else v, record)


def _check_record(path: Path, record: dict) -> None:
    missing = [key for key in REQUIRED if key not in record]
    if record.get("kind") not in KINDS:
        missing.append("kind")
    if missing:
        raise CheckpointError(f"{path} is an incomplete pyro_vae checkpoint (missing {sorted(set(missing))})")
    bad = [name for name, value in record["model_state"].items()
           if torch.is_tensor(value) and value.is_floating_point() and value.device.type != "meta"
           and not torch.isfinite(value).all()]
    if bad:
        raise CheckpointError(f"{path} holds NaN or infinite parameters ({', '.join(bad[:3])}): this model is "
                              "broken (saved after training diverged?) and cannot be used")


def check_state(file: str | os.PathLike, vae: VAE, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (the parameters read from ``file``), checked to fit ``vae``: the same parameter
    names and shapes, so that ``vae.load_state_dict(state)`` cannot fail later with a traceback.

    :raises CheckpointError: the parameters do not fit the model (the message names the file).
    """
    expected = vae.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [name for name in expected if name in state and torch.is_tensor(state[name])
              and tuple(state[name].shape) != tuple(expected[name].shape)]
    if missing or unexpected or shapes:
        found = ", ".join(filter(None, [
            f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
            f"other shapes for {shapes[:3]}" if shapes else ""]))
        raise CheckpointError(f"{file}: its parameters do not fit the model of this run ({found}); it belongs to "
                              "another model (or is damaged): move it out of the run folder, or use the run's own file")
    return state


def migrate_v1(record: dict[str, Any]) -> dict[str, Any]:
    """A format-1 record (pyro_vae 0.1) in format 2's terms: its kind, and its run settings as a
    :class:`~pyro_vae.config.RunConfig` dict (``cuda`` becomes ``device``; the model's pieces and
    ``z_dim`` come from its model record)."""
    old, model = dict(record.get("run_config") or {}), record["model_config"]
    run_config = {key: old[key] for key in ("dataset", "binarize", "train_size", "val_size", "test_size",
                                            "batch_size", "lr", "lr_schedule", "adam_eps", "seed", "num_epochs",
                                            "protocol", "objective", "objective_options", "eval_samples",
                                            "eval_batch_size", "eval_ks", "data_dir", "pyro_validation") if key in old}
    run_config["device"] = "cuda" if old.get("cuda") else "cpu"
    run_config["z_dim"] = model["z_dim"]
    for kind in ("prior", "guide", "likelihood", "net"):
        run_config[kind], run_config[f"{kind}_options"] = model[kind]["name"], model[kind]["options"]
    migrated = {**record, "kind": "training" if record.get("optimizer_state") is not None else "model",
                "run_config": run_config}
    migrated.setdefault("history", [])
    return migrated


def load(path: str | os.PathLike, map_location: Any = "cpu") -> VAE:
    """Rebuild a trained :class:`VAE` from a checkpoint file, or from a run folder (its selected
    model, ``best.pt``), on ``map_location``.

    :raises CheckpointError: no such file or folder, or a file that is not a usable checkpoint.
    """
    file = resolve_checkpoint(path, "best.pt")
    record = load_checkpoint(file, map_location)
    try:
        vae = build_vae(record["model_config"])
        vae.load_state_dict(record["model_state"])
    except (ConfigError, ValueError, RuntimeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{file}: its model record does not rebuild its parameters ({_first_line(error)}); "
                              "the file is damaged or was written by an incompatible version") from None
    return vae.to(map_location) if map_location is not None else vae
