"""The VampPrior: the aggregate posterior of K learned pseudo-inputs, p(z) = (1/K) Σ_k q(z | u_k)."""

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import nn

from ..registry import PRIORS, Option


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
    clips them to [0, 1] with a hard tanh). The mixture is a ``MixtureSameFamily`` whose component
    distribution is the guide's distribution with batch shape ``(K,)``.

    Supported guides: every guide whose distribution, given a ``(K, encoder_out_dim)`` encoder
    output, has batch shape ``(K,)`` (checked at construction). With ``diagonal_normal`` and
    ``full_rank`` the components are Gaussians and log p(z) costs one pass of the encoder over the
    K pseudo-inputs. With ``iaf`` it is a mixture of K flows, which is correct but slow: the flow's
    density at a z it did not sample needs the inverse of each autoregressive layer, z_dim
    sequential network passes per pseudo-input (so K · z_dim passes per batch); use it on a GPU,
    with a small K.

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
            components = self.components()
        if components.batch_shape != (num_components,) or components.event_shape != (z_dim,):
            raise ValueError(
                f"the VampPrior needs the guide {type(guide).__name__} to give one distribution per "
                f"pseudo-input (batch shape ({num_components},), event shape ({z_dim},)); it gave batch "
                f"shape {tuple(components.batch_shape)}, event shape {tuple(components.event_shape)}")

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """u_k = sigmoid(r_k), shape ``(K, *x_shape)``, pixels in (0, 1)."""
        return torch.sigmoid(self.pseudo_inputs_raw)

    def components(self) -> dist.Distribution:
        """q(z | u_k) for every k: the guide's distribution with batch shape ``(K,)``."""
        encoder, guide = self.shared
        return guide(encoder(self.pseudo_inputs))

    def forward(self) -> dist.Distribution:
        components = self.components()
        uniform = dist.Categorical(logits=self.pseudo_inputs_raw.new_zeros(components.batch_shape))
        return dist.MixtureSameFamily(uniform, components)
