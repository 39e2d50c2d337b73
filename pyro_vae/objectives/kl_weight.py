"""β-weighted KL and linear KL warm-up, as a scale on the latent site of both model and guide.

With the log-density terms of the latent sites (``"z"``; ``"z1"``, ``"z2"``, .. of a hierarchical model:
the model's ``latent_sites``) multiplied by β in the model *and* the guide,

    Trace_ELBO:           E_q[log p(x|z) + β (log p(z) − log q(z|x))] = E_q[log p(x|z)] − β KL(q ‖ p(z)),
    TraceMeanField_ELBO:  E_q[log p(x|z)] − β KL(q ‖ p(z))   (it reads the guide site's scale),

the β-VAE objective (Higgins et al. 2017). A linear warm-up raises β from a small positive value
to its target over the first ``kl_warmup_steps`` steps (Bowman et al., arXiv:1511.06349, Sec. 3.1;
Sønderby et al., arXiv:1602.02282). Only for ``elbo`` and ``mean_field``: inside the IWAE
logsumexp a scale gives log mean_k w_k^β, not β·KL. ``poutine.scale`` refuses 0, so the warm-up
starts at ``BETA_START`` rather than at 0.

The model never sees β: the loss module wraps the model and guide, counts its own training steps
(its warm-up position is part of its ``state_dict``, saved in checkpoints), and the training loop
stays unaware of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pyro.poutine.scale_messenger import ScaleMessenger
from torch import nn

from ..registry import Option

BETA_START = 1e-3
LATENT_SITES = ("z",)

KL_OPTIONS = (
    Option("beta", float, 1.0, "weight β of the KL term", flag="--beta", minimum=0.0, strict=True),
    Option("kl_warmup_steps", int, 0, "raise β linearly over this many training steps", minimum=0,
           flag="--kl-warmup-steps"),
)


def latent_sites_of(model) -> tuple[str, ...]:
    """The latent sites of a model program: ``latent_sites`` of the VAE whose bound method it is, else
    :data:`LATENT_SITES`."""
    return tuple(getattr(getattr(model, "__self__", model), "latent_sites", LATENT_SITES))


class LatentScaleMessenger(ScaleMessenger):
    """``poutine.scale`` restricted to the named sample sites."""

    def __init__(self, scale: float, sites: Sequence[str] = LATENT_SITES):
        super().__init__(scale)
        self.sites = tuple(sites)

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["name"] in self.sites:
            super()._process_message(msg)


class KLWeightedLoss(nn.Module):
    """The loss module: −ELBO with the KL term weighted by the current β."""

    def __init__(self, objective: KLWeighted, model, guide):
        super().__init__()
        self.objective, self.model, self.guide = objective, model, guide
        self.sites = latent_sites_of(model)
        self.step = 0

    @property
    def beta(self) -> float:
        return self.objective.beta_at(self.step)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        scale = LatentScaleMessenger(self.beta, self.sites)
        loss = self.objective.elbo.differentiable_loss(scale(self.model), scale(self.guide), *args, **kwargs)
        if torch.is_grad_enabled():  # a training step, not an evaluation
            self.step += 1
        return loss

    def get_extra_state(self) -> dict[str, int]:
        return {"step": self.step}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])


class KLWeighted:
    """A Pyro ELBO with its KL term weighted by β (warmed up linearly over ``warmup_steps``)."""

    def __init__(self, elbo, beta: float, warmup_steps: int):
        if beta <= 0:
            raise ValueError(f"beta must be > 0 (poutine.scale refuses 0), got {beta}")
        if warmup_steps < 0:
            raise ValueError(f"kl_warmup_steps must be >= 0, got {warmup_steps}")
        self.elbo, self.beta, self.warmup_steps = elbo, beta, warmup_steps

    def beta_at(self, step: int) -> float:
        if self.warmup_steps == 0 or step >= self.warmup_steps:
            return self.beta
        return max(BETA_START, self.beta * step / self.warmup_steps)

    def __call__(self, model, guide) -> KLWeightedLoss:
        return KLWeightedLoss(self, model, guide)

    def loss(self, model, guide, *args, **kwargs) -> float:
        """−ELBO estimate at the target β."""
        scale = LatentScaleMessenger(self.beta, latent_sites_of(model))
        return self.elbo.loss(scale(model), scale(guide), *args, **kwargs)


def with_kl_weight(elbo, beta: float, kl_warmup_steps: int):
    """``elbo`` itself when β = 1 without warm-up (no overhead), else :class:`KLWeighted`."""
    if beta == 1.0 and kl_warmup_steps == 0:
        return elbo
    return KLWeighted(elbo, beta, kl_warmup_steps)
