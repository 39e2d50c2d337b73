"""The VampPrior: the aggregate posterior of K learned pseudo-inputs, p(z) = (1/K) Σ_k q(z | u_k)."""

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import nn

from ..errors import ConfigError
from ..gaussian_mixture import GaussianMixture
from ..registry import GUIDES, PRIORS, Option


@PRIORS.register(
    "vamp",
    Option("num_components", int, 500, "K, the number of learned pseudo-inputs u_k (the paper uses 500)", minimum=1),
    summary="VampPrior: the mixture of q(z|u_k) over K learned pseudo-inputs u_k",
)
class VampPrior(nn.Module):
    """Variational mixture of posteriors, p(z) = (1/K) Σ_k q(z | u_k) (Tomczak & Welling,
    arXiv:1705.07120, Sec. 3).

    The optimal prior is the aggregate posterior (1/N) Σ_n q(z|x_n); the VampPrior
    approximates it with K learned pseudo-inputs u_k, images of the data's shape, passed through
    the *same* encoder and guide as the data: component k is ``guide(encoder(u_k))``. The pixels
    are u = sigmoid(r) with a free parameter r, so they stay in (0, 1) like the images (the paper
    clips them to [0, 1] with a hard tanh). The mixture is a
    :class:`~pyro_vae.gaussian_mixture.GaussianMixture` of the K Gaussians q(z|u_k): for the
    ``diagonal_normal`` guide log p(z) costs two matrix products (no values × K × z_dim tensor; see
    that class for the float64 expansion and its error bound), for ``full_rank`` the direct form.
    Either way log p(z) costs one pass of the encoder over the K pseudo-inputs per call.

    Supported guides: those whose q(z|u_k) is Gaussian, ``diagonal_normal`` and ``full_rank``
    (checked at construction). ``iaf`` is refused with a :class:`~pyro_vae.errors.ConfigError`: the
    prior would be a mixture of K flows, and a flow's density at a z it did not sample needs the
    inverse of each autoregressive layer, z_dim sequential network passes for every (z, u_k) pair.
    That is K · z_dim · depth network passes per value (docs/priors_and_guides.md has the measured
    cost), and the stable layers' inverse overflows far from every component, giving log p(z) = −inf.
    Scoring the IAF's base Gaussian instead would be cheap but is not q(z|u_k): another prior.

    The KL term against every guide has no closed form (the log of a sum): it is estimated by
    Monte Carlo, and ``mean_field`` falls back to that estimate.

    The encoder and guide are held by reference, not as submodules (``uses_guide = True`` tells
    :meth:`pyro_vae.vae.VAE.model` to register them under their own names), so that a parameter of
    the encoder has one name in the model, the guide, the optimizer and the checkpoint.
    """

    uses_guide = True

    def __init__(self, z_dim: int, x_shape: Sequence[int], encoder: nn.Module, guide: nn.Module,
                 num_components: int):
        super().__init__()
        if num_components < 1:
            raise ValueError(f"the VampPrior needs at least one pseudo-input, got num_components={num_components}")
        self.z_dim = z_dim
        self.shared = (encoder, guide)  # a tuple: not registered as submodules
        self.pseudo_inputs_raw = nn.Parameter(torch.randn(num_components, *x_shape))
        with torch.no_grad():
            components = guide(encoder(self.pseudo_inputs))
        if components.batch_shape != (num_components,) or components.event_shape != (z_dim,):
            raise ValueError(
                f"the VampPrior needs the guide {type(guide).__name__} to give one distribution per "
                f"pseudo-input (batch shape ({num_components},), event shape ({z_dim},)); it gave batch "
                f"shape {tuple(components.batch_shape)}, event shape {tuple(components.event_shape)}")
        if _gaussian_parameters(components) is None:
            names = [entry.name for entry in GUIDES if entry.factory is type(guide)]
            name = f"guide={names[0]}" if names else f"the guide {type(guide).__name__}"
            raise ConfigError(
                "guide", f"prior=vamp with {name} is not supported: its q(z|u_k) is not Gaussian, so p(z) would "
                "be a mixture of K flows, whose density at each z needs every flow inverted (z_dim sequential "
                "network passes per z and pseudo-input: minutes per batch, and -inf far from the components); "
                "use prior=vamp with guide=diagonal_normal or full_rank, or guide=iaf with another prior "
                "(standard_normal, mixture, flow)")

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """u_k = sigmoid(r_k), shape ``(K, *x_shape)``, pixels in (0, 1)."""
        return torch.sigmoid(self.pseudo_inputs_raw)

    def components(self) -> dist.Distribution:
        """q(z | u_k) for every k: the guide's distribution with batch shape ``(K,)``."""
        encoder, guide = self.shared
        return guide(encoder(self.pseudo_inputs))

    def forward(self) -> GaussianMixture:
        components = self.components()
        logits = self.pseudo_inputs_raw.new_zeros(components.batch_shape)  # π_k = 1/K
        loc, scale, scale_tril = _gaussian_parameters(components)
        return GaussianMixture(logits, loc, scale=scale, scale_tril=scale_tril)


def _gaussian_parameters(components: dist.Distribution):
    """(loc, scale, scale_tril) of Gaussian components, one of the two scales ``None``; ``None`` for
    any other family."""
    if isinstance(components, dist.MultivariateNormal):
        return components.loc, None, components.scale_tril
    if (isinstance(components, dist.Independent) and components.reinterpreted_batch_ndims == 1
            and type(components.base_dist) is dist.Normal):
        return components.base_dist.loc, components.base_dist.scale, None
    return None
