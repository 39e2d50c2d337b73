"""The output folder of a run: one run at a time, nothing a user wrote silently replaced, every file whole.

* **Atomic files.** Every file a run writes goes through :func:`atomic_write`: the bytes go to a
  temporary file in the same folder, are flushed to disk, and the temporary file is renamed over the
  destination (``os.replace``, atomic on POSIX file systems). A reader, a crash, a ``kill -9`` or a
  full disk therefore sees the old file or the new one, never a mix or a truncated file; on failure
  the temporary file is removed and the error names the file.
* **One run per folder.** :class:`RunDirectory` takes an exclusive ``flock`` on ``.pyro_vae.lock``
  in the folder for as long as the run lasts. The kernel releases it when the process ends, however
  it ends, so a killed run never leaves a stale lock; a second run fails at once and its message
  names the first (pid, host, start time, command line).
* **No silent replacement.** A fresh run refuses a folder that already holds a run
  (:data:`RUN_MARKERS`) unless told to overwrite; then only pyro_vae's own files
  (:data:`OUTPUT_FILES`) are removed, never anything else in the folder.
* **Checked before work starts.** The folder is created (or checked to be one), written to once and
  its free space compared with what the run will write, before any training.

Every ``OSError`` becomes an :class:`~pyro_vae.errors.OutputError` whose message names the path,
the reason and the fix.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from .errors import ExistingRunError, OutputError, RunInUseError

#: Files a run writes into its folder (all of them, plots included).
OUTPUT_FILES = ("metrics.json", "evaluation.pt", "checkpoint.pt", "best.pt", "reconstructions.png",
                "samples.png", "latent.png", "manifold.png", "elbo.png", "khat.png")
#: A folder holding any of these holds a run.
RUN_MARKERS = ("checkpoint.pt", "best.pt", "metrics.json")
LOCK_NAME = ".pyro_vae.lock"
_TMP_SUFFIX = ".pyro_vae.tmp"


def describe_os_error(error: OSError, path: str | os.PathLike, doing: str = "write") -> str:
    """One line: what failed on which path, why, and what to do."""
    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC or error.errno == getattr(errno, "EDQUOT", None):
        fix = "the disk is full: free some space, or choose an output folder on another disk"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a folder you can write to"
    elif error.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a file stands where a folder is needed: choose another path"
    else:
        fix = "check the path"
    return f"cannot {doing} {path}: {reason}; {fix}"


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` atomically: ``write(file)`` fills a temporary file beside it, which is then
    flushed, synced and renamed over ``path``. On any failure ``path`` is left as it was and the
    temporary file is removed; an ``OSError`` is raised as :class:`~pyro_vae.errors.OutputError`."""
    path = Path(path)
    tmp = None
    try:
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as error:
        _remove_quietly(tmp)
        raise OutputError(describe_os_error(error, path)) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    return path


def _remove_quietly(path: str | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda file: file.write(text.encode()))


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n")


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda file: torch.save(obj, file))


def holder_description() -> dict:
    """Who holds a lock: this process, for the message a second run prints."""
    return {"pid": os.getpid(), "host": platform.node(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"}


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``folder`` (which must exist) while the block runs."""
    import fcntl

    lock_path = folder / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise OutputError(describe_os_error(error, lock_path, "create the lock file")) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInUseError(f"{folder} is in use by another run ({_read_holder(fd)}); wait for it to finish, "
                                "or choose another output folder (--out)") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder_description()).encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 65536, 0).decode() or "{}")
        return (f"pid {holder['pid']} on {holder['host']}, started {holder['started']}: "
                f"{holder['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "its details could not be read"


class RunDirectory:
    """The folder a run writes to. Use :meth:`claim` as a context manager around the whole run.

    ``markers`` are the files whose presence means the folder holds a run, ``outputs`` the files a
    run writes (a comparison's folder has its own)."""

    def __init__(self, path: str | os.PathLike, markers: Sequence[str] = RUN_MARKERS,
                 outputs: Sequence[str] = OUTPUT_FILES):
        self.path = Path(path).expanduser()
        self.markers, self.outputs = tuple(markers), tuple(outputs)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def existing_outputs(self) -> list[str]:
        """The pyro_vae files already in the folder."""
        return [name for name in self.outputs if (self.path / name).exists()]

    def holds_run(self) -> bool:
        return any((self.path / name).exists() for name in self.markers)

    @contextlib.contextmanager
    def claim(self, fresh: bool, overwrite: bool = False, needed_bytes: int = 0) -> Iterator[RunDirectory]:
        """Create or check the folder, lock it, clean stale temporary files, and check that it
        can be written (with ``needed_bytes`` free) — all before any work.

        :param fresh: a new run, not a continuation of the run in this folder. A fresh run refuses
            a folder that holds a run unless ``overwrite``, which removes pyro_vae's files of the
            earlier run (and nothing else).
        :raises ExistingRunError, RunInUseError, OutputError: each with the fix in its message.
        """
        self._make()
        with locked(self.path):
            self._clean_stale_temporaries()
            if fresh and self.holds_run():
                found = ", ".join(self.existing_outputs())
                if not overwrite:
                    raise ExistingRunError(
                        f"{self.path} already holds a run ({found}); continue it with --resume {self.path}, "
                        "choose another output folder (--out), or pass --overwrite to replace it")
                print(f"--overwrite: removing the earlier run's files from {self.path} ({found})")
                self._remove(self.existing_outputs())
            self._check_writable(needed_bytes)
            yield self

    def _make(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"the output folder {self.path} is a file; choose a folder (--out)")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(describe_os_error(error, self.path, "create the output folder")) from None

    def _check_writable(self, needed_bytes: int) -> None:
        try:
            handle, probe = tempfile.mkstemp(dir=self.path, prefix=".write-check.", suffix=_TMP_SUFFIX)
            os.close(handle)
            os.unlink(probe)
            free = shutil.disk_usage(self.path).free
        except OSError as error:
            raise OutputError(describe_os_error(error, self.path, "write to the output folder")) from None
        if free < needed_bytes:
            raise OutputError(f"the output folder {self.path} has {free / 2**20:.0f} MiB free, but this run writes "
                              f"about {needed_bytes / 2**20:.0f} MiB; free some space or choose another folder (--out)")

    def _clean_stale_temporaries(self) -> None:
        """Temporary files of an earlier run that was killed mid-write (we hold the lock, so no run
        of ours is writing them now), including those of pyro_vae 0.1's checkpoint writer."""
        legacy = tuple(f"{name}." for name in self.outputs)
        stale = [p.name for p in self.path.iterdir() if p.is_file() and (
            p.name.endswith(_TMP_SUFFIX) or (p.name.startswith(legacy) and p.name.endswith(".tmp")))]
        self._remove(stale)

    def _remove(self, names: Iterable[str]) -> None:
        for name in names:
            try:
                (self.path / name).unlink(missing_ok=True)
            except OSError as error:
                raise OutputError(describe_os_error(error, self.path / name, "remove")) from None
