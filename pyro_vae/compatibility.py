"""Fail before training, with the combination's name, when a prior × guide × objective cannot train.

Every piece is checked where it is built (options, and what it needs from the others: the VampPrior
checks that the guide gives one Gaussian per pseudo-input, and so refuses ``iaf``; :data:`REFUSED`
lists such pairs). What remains is the interplay of the
built model with the objective, which only running it shows; :func:`check_combination` runs one
step's worth of it on two images up front, so that a combination that cannot train stops at
construction with a message naming it, instead of failing inside Pyro at the first batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch

from .build import describe
from .errors import PyroVAEError
from .vae import VAE

#: prior × guide pairs that are refused, with a :class:`~pyro_vae.errors.ConfigError` naming the pair
#: (exit status 2 on the command line), by :class:`~pyro_vae.config.RunConfig` before any data is
#: loaded and by the piece where it is built: pair -> why, in one clause.
REFUSED = {("vamp", "iaf"): "the VampPrior's components would be IAF flows, and a flow's density at each z "
                            "needs it inverted, z_dim sequential network passes per pseudo-input "
                            "(pyro_vae.priors.vamp.VampPrior)"}

#: model × prior and model × guide pairs refused the same way: pair -> why.
MODEL_REFUSED = {("hierarchical", "vamp"): "the VampPrior on the top layer z_L would need q(z_L|x), which the "
                                           "bottom-up guide has only through z_1 .. z_(L-1) (pyro_vae.hierarchical)",
                 ("hierarchical", "iaf"): "each layer's guide would be an IAF conditioned on the layer below; "
                                          "only diagonal_normal layers are built (pyro_vae.hierarchical)",
                 ("hierarchical", "full_rank"): "DReG's weighting of the path through the layers needs each "
                                                "layer's noise ε, which only diagonal_normal layers keep "
                                                "(pyro_vae.hierarchical)"}


def supported_pairs(priors, guides) -> list[tuple[str, str]]:
    """Every (prior, guide) of ``priors`` × ``guides`` that is not in :data:`REFUSED`."""
    return [(prior, guide) for prior in priors for guide in guides if (prior, guide) not in REFUSED]


class IncompatibleCombinationError(PyroVAEError, ValueError):
    """This prior × guide × likelihood × net × objective cannot be trained together."""


@contextlib.contextmanager
def trial(vae: VAE, loss: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> Iterator[None]:
    """Run trial steps of ``loss`` inside the block without touching the run: the random-number
    stream is forked, and afterwards the gradients are cleared and the loss module's state (a KL
    warm-up position) restored. A run with trials trains exactly as one without them."""
    devices = [device] if device.type == "cuda" else []
    state = loss.state_dict() if isinstance(loss, torch.nn.Module) else None  # e.g. a KL warm-up position
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        for parameter in vae.parameters():
            parameter.grad = None
        if state is not None:
            loss.load_state_dict(state)


def check_combination(vae: VAE, objective: str, loss: Callable[[torch.Tensor], torch.Tensor],
                      x: torch.Tensor) -> float:
    """Evaluate ``loss`` and its gradient once on the images ``x`` (two are enough), as a
    :func:`trial`, and return the loss per image.

    :raises IncompatibleCombinationError: naming the combination and the error it met, or a
        non-finite loss at initialization.
    """
    combination = f"{describe(vae.config)}, objective={objective}" if vae.config else f"objective={objective}"
    try:
        with trial(vae, loss, x.device):
            value = loss(x)
            value.backward()
    except Exception as error:
        raise IncompatibleCombinationError(
            f"{combination} cannot be trained: one step of the objective fails with "
            f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}") from error
    if not math.isfinite(value.item()):
        raise IncompatibleCombinationError(f"{combination} gives a non-finite loss ({value.item()}) at "
                                           "initialization")
    return value.item() / x.shape[0]
