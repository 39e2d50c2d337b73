"""pyro_vae: the variational autoencoder of Kingma & Welling (arXiv:1312.6114), derived equation by
equation in Pyro. See ``docs/derivation.md`` for where each equation lives."""

from . import bounds, objectives
from .build import build_vae, make_config
from .checkpoint import load, load_checkpoint, save_checkpoint
from .data import DataNotFoundError, load_data
from .evaluate import evaluate, log_weights
from .objectives import make_objective
from .registry import GUIDES, LIKELIHOODS, NETS, OBJECTIVES, PRIORS, Option
from .train import fit
from .vae import VAE

__version__ = "0.1.0"

__all__ = [
    "GUIDES",
    "LIKELIHOODS",
    "NETS",
    "OBJECTIVES",
    "PRIORS",
    "VAE",
    "DataNotFoundError",
    "Option",
    "bounds",
    "build_vae",
    "evaluate",
    "fit",
    "load",
    "load_checkpoint",
    "load_data",
    "log_weights",
    "make_config",
    "make_objective",
    "objectives",
    "save_checkpoint",
]
