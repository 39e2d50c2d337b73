"""The command line: flags -> :class:`~pyro_vae.config.RunConfig` -> :func:`~pyro_vae.experiment.run`.

This is the only module that knows argparse. Every flag comes from a description written once
elsewhere: the run settings from the fields of :class:`~pyro_vae.config.RunConfig` (help, section,
bounds, choices), the pieces from the registries (``--prior``, ``--guide``, ``--likelihood``,
``--net``, ``--objective`` and one flag per declared option of each entry, such as
``--gaussian-scale`` or ``--num-particles``).

Flags default to *unset* (``argparse.SUPPRESS``), so a flag the user did not give is known not to
be given: the configuration's defaults apply (each shown once in ``--help``), a ``--protocol``
preset fills what was not given, and ``--resume`` starts from the checkpoint's settings, to which
only the given flags are compared.

Every failure a user can cause, from bad flags to a corrupt checkpoint, ends in one line
``<program>: error: <what and how to fix it>`` on stderr and exit status 2 (no usage block);
an interrupted run exits with status 130 and says how to continue it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import textwrap
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from .config import PIECE_KINDS, RunConfig, choices_of
from .errors import ConfigError, PyroVAEError, ResumeConflictError
from .registry import REGISTRIES, Option

#: Flags of a field other than ``--field-name`` (aliases are added below).
_FLAGS = {"progress": "--no-progress"}
_SKIP = {f"{kind}_options" for kind in PIECE_KINDS}


class ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written (its example commands stay on their own lines); help texts
    wrapped, keeping their own line breaks."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=32, width=100)

    def _split_lines(self, text: str, width: int) -> list[str]:
        lines = []
        for paragraph in text.splitlines():
            indent = " " * (len(paragraph) - len(paragraph.lstrip()) + 2)
            lines += textwrap.wrap(paragraph, width, subsequent_indent=indent if paragraph[:1] == " " else "",
                                   break_on_hyphens=False) or [""]
        return lines


def _bounded(kind: type, minimum: float | None, strict: bool, allow_inf: bool = False):
    """An argparse type: ``kind(text)``, at least ``minimum`` (above it when ``strict``)."""
    what = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if kind is float and math.isnan(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        if kind is float and value in (float("inf"), float("-inf")) and not allow_inf:
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        if minimum is not None and (value < minimum or (strict and value == minimum)):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum:g}, got {text}")
        return value

    parse.__name__ = what  # argparse names the type in its own messages
    return parse


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _default_text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    return str(value)


def _option_dest(kind: str, flag: str) -> str:
    return f"{kind}:{flag}"


def build_parser(description: str, *, exclude: Sequence[str] = (), defaults: dict[str, Any] | None = None,
                 prog: str | None = None) -> ArgumentParser:
    """The flags of every run setting and piece, in sections. ``exclude`` leaves settings (by
    field name) and piece option flags (by flag) out: a comparison script has its own ``--resume``
    and sets ``--num-particles`` per run; for a piece kind it leaves out only the selector, whose
    options stay. ``defaults`` changes the defaults shown (and used)."""
    defaults = dict(defaults or {})
    parser = ArgumentParser(description=description, prog=prog, formatter_class=HelpFormatter,
                            argument_default=argparse.SUPPRESS)
    parser.set_defaults(_defaults=defaults, _settings=[f.name for f in dataclasses.fields(RunConfig)
                                                      if f.name not in exclude and f.name not in _SKIP])
    groups = {section: parser.add_argument_group(section) for section in ("data", "model", "objective", "training",
                                                                           "evaluation", "run")}
    for field in dataclasses.fields(RunConfig):
        if field.name in _SKIP or (field.name in exclude and field.name not in PIECE_KINDS):
            continue
        meta = field.metadata
        default = defaults.get(field.name, field.default)
        shown = default is not None and not isinstance(default, bool)
        help_text = meta["help"] + (f" (default: {_default_text(default)})" if shown else "")
        group = groups[meta["section"]]
        if field.name in PIECE_KINDS:  # excluded: the script chooses the piece, its options stay flags
            _add_selector(group, field.name, default, meta["help"], selector=field.name not in exclude,
                          exclude=exclude)
            continue
        type_name = str(field.type).replace(" | None", "")
        if type_name == "bool":
            if field.name == "progress":
                group.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
            else:
                group.add_argument(_flag(field.name), dest=field.name, action="store_true", help=help_text)
            continue
        kwargs: dict[str, Any] = {"dest": field.name, "help": help_text, "metavar": meta["metavar"]}
        if meta["choices"] is not None:
            kwargs.update(choices=choices_of(meta["choices"]), metavar=None)
        elif type_name in ("int", "float", "tuple"):
            kind = float if type_name == "float" else int
            kwargs["type"] = _bounded(kind, meta["minimum"], meta["strict"], meta["allow_inf"])
        if type_name == "tuple":
            kwargs["nargs"] = "+"
        if field.name == "protocol":
            kwargs["help"] = "start from a paper's settings; flags given explicitly override them.\n" + "\n".join(
                f"  {name}: {_as_flags(preset)}" for name, preset in _protocols().items())
        group.add_argument(_flag(field.name), **kwargs)
        if field.name == "device":
            group.add_argument("--cuda", dest="device", action="store_const", const="cuda",
                               help="train and evaluate on the GPU (the same as --device cuda)")
    return parser


def _as_flags(settings: dict[str, Any]) -> str:
    """Settings written as the flags that give them (``--hidden-dims 200 200 --z-dim 50 ...``)."""
    words = []
    for name, value in settings.items():
        if name.endswith("_options"):
            kind = name[: -len("_options")]
            entry = settings.get(kind, RunConfig.__dataclass_fields__[kind].default)
            for option, v in value.items():
                flag = REGISTRIES[kind][entry].options[option].cli_flag(entry)
                # a true/false option is a --flag / --no-flag pair (BooleanOptionalAction), not a value
                words.append((flag if v else f"--no-{flag[2:]}") if isinstance(v, bool) else f"{flag} {_default_text(v)}")
        else:
            words.append(f"{_flag(name)} {_default_text(value)}")
    return " ".join(words)


def _protocols() -> dict[str, dict[str, Any]]:
    from .config import PROTOCOLS

    return PROTOCOLS


def _add_selector(group, kind: str, default: str, what: str, selector: bool = True,
                  exclude: Sequence[str] = ()) -> None:
    registry = REGISTRIES[kind]
    if selector:
        lines = [f"{what} (default: {default}):"] + [f"  {entry.name}: {entry.summary}" for entry in registry]
        group.add_argument(f"--{kind}", dest=kind, choices=registry.names(), help="\n".join(lines))
    seen: dict[str, list[str]] = {}
    for entry in registry:
        for option in entry.options.values():
            seen.setdefault(option.cli_flag(entry.name), []).append(entry.name)
    added = set()
    for entry in registry:
        for option in entry.options.values():
            flag = option.cli_flag(entry.name)
            if flag in added or flag in exclude:
                continue
            added.add(flag)
            group.add_argument(flag, dest=_option_dest(kind, flag), **_option_kwargs(option, seen[flag]))


def _option_kwargs(option: Option, owners: list[str]) -> dict[str, Any]:
    owner = ", ".join(owners)
    default = " ".join(map(str, option.default)) if isinstance(option.default, tuple) else option.default
    kwargs: dict[str, Any] = {"help": f"[{owner}] {option.help} (default: {default})"}
    if option.type is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
        kwargs["help"] = f"[{owner}] {option.help} (default: {'on' if option.default else 'off'})"
        return kwargs
    if option.choices is not None:
        kwargs["choices"] = list(option.choices)
    elif option.type in (int, float):
        kwargs["type"] = _bounded(option.type, option.minimum, option.strict)
        kwargs["metavar"] = "N" if option.type is int else "X"
    else:
        kwargs["metavar"] = option.name.upper()
    if option.nargs:
        kwargs["nargs"] = option.nargs
    return kwargs


@dataclasses.dataclass
class Flags:
    """What the user gave on the command line: run settings, piece options by flag, and any
    extra arguments a script added (``extra``)."""

    parser: ArgumentParser
    settings: dict[str, Any]
    options: dict[str, dict[str, Any]]  # kind -> {flag: value}
    extra: dict[str, Any]

    def error(self, message: str) -> NoReturn:
        self.parser.error(message)

    def pieces_options(self, kind: str, entry_name: str) -> dict[str, Any]:
        """The options given by flag for the entry ``entry_name`` of ``kind``."""
        entry = REGISTRIES[kind][entry_name]
        return {option.name: self.options[kind][option.cli_flag(entry.name)] for option in entry.options.values()
                if option.cli_flag(entry.name) in self.options[kind]}

    def check_options_apply(self, kind: str, chosen: Sequence[str]) -> None:
        """An option flag given for an entry that no run uses is an error."""
        registry = REGISTRIES[kind]
        usable = {option.cli_flag(name) for name in chosen for option in registry[name].options.values()}
        for flag in self.options[kind]:
            if flag not in usable:
                owners = [e.name for e in registry for o in e.options.values() if o.cli_flag(e.name) == flag]
                self.error(f"{flag} is an option of {kind} {' / '.join(repr(o) for o in owners)}, but --{kind} is "
                           f"{' / '.join(repr(c) for c in chosen)}")

    def check_options(self, **varied: Sequence[str]) -> None:
        """Every piece option flag given must apply: to one of the entries a script varies over
        (``objective=["elbo", "iwae"]``), or else to the chosen entry of its kind."""
        from .config import PROTOCOLS

        preset = PROTOCOLS.get(self.settings.get("protocol"), {})
        for kind in PIECE_KINDS:
            chosen = self.settings.get(kind) or preset.get(kind) or RunConfig.__dataclass_fields__[kind].default
            self.check_options_apply(kind, list(varied.get(kind) or [chosen]))

    def config(self, *, strict: bool = True, **choices: Any) -> RunConfig:
        """The run configuration these flags describe, with ``choices`` on top (a script that runs
        several variants passes e.g. ``objective="iwae", objective_options={"num_particles": 5}``;
        piece options given by flag apply to each variant that takes them). With ``strict``, a
        piece option flag that the chosen piece does not take is an error.

        Errors exit with status 2 and one line naming the flag."""
        try:
            return self._config(dict(choices), strict)
        except PyroVAEError as error:  # e.g. the checkpoint of --resume cannot be read
            self.parser.exit(2, f"{self.parser.prog}: error: {describe_error(error)}\n")

    def _config(self, choices: dict[str, Any], strict: bool) -> RunConfig:
        from .config import PROTOCOLS

        settings = {**self.settings, **choices}
        resume = settings.get("resume")
        base = RunConfig.resume_from(resume, evaluate_only=settings.get("evaluate_only", False)) if resume else None
        preset = PROTOCOLS.get(settings.get("protocol"), {}) if base is None else {}
        for kind in PIECE_KINDS:
            chosen = (settings.get(kind) or (getattr(base, kind) if base else None) or preset.get(kind)
                      or RunConfig.__dataclass_fields__[kind].default)
            if strict:
                self.check_options_apply(kind, [chosen])
            given = {**self.pieces_options(kind, chosen), **choices.get(f"{kind}_options", {})}
            if base is not None and chosen == getattr(base, kind):
                given = {**getattr(base, f"{kind}_options"), **given}
            settings[f"{kind}_options"] = given
        if base is not None:
            return base.replace(**settings)
        protocol = settings.pop("protocol", None)
        if protocol is not None:
            return RunConfig.from_protocol(protocol, **settings)
        return RunConfig(**settings)


def describe_error(error: PyroVAEError) -> str:
    """The one-line message of an error, with the flags that set the settings it names."""
    if isinstance(error, ResumeConflictError) and error.conflicts:
        asked = ", ".join(f"{flag_of(field, option)} {_default_text(value)} (the checkpoint has {_default_text(had)})"
                          for field, option, value, had in error.conflicts)
        return (f"{asked}: a resumed run keeps the model, data and training settings of its checkpoint; drop "
                f"{'this flag' if len(error.conflicts) == 1 else 'these flags'} to continue it, or start a new run "
                "in another --out")
    if isinstance(error, ConfigError):
        return f"{flag_of(error.field, error.option)}: {error.reason}"
    return str(error)


def flag_of(field: str, option: str | None = None) -> str:
    """The flag that sets a run setting (``z_dim`` -> ``--z-dim``) or a piece option
    (``prior_options``, ``depth`` -> ``--flow-depth``, the flags of every entry with that option)."""
    if field.endswith("_options") and field[: -len("_options")] in PIECE_KINDS:
        kind = field[: -len("_options")]
        if option is None:
            return f"the options of --{kind}"
        flags = sorted({o.cli_flag(e.name) for e in REGISTRIES[kind] for o in e.options.values() if o.name == option})
        return " / ".join(flags) if flags else f"the option {option!r} of --{kind}"
    if field in {f.name for f in dataclasses.fields(RunConfig)}:
        return "--cuda / --device" if field == "device" else _flag(field)
    return field


def parse(parser: ArgumentParser, argv: Sequence[str] | None = None) -> Flags:
    """Parse ``argv`` into :class:`Flags` (argparse errors exit with status 2)."""
    namespace = vars(parser.parse_args(argv))
    defaults = namespace.pop("_defaults", {})
    names = set(namespace.pop("_settings", []))  # the run settings this parser has flags for
    settings = {**defaults, **{k: v for k, v in namespace.items() if k in names}}
    options: dict[str, dict[str, Any]] = {kind: {} for kind in PIECE_KINDS}
    extra = {}
    for key, value in namespace.items():
        if ":" in key:
            kind, flag = key.split(":", 1)
            options[kind][flag] = value
        elif key not in names:
            extra[key] = value
    return Flags(parser, settings, options, extra)


def config_from_argv(description: str, argv: Sequence[str] | None = None, prog: str | None = None) -> RunConfig:
    """The configuration of ``examples/mnist_svi.py``'s flags."""
    return parse(build_parser(description, prog=prog), argv).config()


