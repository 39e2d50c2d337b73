"""Build a :class:`~pyro_vae.vae.VAE` from a plain configuration (the record kept in checkpoints).

A configuration names one registered piece of each kind with its options::

    {"x_shape": [1, 28, 28], "z_dim": 50,
     "prior": {"name": "standard_normal", "options": {}},
     "guide": {"name": "diagonal_normal", "options": {"min_scale": 1e-4}},
     "likelihood": {"name": "bernoulli", "options": {}},
     "net": {"name": "mlp", "options": {"hidden_dims": [400], "activation": "relu"}}}

A ``"model"`` entry (``{"name": "hierarchical", "options": {"upper_z_dims": [50]}}``) chooses the model
that composes the pieces; without one (all older records) it is the one-layer VAE, ``"vae"``, and
configurations of the VAE are written without it, as before. Options left out take the defaults declared in the registry entry; the returned model's
``config`` holds every option resolved, so the same file rebuilds the same model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from . import guides, hierarchical, likelihoods, nets, priors  # noqa: F401  (fill the registries)
from .errors import ConfigError
from .registry import GUIDES, LIKELIHOODS, MODELS, NETS, PRIORS
from .vae import VAE

#: the model a configuration without a ``"model"`` entry builds (every record written before models
#: were a piece): the one-layer VAE.
DEFAULT_MODEL = "vae"

PIECES = {"prior": PRIORS, "guide": GUIDES, "likelihood": LIKELIHOODS, "net": NETS}


def make_config(x_shape: Sequence[int], z_dim: int, prior: str = "standard_normal",
                guide: str = "diagonal_normal", likelihood: str = "bernoulli", net: str = "mlp",
                options: dict[str, dict[str, Any]] | None = None, model: str = DEFAULT_MODEL) -> dict[str, Any]:
    """A model configuration; ``options`` maps a kind (``"net"``, ..., ``"model"``) to that piece's options."""
    options = options or {}
    unknown = set(options) - set(PIECES) - {"model"}
    if unknown:
        raise ValueError(f"options given for unknown kinds {sorted(unknown)}; kinds are {sorted(PIECES)}")
    names = {"prior": prior, "guide": guide, "likelihood": likelihood, "net": net}
    config: dict[str, Any] = {"x_shape": [int(s) for s in x_shape], "z_dim": int(z_dim)}
    for kind, registry in PIECES.items():
        config[kind] = {"name": names[kind], "options": registry[names[kind]].resolve(options.get(kind))}
    if model != DEFAULT_MODEL or options.get("model"):
        config["model"] = {"name": model, "options": MODELS[model].resolve(options.get("model"))}
    return config


def model_name(config: dict[str, Any]) -> str:
    """The model a configuration builds: its ``"model"`` entry, else ``"vae"``."""
    return config.get("model", {}).get("name", DEFAULT_MODEL)


def describe(config: dict[str, Any]) -> str:
    """``prior=vamp, guide=iaf, likelihood=bernoulli, net=mlp``: the pieces named in ``config``
    (preceded by ``model=...`` for a model other than the one-layer VAE)."""
    pieces = ", ".join(f"{kind}={config[kind]['name']}" for kind in PIECES)
    return pieces if model_name(config) == DEFAULT_MODEL else f"model={model_name(config)}, {pieces}"


def build_vae(config: dict[str, Any]) -> VAE:
    """Instantiate the pieces named in ``config`` and compose them into a :class:`VAE`.

    :raises ConfigError: naming the kind whose options (``<kind>_options``) the piece refused, and
        the whole combination.
    """
    config = copy.deepcopy(config)
    x_shape, z_dim = tuple(config["x_shape"]), config["z_dim"]
    if isinstance(z_dim, bool) or not isinstance(z_dim, int) or z_dim <= 0:
        raise ConfigError("z_dim", f"must be a positive integer, got {z_dim!r}")
    for kind, registry in PIECES.items():
        piece = config[kind]
        piece["options"] = registry[piece["name"]].resolve(piece.get("options"))
    if "model" in config:
        config["model"]["options"] = MODELS[config["model"]["name"]].resolve(config["model"].get("options"))

    def build(kind: str, **context: Any) -> Any:
        try:
            return PIECES[kind].build(config[kind]["name"], config[kind]["options"], **{"x_shape": x_shape, **context})
        except ConfigError:
            raise
        except ValueError as error:
            raise ConfigError(f"{kind}_options", f"cannot build {describe(config)}: {error}") from None

    build.x_shape = x_shape  # type: ignore[attr-defined]
    name = model_name(config)
    from .compatibility import MODEL_REFUSED

    for kind in ("prior", "guide"):
        if (name, config[kind]["name"]) in MODEL_REFUSED:
            raise ConfigError(kind, f"model={name} with {kind}={config[kind]['name']} is not supported: "
                              f"{MODEL_REFUSED[name, config[kind]['name']]}; choose another {kind}")
    try:
        vae = MODELS.build(name, config["model"]["options"] if "model" in config else None, build=build, z_dim=z_dim)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError("model_options", f"cannot build {describe(config)}: {error}") from None
    vae.config = config
    return vae


@MODELS.register("vae", summary="one stochastic layer: p(z) p(x|z) and q(z|x) (Kingma & Welling, arXiv:1312.6114)")
def one_layer(build, z_dim: int) -> VAE:
    """The one-layer :class:`VAE` from the configured pieces (``build(kind, **context)``)."""
    # Each factory takes the context arguments its signature names. The prior comes last because
    # it may be built from the others: the VampPrior's components are q(z|u_k) = guide(encoder(u_k)).
    guide = build("guide", z_dim=z_dim)
    likelihood = build("likelihood", z_dim=z_dim)
    encoder, decoder = build("net", encoder_out_dim=guide.encoder_out_dim(z_dim), z_dim=z_dim)
    prior = build("prior", encoder=encoder, guide=guide, z_dim=z_dim)
    return VAE(prior=prior, guide=guide, likelihood=likelihood, encoder=encoder, decoder=decoder, x_shape=build.x_shape)
