"""Encoder and decoder networks: plain :class:`torch.nn.Module` objects, no Pyro inside.

The encoder maps an image ``x`` of shape ``(..., *x_shape)`` to the parameters of q(z|x)
(``(..., out_dim)``, e.g. ``[z_loc, z_scale_raw]`` for the diagonal Gaussian guide); the decoder maps
a latent ``z`` of shape ``(..., z_dim)`` to the parameters of p(x|z), one number per pixel
(``(..., *x_shape)``: logits for Bernoulli, the mean f(z) for the Gaussian). Leading dimensions are
arbitrary, so the same nets serve a data batch ``(B, ...)`` and vectorized particles ``(K, B, ...)``.

Kingma & Welling (arXiv:1312.6114), Appendix C: one hidden layer MLPs ("Gaussian MLP" and
"Bernoulli MLP"); here any number of hidden layers (``mlp``), or stride-2 convolutions for images
(``conv``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from .registry import NETS, Option

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU}


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    layers = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
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
    Option("hidden_dims", int, (400,), "hidden layer sizes, space-separated (decoder mirrors them)", minimum=1,
           flag="--hidden-dims", nargs="+"),
    Option("activation", str, "relu", "hidden activation", choices=tuple(ACTIVATIONS)),
    summary="fully connected encoder and decoder",
)
def mlp_nets(
    x_shape: Sequence[int], z_dim: int, encoder_out_dim: int, hidden_dims: Sequence[int], activation: str
) -> tuple[nn.Module, nn.Module]:
    """Fully connected encoder and decoder; the decoder's hidden sizes mirror the encoder's."""
    if any(h <= 0 for h in hidden_dims):
        raise ValueError(f"hidden sizes must be positive, got {list(hidden_dims)}")
    encoder = MLPEncoder(x_shape, encoder_out_dim, hidden_dims, activation)
    decoder = MLPDecoder(z_dim, x_shape, list(reversed(hidden_dims)), activation)
    return encoder, decoder


def _image_shape(x_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` from an image shape ``(C, H, W)`` or ``(H, W)``."""
    if len(x_shape) == 2:
        return (1, *x_shape)
    if len(x_shape) == 3:
        return tuple(x_shape)
    raise ValueError(f"the conv nets need images of shape (C, H, W) or (H, W), got x_shape {tuple(x_shape)}")


def _halved(size: tuple[int, int]) -> tuple[int, int]:
    """Spatial size after a 3×3 convolution with stride 2 and padding 1: ⌈size / 2⌉."""
    return ((size[0] + 1) // 2, (size[1] + 1) // 2)


class ConvEncoder(nn.Module):
    """x ``(..., *x_shape)`` -> 3×3 stride-2 convolutions (``channels``) -> flatten -> MLP ``(hidden_dim,)``
    -> ``(..., out_dim)``. Each convolution halves the height and width (rounding up)."""

    def __init__(self, x_shape: Sequence[int], out_dim: int, channels: Sequence[int], hidden_dim: int,
                 activation: str):
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.image_shape = _image_shape(x_shape)
        layers, c_in, size = [], self.image_shape[0], self.image_shape[1:]
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), ACTIVATIONS[activation]()]
            c_in, size = c_out, _halved(size)
        self.conv = nn.Sequential(*layers)
        self.head = mlp([c_in * size[0] * size[1], hidden_dim, out_dim], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape = x.shape[: x.dim() - len(self.x_shape)]
        features = self.conv(x.reshape(-1, *self.image_shape)).flatten(1)
        return self.head(features).reshape(*batch_shape, -1)


class ConvDecoder(nn.Module):
    """z ``(..., z_dim)`` -> MLP ``(hidden_dim,)`` -> the encoder's last feature map -> 3×3 stride-2
    transposed convolutions (``channels`` reversed, then the image's channels) -> ``(..., *x_shape)``.
    Each transposed convolution doubles the size, with the output padding that lands exactly on the
    encoder's size at that depth (odd sizes such as 7 included)."""

    def __init__(self, z_dim: int, x_shape: Sequence[int], channels: Sequence[int], hidden_dim: int,
                 activation: str):
        super().__init__()
        self.x_shape = tuple(x_shape)
        image_shape = _image_shape(x_shape)
        sizes = [image_shape[1:]]
        for _ in channels:
            sizes.append(_halved(sizes[-1]))
        self.feature_shape = (channels[-1], *sizes[-1])
        self.head = nn.Sequential(mlp([z_dim, hidden_dim, math.prod(self.feature_shape)], activation),
                                  ACTIVATIONS[activation]())
        c_outs = [*reversed(channels[:-1]), image_shape[0]]
        layers, c_in = [], channels[-1]
        for i, c_out in enumerate(c_outs):
            small, large = sizes[-1 - i], sizes[-2 - i]
            padding = tuple(big - (2 * s - 1) for big, s in zip(large, small))
            layers.append(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=padding))
            if i < len(c_outs) - 1:
                layers.append(ACTIVATIONS[activation]())
            c_in = c_out
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        features = self.head(z.reshape(-1, z.shape[-1])).reshape(-1, *self.feature_shape)
        return self.deconv(features).reshape(*z.shape[:-1], *self.x_shape)


@NETS.register(
    "conv",
    Option("channels", int, (32, 64), "channels of the stride-2 convolutions, space-separated "
           "(the decoder mirrors them)", nargs="+", minimum=1),
    Option("hidden_dim", int, 256, "size of the fully connected layer between the convolutions and z", minimum=1),
    Option("activation", str, "relu", "hidden activation", choices=tuple(ACTIVATIONS)),
    summary="stride-2 convolutions and their transposes",
)
def conv_nets(x_shape: Sequence[int], z_dim: int, encoder_out_dim: int, channels: Sequence[int],
              hidden_dim: int, activation: str) -> tuple[nn.Module, nn.Module]:
    """Convolutional encoder and the mirrored transposed-convolution decoder, for images
    ``(C, H, W)`` or ``(H, W)`` (``--net conv``)."""
    if not channels or any(c <= 0 for c in channels) or hidden_dim <= 0:
        raise ValueError(f"conv nets need positive channels and hidden_dim, got {list(channels)} and {hidden_dim}")
    encoder = ConvEncoder(x_shape, encoder_out_dim, channels, hidden_dim, activation)
    decoder = ConvDecoder(z_dim, x_shape, channels, hidden_dim, activation)
    return encoder, decoder
