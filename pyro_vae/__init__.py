"""pyro_vae: the variational autoencoder of Kingma & Welling (arXiv:1312.6114), derived equation by
equation in Pyro. See ``docs/derivation.md`` for where each equation lives.

A run of the main job is a value: ``pyro_vae.run(pyro_vae.RunConfig(...))``; a trained model comes
back with ``pyro_vae.load("results/mnist_svi")``.
"""

from . import (
    _torchvision,  # noqa: F401  (makes torchvision importable even where its C++ ops are missing)
    bounds,
    objectives,
    stats,
)
from .annealing import ais
from .bdmc import bdmc
from .build import build_vae, make_config
from .checkpoint import load, load_checkpoint, save_checkpoint
from .config import RunConfig
from .data import load_data
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DataNotFoundError,
    InputError,
    OutputError,
    PyroVAEError,
    ResourceError,
    TrainingDivergedError,
)
from .evaluate import evaluate, log_weights
from .experiment import RunResult, run
from .gaps import inference_gaps
from .objectives import make_objective
from .registry import GUIDES, LIKELIHOODS, NETS, OBJECTIVES, PRIORS, Option
from .train import fit
from .vae import VAE

__version__ = "0.2.0"

__all__ = [
    "GUIDES", "LIKELIHOODS", "NETS", "OBJECTIVES", "PRIORS", "VAE", "CheckpointError", "ConfigError", "DataError",
    "DataNotFoundError", "InputError", "Option", "OutputError", "PyroVAEError", "ResourceError", "RunConfig",
    "RunResult", "TrainingDivergedError", "ais", "bdmc", "bounds", "build_vae", "evaluate", "fit", "inference_gaps",
    "load", "load_checkpoint", "load_data", "log_weights", "make_config", "make_objective", "objectives", "run", "save_checkpoint", "stats",
]
