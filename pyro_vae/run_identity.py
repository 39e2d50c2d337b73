"""A run folder is one run: the identity every file of a run carries, and the check that the files
of a folder belong together.

A run draws its identity once, when it starts: a random **run id** (:func:`uuid.uuid4`, from the
operating system's entropy, so the run's seeded random streams, and hence its results, are
untouched) and the **config hash**, the SHA-256 of its model configuration and of the run settings
that fix what is trained (the ``fixed`` fields of :class:`~pyro_vae.config.RunConfig`). Both are
written into ``checkpoint.pt``, ``best.pt``, ``evaluation.pt`` and ``metrics.json``.

* A resumed run (``resume`` in its own folder) keeps the identity of its checkpoint, as it was
  written: neither is recomputed, so a newer pyro_vae with more settings does not change it.
* A fork (``resume`` into another output folder) is a new run: it draws a new run id and records
  its origin as ``parent_run_id``.
* A folder written before run ids existed still resumes: the run prints a one-line notice, draws
  an id for what it writes from then on, and files without an id are not checked against others
  (the parameters of ``best.pt`` are still checked against the model, see
  :func:`pyro_vae.checkpoint.check_state`).
* Under torchrun every process draws an id, but only process 0 writes files, so a folder holds one.

When a folder is resumed, evaluated, certified or compared, :func:`check_folder` reads the identity
of each of its files; two files with different run ids (or, with the same id, different config
hashes) are a :class:`~pyro_vae.errors.CheckpointError` naming both files and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

from .errors import CheckpointError

#: The files of a run folder that carry the run's identity, in the order they are checked.
FILES = ("checkpoint.pt", "best.pt", "evaluation.pt", "metrics.json")
KEYS = ("run_id", "config_hash", "parent_run_id")


def new_run_id() -> str:
    """A fresh run id, from the operating system's entropy (never from torch, NumPy or ``random``)."""
    return uuid.uuid4().hex


def config_hash(run_config: dict[str, Any], model_config: dict[str, Any]) -> str:
    """SHA-256 of the model configuration and the ``fixed`` run settings (those a resume keeps)."""
    from .config import FIXED, RunConfig

    fixed = {field.name for field in dataclasses.fields(RunConfig) if field.metadata["resume"] == FIXED}
    text = json.dumps({"run": {k: v for k, v in run_config.items() if k in fixed}, "model": model_config},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def identity_of(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The identity a record (checkpoint, evaluation or metrics) carries; ``None`` for one written
    before run ids existed."""
    if not isinstance(record, dict) or not isinstance(record.get("run_id"), str):
        return None
    return {key: record.get(key) for key in KEYS}


def for_run(resumed_record: dict[str, Any] | None, fork: bool, run_config: dict[str, Any],
            model_config: dict[str, Any], source: Path | None = None) -> dict[str, Any]:
    """The identity of a run: a new one for a fresh run or a fork, the checkpoint's for a resume.
    A resumed checkpoint without one gets a new id, with a one-line notice."""
    saved = identity_of(resumed_record)
    if saved is not None and not fork:
        return saved
    if resumed_record is not None and saved is None and source is not None:
        print(f"notice: {source} was written by an older pyro_vae and has no run id, so its folder's files cannot "
              "be checked against each other; the files written from now on carry a new one")
    return {"run_id": new_run_id(), "config_hash": config_hash(run_config, model_config),
            "parent_run_id": saved["run_id"] if saved is not None else None}


def read_identity(file: Path, device: Any = "cpu") -> dict[str, Any] | None:
    """The identity written in one file of a run folder (see :data:`FILES`)."""
    if file.name == "metrics.json":
        try:
            return identity_of(json.loads(file.read_text()))
        except (OSError, ValueError):
            raise CheckpointError(f"{file} is not readable JSON; remove it (it is rewritten when the run is "
                                  "evaluated again)") from None
    if file.name == "evaluation.pt":
        import torch

        try:
            return identity_of(torch.load(file, map_location="cpu", weights_only=True))
        except Exception:  # noqa: BLE001  (unreadable, truncated, foreign: one message)
            raise CheckpointError(f"{file} is not a readable evaluation of a pyro_vae run; remove it (it is "
                                  "rewritten when the run is evaluated again)") from None
    from .checkpoint import load_checkpoint

    return identity_of(load_checkpoint(file, device))


def check_folder(folder: str | Path, known: dict[Path, dict[str, Any]] | None = None, device: Any = "cpu",
                 files: tuple[str, ...] = FILES) -> None:
    """Check that the ``files`` present in ``folder`` belong to one run. ``known``: records already
    loaded (file -> record), not read again.

    :raises CheckpointError: two files carry different run ids, or the same id with different
        config hashes; the message names both files and the fix.
    """
    folder = Path(folder)
    known = {Path(file).resolve(): record for file, record in (known or {}).items()}
    seen: list[tuple[Path, dict[str, Any]]] = []
    for name in files:
        file = folder / name
        if not file.is_file():
            continue
        identity = identity_of(known[file.resolve()]) if file.resolve() in known else read_identity(file, device)
        if identity is None:  # written before run ids: nothing to check it against
            continue
        for other, other_identity in seen:
            if other_identity["run_id"] != identity["run_id"] or other_identity["config_hash"] != identity["config_hash"]:
                what = "run" if other_identity["run_id"] != identity["run_id"] else "configuration"
                raise CheckpointError(
                    f"{folder} mixes the files of two runs: {other} belongs to run {other_identity['run_id'][:12]} "
                    f"and {file} to {'run ' + identity['run_id'][:12] if what == 'run' else 'another configuration'}; "
                    "move the file that is not of this run out of the folder (a run folder holds one run)")
        seen.append((file, identity))
