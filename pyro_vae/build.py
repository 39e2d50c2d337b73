"""Build a :class:`~pyro_vae.vae.VAE` from a plain configuration (the record kept in checkpoints).

A configuration names one registered piece of each kind with its options::

    {"x_shape": [1, 28, 28], "z_dim": 50,
     "prior": {"name": "standard_normal", "options": {}},
     "guide": {"name": "diagonal_normal", "options": {"min_scale": 1e-4}},
     "likelihood": {"name": "bernoulli", "options": {}},
     "net": {"name": "mlp", "options": {"hidden_dims": [400], "activation": "relu"}}}

Options left out take the defaults declared in the registry entry; the returned model's
``config`` holds every option resolved, so the same file rebuilds the same model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from . import guides, likelihoods, nets, priors  # noqa: F401  (fill the registries)
from .errors import ConfigError
from .registry import GUIDES, LIKELIHOODS, NETS, PRIORS
from .vae import VAE

PIECES = {"prior": PRIORS, "guide": GUIDES, "likelihood": LIKELIHOODS, "net": NETS}


def make_config(x_shape: Sequence[int], z_dim: int, prior: str = "standard_normal",
                guide: str = "diagonal_normal", likelihood: str = "bernoulli", net: str = "mlp",
                options: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A model configuration; ``options`` maps a kind (``"net"``, ...) to that piece's options."""
    options = options or {}
    unknown = set(options) - set(PIECES)
    if unknown:
        raise ValueError(f"options given for unknown kinds {sorted(unknown)}; kinds are {sorted(PIECES)}")
    names = {"prior": prior, "guide": guide, "likelihood": likelihood, "net": net}
    config: dict[str, Any] = {"x_shape": [int(s) for s in x_shape], "z_dim": int(z_dim)}
    for kind, registry in PIECES.items():
        config[kind] = {"name": names[kind], "options": registry[names[kind]].resolve(options.get(kind))}
    return config


def describe(config: dict[str, Any]) -> str:
    """``prior=vamp, guide=iaf, likelihood=bernoulli, net=mlp``: the pieces named in ``config``."""
    return ", ".join(f"{kind}={config[kind]['name']}" for kind in PIECES)


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

    def build(kind: str, **context: Any) -> Any:
        try:
            return PIECES[kind].build(config[kind]["name"], config[kind]["options"], **context)
        except ConfigError:
            raise
        except ValueError as error:
            raise ConfigError(f"{kind}_options", f"cannot build {describe(config)}: {error}") from None

    # Each factory takes the context arguments its signature names. The prior comes last because
    # it may be built from the others: the VampPrior's components are q(z|u_k) = guide(encoder(u_k)).
    context = {"x_shape": x_shape, "z_dim": z_dim}
    guide = build("guide", **context)
    likelihood = build("likelihood", **context)
    encoder, decoder = build("net", encoder_out_dim=guide.encoder_out_dim(z_dim), **context)
    prior = build("prior", encoder=encoder, guide=guide, **context)
    vae = VAE(prior=prior, guide=guide, likelihood=likelihood, encoder=encoder, decoder=decoder, x_shape=x_shape)
    vae.config = config
    return vae
