"""Fail before training, with the combination's name, when a prior × guide × objective cannot train.

Every piece is checked where it is built (options, and what it needs from the others: the VampPrior
checks that the guide gives one distribution per pseudo-input). What remains is the interplay of the
built model with the objective, which only running it shows; :func:`check_combination` runs one
step's worth of it on two images up front, so that a combination that cannot train stops at
construction with a message naming it, instead of failing inside Pyro at the first batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .build import describe
from .vae import VAE


class IncompatibleCombinationError(ValueError):
    """This prior × guide × likelihood × net × objective cannot be trained together."""


def check_combination(vae: VAE, objective: str, loss: Callable[[torch.Tensor], torch.Tensor],
                      x: torch.Tensor) -> None:
    """Evaluate ``loss`` and its gradient once on the images ``x`` (two are enough).

    The random-number stream of the run is left as it was (a forked generator), the gradients are
    cleared and the loss module's state (a KL warm-up position) restored afterwards, so a run with
    the check trains exactly as one without it.

    :raises IncompatibleCombinationError: naming the combination and the error it met, or a
        non-finite loss at initialization.
    """
    combination = f"{describe(vae.config)}, objective={objective}" if vae.config else f"objective={objective}"
    devices = [x.device] if x.device.type == "cuda" else []
    state = loss.state_dict() if isinstance(loss, torch.nn.Module) else None  # e.g. a KL warm-up position
    try:
        with torch.random.fork_rng(devices=devices):
            value = loss(x)
            value.backward()
    except Exception as error:
        raise IncompatibleCombinationError(
            f"{combination} cannot be trained: one step of the objective fails with "
            f"{type(error).__name__}: {error}") from error
    finally:
        for parameter in vae.parameters():
            parameter.grad = None
        if state is not None:
            loss.load_state_dict(state)
    if not math.isfinite(value.item()):
        raise IncompatibleCombinationError(f"{combination} gives a non-finite loss ({value.item()}) at "
                                           "initialization")
