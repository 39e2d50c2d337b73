"""Command-line flags, generated from the registries.

Every registry contributes a selector (``--prior``, ``--guide``, ``--likelihood``, ``--net``,
``--objective``) whose choices are its registered names, and one flag per declared option of each
entry (``--gaussian-scale``, ``--hidden-dims``, ``--num-particles``, ...). Options are parsed with
default ``None`` and resolved by the registry, so each default is written once, with its piece.
Bad input ends in ``parser.error``: a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

from .build import PIECES
from .data import BINARIZATIONS, DATASETS
from .objectives import OBJECTIVES
from .train import LR_SCHEDULES

#: Presets of settings from papers (argparse destinations -> values).
PROTOCOLS: dict[str, dict[str, Any]] = {
    # Burda, Grosse & Salakhutdinov (arXiv:1509.00519), Sec. 5, one stochastic layer on MNIST.
    "burda2015": {"net__hidden_dims": [200, 200], "net__mlp_activation": "tanh", "z_dim": 50,
                  "batch_size": 20, "binarize": "dynamic", "lr": 1e-3, "adam_eps": 1e-4,
                  "lr_schedule": "burda2015", "num_epochs": 3280, "eval_samples": 5000, "val_size": 400},
}

#: kind -> (registry, default entry); the objective is not part of the model's configuration.
SELECTORS = {**{kind: registry for kind, registry in PIECES.items()}, "objective": OBJECTIVES}
DEFAULTS = {"prior": "standard_normal", "guide": "diagonal_normal", "likelihood": "bernoulli",
            "net": "mlp", "objective": "elbo"}


def _bounded(cast: type, lower: float, strict: bool):
    """An argparse type: ``cast(text)``, which must be ``> lower`` (strict) or ``>= lower``."""
    what = "an integer" if cast is int else "a number"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < lower or (strict and value == lower):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {lower}, got {value}")
        return value

    return parse


_positive_int = _bounded(int, 1, strict=False)
_non_negative_int = _bounded(int, 0, strict=False)
_positive_float = _bounded(float, 0.0, strict=True)


def _add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    seen: dict[str, str] = {}
    for kind, registry in SELECTORS.items():
        group = parser.add_argument_group(f"{kind} (choose with --{kind}; options apply to that choice)")
        group.add_argument(f"--{kind}", choices=registry.names(), default=DEFAULTS[kind],
                           help=f"default: {DEFAULTS[kind]}. "
                           + "; ".join(f"{e.name}: {e.summary}" for e in registry))
        for entry in registry:
            for option in entry.options.values():
                flag = option.cli_flag(entry.name)
                if flag in seen:  # a shared flag (e.g. --num-particles), declared by several entries
                    continue
                seen[flag] = entry.name
                kwargs: dict[str, Any] = {"default": None, "dest": _dest(kind, flag)}
                default = list(option.default) if isinstance(option.default, tuple) else option.default
                if option.type is bool:
                    kwargs["action"] = argparse.BooleanOptionalAction
                else:
                    kwargs["type"] = option.type
                    kwargs["nargs"] = option.nargs
                    kwargs["choices"] = option.choices
                owner = "" if option.flag else f"[{entry.name}] "
                group.add_argument(flag, help=f"{owner}{option.help} (default: {default})", **kwargs)


def _dest(kind: str, flag: str) -> str:
    return f"{kind}__" + flag.lstrip("-").replace("-", "_")


def build_parser(description: str) -> argparse.ArgumentParser:
    """The flags of ``examples/mnist_svi.py`` (and of the other examples that mirror it)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run = parser.add_argument_group("run")
    run.add_argument("--cuda", action="store_true", help="train and evaluate on the GPU")
    run.add_argument("--num-epochs", type=_non_negative_int, default=20, help="training epochs")
    run.add_argument("--batch-size", type=_positive_int, default=128, help="images per gradient step")
    run.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (initial)")
    run.add_argument("--lr-schedule", choices=sorted(LR_SCHEDULES), default="constant",
                     help="burda2015: 3^i epochs at lr·10^(-i/7), i = 0..7")
    run.add_argument("--adam-eps", type=_positive_float, default=1e-8, help="Adam's ε")
    run.add_argument("--seed", type=int, default=0, help="seed of every random number generator")
    run.add_argument("--out", default="results/mnist_svi", help="directory for metrics, plots, checkpoints")
    run.add_argument("--resume", metavar="PATH", default=None,
                     help="continue from a checkpoint (a file, or an --out directory holding checkpoint.pt)")
    run.add_argument("--evaluate-only", action="store_true",
                     help="with --resume: evaluate the saved model, no training")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--pyro-validation", action="store_true",
                     help="Pyro's checks of distribution arguments and supports on every step (slower: "
                     "about 8%% per elbo step and 70%% per mean_field step measured here; the tests run with it)")
    run.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None,
                     help="a preset of settings from a paper; flags given explicitly override it. burda2015: "
                     + ", ".join(f"{k}={v}" for k, v in PROTOCOLS["burda2015"].items()))
    model = parser.add_argument_group("model")
    model.add_argument("--z-dim", type=_positive_int, default=50, help="latent dimension")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    data.add_argument("--data-dir", default=None,
                      help="directory in torchvision's layout <dir>/MNIST/raw/*.gz (default: $PYRO_VAE_DATA, "
                      "else download into the cache $PYRO_VAE_CACHE, default ~/.cache/pyro_vae)")
    data.add_argument("--binarize", choices=BINARIZATIONS, default="dynamic",
                      help="dynamic: fresh Bernoulli draw of the training images each epoch; static: one "
                      "seeded draw; none: grey levels (continuous likelihoods only)")
    data.add_argument("--train-size", type=_positive_int, default=None,
                      help="use only the first N training images (default: all but the validation split)")
    data.add_argument("--val-size", type=_non_negative_int, default=1000,
                      help="training images held out for validation and model selection")
    data.add_argument("--test-size", type=_positive_int, default=None, help="use only the first N test images")
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--eval-samples", type=_positive_int, default=1000,
                            help="K, importance samples per test image for log p(x) (the literature: 5000)")
    evaluation.add_argument("--eval-batch-size", type=_positive_int, default=100, help="test images per batch")
    evaluation.add_argument("--eval-ks", type=_positive_int, nargs="+", default=[1, 5, 50, 500, 5000],
                            help="report E[L_K] for these K (those <= --eval-samples, from the same samples)")
    _add_registry_arguments(parser)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse, with a ``--protocol`` preset applied first as defaults (explicit flags win)."""
    known, _ = parser.parse_known_args(argv)
    if known.protocol is not None:
        parser.set_defaults(**PROTOCOLS[known.protocol])
    return parser.parse_args(argv)


def piece_options(parser: argparse.ArgumentParser, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """Options given on the command line for the chosen entry of ``kind`` (the rest take the
    registry's defaults). An option flag of an entry that was *not* chosen is an error."""
    registry = SELECTORS[kind]
    chosen = getattr(args, kind)
    options: dict[str, Any] = {}
    for entry in registry:
        for option in entry.options.values():
            value = getattr(args, _dest(kind, option.cli_flag(entry.name)))
            if value is None:
                continue
            if entry.name == chosen:
                options[option.name] = value
            elif option.name not in registry[chosen].options or option.flag is None:
                parser.error(f"{option.cli_flag(entry.name)} is an option of {kind} {entry.name!r}, "
                             f"but --{kind} is {chosen!r}")
    try:
        return registry[chosen].resolve(options)
    except ValueError as error:
        parser.error(str(error))


def choose(args: argparse.Namespace, **choices: str) -> argparse.Namespace:
    """A copy of ``args`` with other entries chosen (``choose(args, prior="vamp", guide="iaf")``),
    keeping the option flags that apply to the new choices and dropping those of entries not chosen:
    scripts that run several rows from one command line pass each row only its own options."""
    args = copy.copy(args)
    for kind, chosen in choices.items():
        registry = SELECTORS[kind]
        setattr(args, kind, registry[chosen].name)
        for entry in registry:
            for option in entry.options.values():
                shared_with_chosen = option.flag is not None and option.name in registry[chosen].options
                if entry.name != chosen and not shared_with_chosen:
                    setattr(args, _dest(kind, option.cli_flag(entry.name)), None)
    return args