def report_errors(prog: str, function, *args, **kwargs) -> int:
    """Call ``function``: 0 when it returns, 2 with one line on stderr for a
    :class:`~pyro_vae.errors.PyroVAEError` (with none for a quiet
    :class:`~pyro_vae.errors.RunAbortedError`: another process of the run printed it), 130 when
    interrupted. Warnings print as one line too."""
    previous = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=sys.stderr)

    warnings.showwarning = one_line
    try:
        function(*args, **kwargs)
    except PyroVAEError as error:
        if not getattr(error, "quiet", False):  # another process of the run has reported it
            print(f"{prog}: error: {describe_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"\n{prog}: {interrupt or 'interrupted; each finished run and epoch is saved: continue with --resume'}",
              file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous
    return 0


def main(argv: Sequence[str] | None = None, description: str = __doc__, prog: str | None = None) -> int:
    """Command-line entry point of the main job; returns the exit status (2 for bad input)."""
    from .experiment import run

    parser_prog = prog or (sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "pyro_vae")

    def configure_and_run() -> None:
        run(config_from_argv(description, argv, parser_prog))

    return report_errors(parser_prog, configure_and_run)


CERTIFY_DESCRIPTION = """Certify the test log-likelihood of a saved run: importance sampling against AIS on the first
--images test images, the BDMC sandwich on images simulated from the model, the inference gaps.

    python examples/certify_likelihood.py results/mnist_svi                    # IS (K = 1000, 5000) and AIS
    python examples/certify_likelihood.py results/mnist_svi --bdmc-images 50 --gaps

Writes <run>/likelihood/ (or --out): likelihood.json, likelihood.pt, ais_vs_is.png, bdmc.png."""


def certify_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command-line entry point of ``examples/certify_likelihood.py``."""
    from .certify import CertifySettings, certify

    defaults = CertifySettings()
    parser = ArgumentParser(description=CERTIFY_DESCRIPTION, prog=prog, formatter_class=HelpFormatter)
    parser.add_argument("run", metavar="RUN", help="a run folder written by examples/mnist_svi.py (or its best.pt)")
    count = _bounded(int, 1, False)
    parser.add_argument("--images", type=count, default=defaults.images, metavar="N",
                        help=f"the first N test images (default: {defaults.images})")
    parser.add_argument("--is-samples", type=count, nargs="+", default=list(defaults.is_samples), metavar="K",
                        help="K of the importance-sampled estimates (default: 1000 5000)")
    parser.add_argument("--ais-steps", type=count, default=defaults.ais_steps, metavar="T",
                        help=f"AIS transitions per chain (default: {defaults.ais_steps})")
    parser.add_argument("--ais-chains", type=count, default=defaults.ais_chains, metavar="C",
                        help=f"AIS chains per image (default: {defaults.ais_chains})")
    parser.add_argument("--bdmc-images", type=_bounded(int, 0, False), default=0, metavar="N",
                        help="images simulated from the model for the BDMC sandwich (default: 0, none)")
    parser.add_argument("--bdmc-steps", type=count, nargs="+", default=list(defaults.bdmc_steps), metavar="T",
                        help="AIS steps of each BDMC sandwich (default: 100 500)")
    parser.add_argument("--gaps", action="store_true", help="the approximation and amortization gaps too")
    parser.add_argument("--gap-steps", type=count, default=defaults.gap_steps, metavar="N",
                        help=f"steps of the per-image ELBO optimization (default: {defaults.gap_steps})")
    parser.add_argument("--seed", type=_bounded(int, 0, False), default=0, metavar="N", help="seed (default: 0)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: RUN/likelihood)")
    parser.add_argument("--data-dir", metavar="DIR", help="where the run's data set is (default: the run's)")
    parser.add_argument("--device", default="cpu", metavar="DEVICE", help="torch device (default: cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier certification in the folder")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = parser.parse_args(argv)
    name = prog or parser.prog

    def certify_and_report() -> None:
        settings = CertifySettings(args.images, tuple(args.is_samples), args.ais_steps, args.ais_chains,
                                   args.bdmc_images, tuple(args.bdmc_steps), args.gaps, args.gap_steps, args.seed)
        summary = certify(args.run, settings, out=args.out, data_dir=args.data_dir, device=args.device,
                          overwrite=args.overwrite, progress=args.progress)
        print(format_certificate(summary))

    return report_errors(name, certify_and_report)


def format_certificate(summary: dict) -> str:
    """The certificate as a Markdown table (nats per image, ± standard error over images)."""
    def cell(entry: dict) -> str:
        stderr = entry.get("stderr")
        return f"{entry['mean']:.2f}" + ("" if stderr is None else f" ± {stderr:.2f}")

    rows = [("estimate of log p(x)", "nats per image", "s / image")]
    for key in sorted((k for k in summary if k.startswith("is_")), key=lambda k: int(k[3:])):
        khat = summary[key]["khat_share_above_0.7"]
        rows.append((f"importance sampling, K = {key[3:]}" + (f" (k̂ > 0.7: {khat:.0%})" if khat is not None else ""),
                     cell(summary[key]), f"{summary[key]['seconds_per_image']:.3f}"))
    ais_entry = summary["ais"]
    rows.append((f"AIS, {ais_entry['steps']} steps × {ais_entry['chains']} chains (acceptance {ais_entry['acceptance']:.2f})",
                 cell(ais_entry), f"{ais_entry['seconds_per_image']:.3f}"))
    reference = summary["ais_minus_is"]["is"].removeprefix("is_")
    rows.append((f"AIS − importance sampling (K = {reference}), paired per image", cell(summary["ais_minus_is"]), ""))
    for sandwich in summary.get("bdmc", []):
        rows.append((f"BDMC on simulated images, {sandwich['steps']} steps: lower / upper / width",
                     f"{cell(sandwich['lower'])} / {cell(sandwich['upper'])} / {cell(sandwich['width'])}",
                     f"{sandwich['seconds_per_image']:.3f}"))
    if "gaps" in summary:
        gaps = summary["gaps"]
        both = f"{cell(gaps['approximation'])} / {cell(gaps['amortization'])}"
        rows.append(("approximation gap / amortization gap", both, f"{gaps['seconds_per_image']:.3f}"))
    lines = [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.insert(1, "| --- | --- | ---: |")
    return (f"{summary['dataset']}, the first {summary['test_images']} test images, model of {summary['run']}\n\n"
            + "\n".join(lines) + f"\n\nwritten to {summary['out']}/")


def add_ais_flags(group) -> None:
    """The flags of a comparison's optional AIS column (:class:`pyro_vae.compare.AISColumn`)."""
    count = _bounded(int, 1, False)
    group.add_argument("--ais-images", type=_bounded(int, 0, False), default=0, metavar="N",
                       help="also certify every run by AIS on its first N test images (default: 0, no AIS column)")
    group.add_argument("--ais-steps", type=count, default=500, metavar="T", help="AIS steps (default: 500)")
    group.add_argument("--ais-chains", type=count, default=16, metavar="C", help="AIS chains per image (default: 16)")


def add_jobs_flag(group) -> None:
    """``--jobs N``: a comparison's runs, N at a time, each in a process of its own."""
    group.add_argument("--jobs", type=_bounded(int, 1, False), default=1, metavar="N",
                       help="runs at once, each in its own process; with --cuda, one GPU each, in turn (default: 1)")


def ais_column(flags: Flags):
    """The AIS column the flags ask for, or None."""
    from .compare import AISColumn

    images = flags.extra.get("ais_images", 0)
    return AISColumn(images, flags.extra["ais_steps"], flags.extra["ais_chains"]) if images else None
