"""The failures a user can cause, as exception classes.

Every one of them is something the user can fix (a flag, a file, a folder, a tensor passed in), and
its message says what is at fault and how to fix it, in one line. The command line
(:func:`pyro_vae.cli.main`) prints that line and exits with status 2; from Python they are ordinary
exceptions. Anything else that escapes is a bug in pyro_vae and keeps its traceback.

Each class also derives from the built-in exception a caller would expect (``ValueError`` for bad
values, ``OSError`` for files), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class PyroVAEError(Exception):
    """Base class: a failure caused by input, fixable by the user; the message says how."""


class ConfigError(PyroVAEError, ValueError):
    """A setting of a run is invalid. ``field`` names the setting (a :class:`~pyro_vae.config.RunConfig`
    field such as ``"z_dim"``), ``option`` the piece option within it, if any (``"depth"``)."""

    def __init__(self, field: str, message: str, option: str | None = None):
        super().__init__(f"{field}: {message}")
        self.field, self.option, self.reason = field, option, message


class ResumeConflictError(ConfigError):
    """A resumed run was asked to change a setting that the checkpoint fixes (the model, the data
    or the training settings). ``conflicts`` lists them as (field, option or None, asked, saved)."""

    def __init__(self, field: str, message: str, conflicts: list | None = None):
        super().__init__(field, message)
        self.conflicts = conflicts or []


class InputError(PyroVAEError, ValueError):
    """A tensor or argument passed to a Python entry point (``evaluate``, ``fit``, ``sample``, ...)
    has the wrong type, dtype, shape, device or values."""


class DataError(PyroVAEError, RuntimeError):
    """A data file is missing, unreadable, or not the data set it is named as."""


class DataNotFoundError(DataError):
    """The data set is neither in the data directory nor downloadable."""


class CheckpointError(PyroVAEError, ValueError):
    """A file is not a usable pyro_vae checkpoint: corrupt, truncated, foreign or unsafe."""


class OutputError(PyroVAEError, OSError):
    """The output folder (or the cache) cannot be written: not a folder, read-only, full."""


class RunInUseError(OutputError):
    """Another run holds the output folder."""


class ExistingRunError(OutputError):
    """A fresh run was pointed at a folder that already holds a run."""


class ResourceError(PyroVAEError, MemoryError):
    """The request cannot fit in this machine's memory, or in the time limit."""


class TrainingDivergedError(PyroVAEError, FloatingPointError):
    """Training or evaluation produced non-finite values, or an objective far below the untrained
    model's: the optimization diverged."""


class RunAbortedError(PyroVAEError, RuntimeError):
    """A process of a run over several processes stopped because another one failed. ``quiet``: the
    other process has printed the reason, so this one says nothing more."""

    def __init__(self, message: str, quiet: bool = False):
        super().__init__(message)
        self.quiet = quiet
