"""Registries: a name -> factory map for each kind of swappable piece.

A new prior, guide, likelihood, network or objective is one class (or factory) in one file,
registered with a decorator in that file::

    @PRIORS.register("standard_normal")
    class StandardNormalPrior(nn.Module): ...

The piece's options are declared once, in the same decorator, as :class:`Option` objects. From
that one declaration come the command-line flags (:mod:`pyro_vae.cli`), the defaults, and the
record of the model kept in checkpoints (:mod:`pyro_vae.checkpoint`). Nothing else in the library
branches on a piece's name.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from typing import Any


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a registered piece.

    :param name: keyword argument of the factory (``snake_case``).
    :param type: ``int``, ``float``, ``bool`` or ``str``; for lists, the element type with
        ``nargs="+"``.
    :param default: the default value (a tuple for list options).
    :param help: one line for ``--help``.
    :param flag: the command-line flag. By default ``--<piece>-<name>`` (e.g. ``--gaussian-scale``);
        options shared by several pieces of a registry (``--num-particles``) name it explicitly and
        then share one flag.
    :param nargs: ``"+"`` for a space-separated list.
    :param choices: allowed values, if restricted.
    """

    name: str
    type: type
    default: Any
    help: str = ""
    flag: str | None = None
    nargs: str | None = None
    choices: tuple | None = None

    def cli_flag(self, entry_name: str) -> str:
        if self.flag is not None:
            return self.flag
        return "--" + f"{entry_name}-{self.name}".replace("_", "-")

    def check(self, entry_name: str, value: Any) -> Any:
        """Validate and normalize ``value``; raise :class:`ValueError` with a clear message."""
        where = f"option {self.name!r} of {entry_name!r}"
        if self.nargs == "+":
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ValueError(f"{where} takes a list, got {value!r}")
            return [self._check_one(where, v) for v in value]
        return self._check_one(where, value)

    def _check_one(self, where: str, value: Any) -> Any:
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{where} takes true/false, got {value!r}")
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where} takes a number, got {value!r}")
            value = float(value)
        elif self.type is int:
            if isinstance(value, bool) or int(value) != value:
                raise ValueError(f"{where} takes an integer, got {value!r}")
            value = int(value)
        elif not isinstance(value, self.type):
            raise ValueError(f"{where} takes a {self.type.__name__}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{where} must be one of {list(self.choices)}, got {value!r}")
        return value


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered piece: its name, its factory, its options and a one-line summary."""

    name: str
    factory: Callable[..., Any]
    options: dict[str, Option]
    summary: str

    def resolve(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults filled in, unknown options rejected, values checked."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"{self.name!r} has no option(s) {unknown}; it takes {sorted(self.options) or 'none'}"
            )
        resolved = {}
        for name, option in self.options.items():
            value = options.get(name, option.default)
            if isinstance(value, tuple):
                value = list(value)
            resolved[name] = option.check(self.name, value)
        return resolved


class Registry:
    """A named collection of factories of one kind (priors, guides, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *options: Option) -> Callable:
        """Decorator: register ``factory`` under ``name`` with the given options."""

        def decorator(factory: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = (factory.__doc__ or "").strip()
            summary = doc.splitlines()[0] if doc else name
            self._entries[name] = Entry(name, factory, {o.name: o for o in options}, summary)
            return factory

        return decorator

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; choose one of {self.names()}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def names(self) -> list:
        return sorted(self._entries)

    def build(self, name: str, options: dict[str, Any] | None = None, **context: Any) -> Any:
        """Call the factory of ``name`` with the resolved options and those context arguments
        (``z_dim``, ``x_shape``, ``encoder``, ``guide``, ...) that its signature accepts, so that a
        factory asks for the context it needs by naming it (the VampPrior asks for the encoder)."""
        entry = self[name]
        return entry.factory(**_accepted(entry.factory, context), **entry.resolve(options))


def _accepted(factory: Callable[..., Any], context: dict[str, Any]) -> dict[str, Any]:
    """The items of ``context`` that ``factory`` takes as keyword arguments (all, with ``**kwargs``)."""
    parameters = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(context)
    return {key: value for key, value in context.items() if key in parameters}


PRIORS = Registry("prior")
GUIDES = Registry("guide")
LIKELIHOODS = Registry("likelihood")
NETS = Registry("net")
OBJECTIVES = Registry("objective")
