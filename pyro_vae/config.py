"""A run is a value: :class:`RunConfig` holds every setting of one run of the main job.

It is a frozen dataclass, checked when it is made (a :class:`~pyro_vae.errors.ConfigError` names the
field at fault), written to and read from plain data (:meth:`RunConfig.to_dict`,
:meth:`RunConfig.from_dict`, JSON-ready), stored in ``metrics.json`` and in every checkpoint, and
run by :func:`pyro_vae.experiment.run`. Nothing here knows the command line: :mod:`pyro_vae.cli`
turns flags into a configuration, from the field descriptions below (each field's help text,
section and bounds are declared once, here).

The swappable pieces are named by registry entry and configured with a dict of that entry's
options (``prior="vamp", prior_options={"num_components": 100}``); options left out take the
defaults declared with the piece, and the configuration stores them resolved, so two
configurations that build the same model compare equal.

Paper protocols are configurations too: :meth:`RunConfig.from_protocol` (``"burda2015"``, one
stochastic layer, and ``"burda2015-2layer"``, two).

On resume, each field is one of three kinds (its ``resume`` metadata):

* ``fixed``: the model, the data and the training settings. A resumed run keeps the checkpoint's;
  asking for another value is a :class:`~pyro_vae.errors.ResumeConflictError` naming the field.
* ``override``: ``num_epochs`` (train further) and ``test_size`` (evaluate on more or fewer test
  images): deliberate changes, which the run prints.
* ``free``: how and where the run executes (device, threads, output folder, progress bars,
  evaluation settings), which do not change what is trained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

FIXED, OVERRIDE, FREE = "fixed", "override", "free"
SECTIONS = ("data", "model", "objective", "training", "evaluation", "run")
#: The swappable kinds; each has a ``<kind>`` and a ``<kind>_options`` field.
PIECE_KINDS = ("model", "prior", "guide", "likelihood", "net", "objective")


def setting(default: Any = dataclasses.MISSING, *, section: str, help: str, resume: str = FIXED,
            minimum: float | None = None, strict: bool = False, choices: str | None = None,
            metavar: str | None = None, path: bool = False, allow_inf: bool = False,
            factory: Any = dataclasses.MISSING) -> Any:
    """A field of :class:`RunConfig` with its description: help text, section, resume kind, lower
    bound (``strict``: exclusive), where the choices of a name come from, whether it is a file
    system path (``os.PathLike`` accepted) and whether infinity is allowed."""
    metadata = {"section": section, "help": help, "resume": resume, "minimum": minimum, "strict": strict,
                "choices": choices, "metavar": metavar, "path": path, "allow_inf": allow_inf}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def choices_of(source: str) -> list[str]:
    """The allowed names of a field: a registry kind, or a fixed list of the library."""
    from .data import BINARIZATIONS, DATASETS
    from .registry import REGISTRIES
    from .train import LR_SCHEDULES

    _fill_registries()

    fixed = {"dataset": sorted(DATASETS), "binarize": list(BINARIZATIONS), "lr_schedule": sorted(LR_SCHEDULES),
             "protocol": sorted(PROTOCOLS)}
    return fixed[source] if source in fixed else REGISTRIES[source].names()


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of one run: data → model → objective → training → evaluation → outputs.

    Make one with keywords (``RunConfig(z_dim=2, num_epochs=5)``), from a paper's protocol
    (:meth:`from_protocol`), from plain data (:meth:`from_dict`), or from a checkpoint to continue
    it (:meth:`resume_from`); derive variants with :meth:`replace`. Run it with
    :func:`pyro_vae.run`. Each field's description is its ``help`` metadata, which is also its
    ``--help`` line on the command line.
    """

    # -- data
    dataset: str = setting("mnist", section="data", choices="dataset", help="the data set")
    data_dir: str | None = setting(
        None, section="data", resume=FREE, metavar="DIR", path=True,
        help="folder in torchvision's layout <dir>/MNIST/raw/*-ubyte.gz (binarized-mnist: "
             "<dir>/binarized_mnist/*.amat[.gz]), only read (default: $PYRO_VAE_DATA, else the files are downloaded "
             "into the cache $PYRO_VAE_CACHE, default ~/.cache/pyro_vae)")
    binarize: str | None = setting(
        None, section="data", choices="binarize",
        help="dynamic (the default for grey-level data sets): a fresh Bernoulli draw of the training images each "
             "epoch; static: one seeded draw; none: grey levels (continuous likelihoods only). Not for "
             "binarized-mnist, which is binary already")
    train_size: int | None = setting(None, section="data", minimum=1, metavar="N",
                                     help="train on the first N training images (default: all but the validation split)")
    val_size: int = setting(1000, section="data", minimum=0, metavar="N",
                            help="the last N training images, held out for validation and model selection "
                                 "(binarized-mnist: the first N of its own validation split)")
    test_size: int | None = setting(None, section="data", minimum=1, resume=OVERRIDE, metavar="N",
                                    help="evaluate on the first N test images (default: all)")
    # -- model
    model: str = setting("vae", section="model", choices="model",
                         help="the model composing the pieces: vae (one stochastic layer) or hierarchical (L ≥ 2)")
    model_options: dict = setting(section="model", factory=dict, help="options of the model")
    z_dim: int = setting(50, section="model", minimum=1, metavar="N",
                         help="latent dimension (of the lowest layer z1 for a hierarchical model)")
    prior: str = setting("standard_normal", section="model", choices="prior", help="p(z)")
    prior_options: dict = setting(section="model", factory=dict, help="options of the prior")
    guide: str = setting("diagonal_normal", section="model", choices="guide", help="q(z|x)")
    guide_options: dict = setting(section="model", factory=dict, help="options of the guide")
    likelihood: str = setting("bernoulli", section="model", choices="likelihood", help="p(x|z)")
    likelihood_options: dict = setting(section="model", factory=dict, help="options of the likelihood")
    net: str = setting("mlp", section="model", choices="net", help="encoder and decoder networks")
    net_options: dict = setting(section="model", factory=dict, help="options of the networks")
    # -- objective
    objective: str = setting("elbo", section="objective", choices="objective", help="the training objective")
    objective_options: dict = setting(section="objective", factory=dict, help="options of the objective")
    # -- training
    num_epochs: int = setting(20, section="training", minimum=0, resume=OVERRIDE, metavar="N",
                              help="train until this epoch (on resume: continue to it)")
    batch_size: int = setting(128, section="training", minimum=1, metavar="N", help="images per gradient step")
    lr: float = setting(1e-3, section="training", minimum=0.0, strict=True, metavar="X",
                        help="Adam's learning rate (initial)")
    lr_schedule: str = setting("constant", section="training", choices="lr_schedule",
                               help="constant, or burda2015: 3^i epochs at lr·10^(-i/7), i = 0..7")
    adam_eps: float = setting(1e-8, section="training", minimum=0.0, strict=True, metavar="X", help="Adam's ε")
    seed: int = setting(0, section="training", minimum=0, metavar="N",
                        help="seed of every random number generator (0 ≤ seed < 2^32)")
    # -- evaluation
    eval_samples: int = setting(1000, section="evaluation", minimum=1, resume=FREE, metavar="K",
                                help="K, importance samples per test image for log p(x) (the literature: 5000)")
    eval_batch_size: int = setting(100, section="evaluation", minimum=1, resume=FREE, metavar="N",
                                   help="test images per evaluation batch")
    eval_ks: tuple = setting((1, 5, 50, 500, 5000), section="evaluation", minimum=1, resume=FREE, metavar="K",
                             help="also report E[L_K] for these K (those up to --eval-samples, from the same samples)")
    # -- run
    out: str = setting("results/mnist_svi", section="run", resume=FREE, metavar="DIR", path=True,
                       help="output folder: metrics, checkpoints, plots (on resume: the resumed run's folder)")
    resume: str | None = setting(None, section="run", resume=FREE, metavar="PATH", path=True,
                                 help="continue the run in this folder (or from this checkpoint file)")
    evaluate_only: bool = setting(False, section="run", resume=FREE,
                                  help="with --resume: evaluate the run's selected model, no training")
    overwrite: bool = setting(False, section="run", resume=FREE,
                              help="let a new run replace the run already in --out (its files are removed)")
    device: str = setting("cpu", section="run", resume=FREE, metavar="DEVICE",
                          help="torch device to train and evaluate on: cpu, cuda, cuda:1, ...")
    threads: int | None = setting(
        None, section="run", minimum=1, resume=FREE, metavar="N",
        help="CPU threads for torch (default: torch's choice; on a busy machine 1 can be several times faster)")
    progress: bool = setting(True, section="run", resume=FREE, help="progress bars")
    pyro_validation: bool = setting(
        False, section="run", resume=FREE,
        help="Pyro's checks of distribution arguments and supports on every step (slower; the data is "
             "checked against the likelihood once, up front, either way)")
    time_limit_hours: float = setting(
        168.0, section="run", minimum=0.0, strict=True, resume=FREE, metavar="H", allow_inf=True,
        help="refuse a run whose estimated time exceeds H hours (inf: no limit)")
    protocol: str | None = setting(None, section="run", choices="protocol",
                                   help="the paper protocol these settings started from (a record)")

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = _check_field(field, getattr(self, field.name))
            object.__setattr__(self, field.name, value)
        for kind in PIECE_KINDS:
            object.__setattr__(self, f"{kind}_options", _resolve_options(kind, getattr(self, kind),
                                                                           getattr(self, f"{kind}_options")))
        from .compatibility import MODEL_REFUSED, REFUSED
        from .data import DATASETS, check_binarization

        if (self.model, self.prior) in MODEL_REFUSED:
            raise ConfigError("prior", f"model={self.model} with prior={self.prior} is not supported: "
                              f"{MODEL_REFUSED[self.model, self.prior]}; choose another prior")
        if (self.model, self.guide) in MODEL_REFUSED:
            raise ConfigError("guide", f"model={self.model} with guide={self.guide} is not supported: "
                              f"{MODEL_REFUSED[self.model, self.guide]}; choose another guide")
        if (self.prior, self.guide) in REFUSED:  # before any data is loaded
            raise ConfigError("guide", f"prior={self.prior} with guide={self.guide} is not supported: "
                              f"{REFUSED[self.prior, self.guide]}; choose another guide for this prior, or "
                              "another prior for this guide")

        binarization = check_binarization(DATASETS[self.dataset], self.binarize)
        object.__setattr__(self, "binarize", None if DATASETS[self.dataset].binarized else binarization)
        if self.seed >= 2 ** 32:
            raise ConfigError("seed", f"must be below 2^32 (NumPy's seed range), got {self.seed}")
        if self.evaluate_only and self.resume is None:
            raise ConfigError("evaluate_only", "needs resume: the run folder or checkpoint to evaluate")
        from .registry import LIKELIHOODS

        if getattr(LIKELIHOODS[self.likelihood].factory, "data", None) == "binary" and self.binarize == "none":
            raise ConfigError("binarize", f"'none' keeps grey levels, but the {self.likelihood} likelihood is a "
                              "density on binary images only; use binarize dynamic or static, or a likelihood for "
                              "grey levels (continuous_bernoulli, gaussian)")
        note = getattr(LIKELIHOODS[self.likelihood].factory, "on_binary_data", None)
        if note and (self.binarize in ("dynamic", "static") or DATASETS[self.dataset].binarized):
            import warnings

            warnings.warn(f"likelihood {self.likelihood} on binarized images: {note}", stacklevel=2)
        try:
            import torch

            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ConfigError("device", f"{self.device!r} is not a torch device; use cpu, cuda or cuda:N") from None

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """From plain data (e.g. JSON). Unknown keys are an error; missing ones take the defaults."""
        if not isinstance(data, Mapping):
            raise ConfigError("config", f"a run configuration is a mapping of settings, got {type(data).__name__}")
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(unknown[0], f"not a setting of a run (unknown: {unknown}); the settings are "
                              f"{sorted(names)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError("config", f"not valid JSON: {error}") from None
        return cls.from_dict(data)

    @classmethod
    def from_protocol(cls, name: str, **changes: Any) -> RunConfig:
        """The settings of a paper's protocol (:data:`PROTOCOLS`), with ``changes`` on top. Piece
        options merge with the protocol's option by option, for the protocol's own piece; choosing
        another piece (``net="conv"``) drops the protocol's options of that kind."""
        if name not in PROTOCOLS:
            raise ConfigError("protocol", f"unknown protocol {name!r}; choose one of {sorted(PROTOCOLS)}")
        settings = dict(PROTOCOLS[name])
        for kind in PIECE_KINDS:
            key = f"{kind}_options"
            preset_piece = settings.get(kind, cls.__dataclass_fields__[kind].default)
            if key in settings and changes.get(kind, preset_piece) != preset_piece:
                del settings[key]
            elif key in settings and key in changes:
                changes[key] = {**settings[key], **changes[key]}
        return cls(**{**settings, "protocol": name, **changes})

    @classmethod
    def resume_from(cls, path: str | Path, **changes: Any) -> RunConfig:
        """The configuration of the run saved at ``path`` (a run folder or a checkpoint), set to
        resume it, with ``changes`` (e.g. ``num_epochs=40``, or ``evaluate_only=True,
        eval_samples=5000``). The output folder defaults to the saved run's own folder."""
        from .checkpoint import load_checkpoint, resolve_checkpoint

        file = resolve_checkpoint(path, "best.pt" if changes.get("evaluate_only") else "checkpoint.pt")
        saved = cls.from_dict(load_checkpoint(file)["run_config"])
        folder = file.parent
        return saved.replace(**{"out": str(folder), "overwrite": False, "evaluate_only": False, "resume": str(path),
                                **changes})

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes``; choosing another piece (``prior="vamp"``) without its options
        drops the options of the old piece and takes the new one's defaults."""
        for kind in PIECE_KINDS:
            if kind in changes and changes[kind] != getattr(self, kind) and f"{kind}_options" not in changes:
                changes[f"{kind}_options"] = {}
        return dataclasses.replace(self, **changes)

    # -- plain data ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every setting as JSON-ready plain data (tuples become lists)."""
        return {field.name: _plain(getattr(self, field.name)) for field in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    # -- derived -------------------------------------------------------------------------------
    def model_config(self, x_shape) -> dict[str, Any]:
        """The model's record for :func:`pyro_vae.build_vae` (as stored in checkpoints)."""
        from .build import make_config

        return make_config(x_shape, self.z_dim, prior=self.prior, guide=self.guide, likelihood=self.likelihood,
                           net=self.net, model=self.model, options={kind: getattr(self, f"{kind}_options")
                                                                    for kind in ("prior", "guide", "likelihood", "net")}
                           | ({"model": self.model_options} if self.model != "vae" else {}))

    def bound_ks(self) -> list[int]:
        """The K of the reported bounds E[L_K]: those of ``eval_ks`` up to ``eval_samples``, and it."""
        return sorted({k for k in self.eval_ks if k <= self.eval_samples} | {self.eval_samples})

    def label(self) -> str:
        """e.g. ``iwae K=50``: the objective and its number of particles."""
        return f"{self.objective} K={self.objective_options.get('num_particles', 1)}"

    def differences(self, other: RunConfig, kinds: tuple[str, ...] = (FIXED, OVERRIDE, FREE)) -> list[str]:
        """The names of the fields in which ``self`` and ``other`` differ (only those of the given
        resume kinds, if ``kinds`` is given)."""
        return [field.name for field in dataclasses.fields(self)
                if field.metadata["resume"] in kinds and getattr(self, field.name) != getattr(other, field.name)]


#: Presets of settings from papers (fields -> values); explicit settings win.
PROTOCOLS: dict[str, dict[str, Any]] = {
    # Burda, Grosse & Salakhutdinov (arXiv:1509.00519), Sec. 5, one stochastic layer on MNIST.
    "burda2015": {"net": "mlp", "net_options": {"hidden_dims": [200, 200], "activation": "tanh"}, "z_dim": 50,
                  "batch_size": 20, "binarize": "dynamic", "lr": 1e-3, "adam_eps": 1e-4,
                  "lr_schedule": "burda2015", "num_epochs": 3280, "eval_samples": 5000, "val_size": 400},
}
# The same paper's two stochastic layers (Sec. 5, Table 1, "2 layers"): x → 200 → 200 → z1 (100) →
# 100 → 100 → z2 (50), tanh, the generative side mirrored; the same training and evaluation.
PROTOCOLS["burda2015-2layer"] = {**PROTOCOLS["burda2015"], "z_dim": 100, "model": "hierarchical",
                                 "model_options": {"upper_z_dims": [50], "upper_hidden_dims": [100, 100],
                                                   "upper_activation": "tanh", "data_output_bias": True}}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _annotation_types(field: dataclasses.Field) -> tuple[type, bool]:
    """(base type, whether None is allowed) from the field's annotation string."""
    text = str(field.type)
    optional = "None" in text
    base = text.replace("| None", "").strip()
    return {"str": str, "int": int, "float": float, "bool": bool, "dict": dict, "tuple": tuple}[base], optional


def _check_field(field: dataclasses.Field, value: Any) -> Any:
    kind, optional = _annotation_types(field)
    meta = field.metadata
    name = field.name
    if value is None:
        if optional:
            return None
        raise ConfigError(name, "must be given (it has no 'unset' value)")
    if kind is tuple:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ConfigError(name, f"takes a list of integers, got {value!r}")
        values = [_check_scalar(name, int, v, meta) for v in value]
        if not values:
            raise ConfigError(name, "takes at least one value")
        return tuple(sorted(set(values)))
    if kind is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(name, f"takes a mapping of option names to values, got {value!r}")
        return dict(value)
    value = _check_scalar(name, kind, value, meta)
    if meta["choices"] is not None and value not in choices_of(meta["choices"]):
        raise ConfigError(name, f"unknown choice {value!r}; choose one of {choices_of(meta['choices'])}")
    return value


def _check_scalar(name: str, kind: type, value: Any, meta: Mapping[str, Any]) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"takes true or false, got {value!r}")
        return value
    if kind is str:
        if meta["path"] and isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value:
            raise ConfigError(name, f"takes a non-empty string, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"takes {'an integer' if kind is int else 'a number'}, got {value!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(name, f"takes an integer, got {value!r}")
        value = int(value)
    else:
        value = float(value)
        if math.isnan(value):
            raise ConfigError(name, "takes a number, got nan")
    minimum, strict = meta["minimum"], meta["strict"]
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        raise ConfigError(name, f"must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
    if kind is float and math.isinf(value) and not meta["allow_inf"]:
        raise ConfigError(name, f"must be finite, got {value!r}")
    return value


def _fill_registries() -> None:
    from . import build, objectives  # noqa: F401  (importing them registers every piece)


def _resolve_options(kind: str, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    from .registry import REGISTRIES

    _fill_registries()
    return REGISTRIES[kind][name].resolve(options)
