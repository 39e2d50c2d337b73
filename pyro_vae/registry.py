"""Registries: a name -> factory map for each kind of swappable piece.

A new model, prior, guide, likelihood, network or objective is one class (or factory) in one file,
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
import math
from collections.abc import Callable, Iterator
from typing import Any

from .errors import ConfigError


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
    :param minimum: the smallest allowed value of a number (each element of a list), if bounded;
        with ``strict`` the bound itself is excluded.
    """

    name: str
    type: type
    default: Any
    help: str = ""
    flag: str | None = None
    nargs: str | None = None
    choices: tuple | None = None
    minimum: float | None = None
    strict: bool = False

    def cli_flag(self, entry_name: str) -> str:
        if self.flag is not None:
            return self.flag
        return "--" + f"{entry_name}-{self.name}".replace("_", "-")

    def check(self, kind: str, entry_name: str, value: Any) -> Any:
        """Validate and normalize ``value``; raise :class:`~pyro_vae.errors.ConfigError` (field
        ``<kind>_options``, this option) with a clear message."""
        where = f"option {self.name!r} of {kind} {entry_name!r}"

        def fail(message: str) -> ConfigError:
            return ConfigError(f"{kind}_options", f"{where} {message}", option=self.name)

        if self.nargs == "+":
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise fail(f"takes a list, got {value!r}")
            values = [self._check_one(fail, v) for v in value]
            if not values:
                raise fail("takes at least one value")
            return values
        return self._check_one(fail, value)

    def _check_one(self, fail: Callable[[str], ConfigError], value: Any) -> Any:
        if self.type is bool:
            if not isinstance(value, bool):
                raise fail(f"takes true/false, got {value!r}")
        elif self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise fail(f"takes {'an integer' if self.type is int else 'a finite number'}, got {value!r}")
            if self.type is int:
                if int(value) != value:
                    raise fail(f"takes an integer, got {value!r}")
                value = int(value)
            else:
                value = float(value)
        elif not isinstance(value, self.type):
            raise fail(f"takes a {self.type.__name__}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise fail(f"must be one of {list(self.choices)}, got {value!r}")
        if self.minimum is not None and (value < self.minimum or (self.strict and value == self.minimum)):
            raise fail(f"must be {'>' if self.strict else '>='} {self.minimum:g}, got {value!r}")
        return value


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered piece: its kind, its name, its factory, its options and a one-sentence summary."""

    kind: str
    name: str
    factory: Callable[..., Any]
    options: dict[str, Option]
    summary: str

    def resolve(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults filled in, unknown options rejected, values checked (:class:`~pyro_vae.errors.ConfigError`)."""
        if options is not None and not isinstance(options, dict):
            raise ConfigError(f"{self.kind}_options", f"takes a mapping of option names to values, got {options!r}")
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ConfigError(f"{self.kind}_options",
                              f"{self.kind} {self.name!r} has no option(s) {unknown}; it takes "
                              f"{sorted(self.options) or 'none'}", option=unknown[0])
        resolved = {}
        for name, option in self.options.items():
            value = options.get(name, option.default)
            if isinstance(value, tuple):
                value = list(value)
            resolved[name] = option.check(self.kind, self.name, value)
        return resolved


def summary_of(factory: Callable[..., Any], default: str) -> str:
    """The first paragraph of the factory's docstring, whole, on one line."""
    return " ".join((factory.__doc__ or "").strip().split("\n\n")[0].split()) or default


class Registry:
    """A named collection of factories of one kind (priors, guides, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *options: Option, summary: str | None = None) -> Callable:
        """Decorator: register ``factory`` under ``name`` with the given options and a one-line
        ``summary`` for ``--help`` (default: the docstring's first paragraph)."""

        def decorator(factory: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(self.kind, name, factory, {o.name: o for o in options},
                                        summary or summary_of(factory, name))
            return factory

        return decorator

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownEntryError(self.kind, f"unknown {self.kind} {name!r}; choose one of {self.names()}") from None

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


class UnknownEntryError(ConfigError, KeyError):
    """A name that no piece of the kind is registered under (field: the kind)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return ConfigError.__str__(self)


PRIORS = Registry("prior")
GUIDES = Registry("guide")
LIKELIHOODS = Registry("likelihood")
NETS = Registry("net")
OBJECTIVES = Registry("objective")
MODELS = Registry("model")
#: kind -> registry (fill them by importing pyro_vae.build and pyro_vae.objectives).
REGISTRIES = {"prior": PRIORS, "guide": GUIDES, "likelihood": LIKELIHOODS, "net": NETS, "objective": OBJECTIVES,
              "model": MODELS}
