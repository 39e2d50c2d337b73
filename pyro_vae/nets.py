"""Encoder and decoder networks: plain :class:`torch.nn.Module` objects, no Pyro inside.

The encoder maps an image ``x`` of shape ``(..., *x_shape)`` to the parameters of q(z|x)
(``(..., out_dim)``, e.g. ``[z_loc, z_scale_raw]`` for the diagonal Gaussian guide); the decoder maps
a latent ``z`` of shape ``(..., z_dim)`` to the parameters of p(x|z), one number per pixel
(``(..., *x_shape)``: logits for Bernoulli, the mean f(z) for the Gaussian). Leading dimensions are
arbitrary, so the same nets serve a data batch ``(B, ...)`` and vectorized particles ``(K, B, ...)``.

Kingma & Welling (arXiv:1312.6114), Appendix C: one hidden layer MLPs ("Gaussian MLP" and
"Bernoulli MLP"); here any number of hidden layers.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
from torch import nn

from .registry import NETS, Option

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU}


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x ``(..., *x_shape)`` -> flattened -> MLP -> ``(..., out_dim)``."""

    def __init__(self, x_shape: Sequence[int], out_dim: int, hidden_dims: Sequence[int], activation: str):
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.net = mlp([math.prod(self.x_shape), *hidden_dims, out_dim], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape = x.shape[: x.dim() - len(self.x_shape)]
        return self.net(x.reshape(*batch_shape, -1))


class MLPDecoder(nn.Module):
    """z ``(..., z_dim)`` -> MLP -> reshaped to ``(..., *x_shape)``."""

    def __init__(self, z_dim: int, x_shape: Sequence[int], hidden_dims: Sequence[int], activation: str):
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.net = mlp([z_dim, *hidden_dims, math.prod(self.x_shape)], activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).reshape(*z.shape[:-1], *self.x_shape)


@NETS.register(
    "mlp",
    Option("hidden_dims", int, (400,), "hidden layer sizes, space-separated (decoder mirrors them)",
           flag="--hidden-dims", nargs="+"),
    Option("activation", str, "relu", "hidden activation", choices=tuple(ACTIVATIONS)),
)
def mlp_nets(
    x_shape: Sequence[int], z_dim: int, encoder_out_dim: int, hidden_dims: Sequence[int], activation: str
) -> Tuple[nn.Module, nn.Module]:
    """Fully connected encoder and decoder; the decoder's hidden sizes mirror the encoder's."""
    if any(h <= 0 for h in hidden_dims):
        raise ValueError(f"hidden sizes must be positive, got {list(hidden_dims)}")
    encoder = MLPEncoder(x_shape, encoder_out_dim, hidden_dims, activation)
    decoder = MLPDecoder(z_dim, x_shape, list(reversed(hidden_dims)), activation)
    return encoder, decoder
