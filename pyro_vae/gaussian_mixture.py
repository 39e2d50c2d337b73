"""A mixture of K Gaussians over R^D whose log-density costs matrix products: the distribution of the
``mixture`` prior and of the VampPrior (Tomczak & Welling, arXiv:1705.07120, Sec. 3).

``MixtureSameFamily`` scores a value z against every component by broadcasting, so N values hold an
N × K × D tensor. For diagonal components the quadratic form expands into matrix products,

    Σ_d (z_d − μ_kd)² / σ_kd² = (z ⊙ z) · w_kᵀ − 2 z · (μ_k ⊙ w_k)ᵀ + Σ_d μ_kd² w_kd,   w_k = 1/σ_k²,

so N values cost one (N × 2D)·(2D × K) product and hold N × K numbers: about D/2 times less work
and D times less memory.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch.distributions import constraints

#: Full-rank components are scored this many at a time (see :class:`GaussianMixture`).
FULL_RANK_BLOCK = 32


class GaussianMixture(dist.TorchDistribution):
    r"""p(z) = Σ_k π_k N(z; μ_k, Σ_k), π = softmax(``logits``), with Σ_k = diag(``scale``\ _k²) or
    ``scale_tril``\ _k ``scale_tril``\ _kᵀ; batch shape ``()``, event shape ``(D,)``. Plates broadcast it
    (``expand`` gives Pyro's ``ExpandedDistribution``), and ``log_prob`` takes values of any shape
    ``(..., D)``, e.g. the VAE's ``(particles, batch, D)``.

    **Diagonal components: matrix products, in float64.** log N(z; μ_k, σ_k²) = −½ Q_nk − Σ_d log σ_kd
    − (D/2) log 2π with Q_nk expanded as in the module's docstring. The expansion cancels: near the
    component that dominates the sum Q_nk is O(D) while each of its three terms is
    O(Σ_d (z_d² + μ_kd²)/σ_kd²), so its absolute rounding error is about ε · Σ_d (z_d² + μ_kd²)/σ_kd²,
    ε the unit roundoff, against ε · Q_nk for the direct form. In float32 (ε = 6·10⁻⁸) that is 0.02 nats
    at σ = 0.1 and about 10⁴ at the guides' floor σ = 10⁻⁴. Two measures bound it:

    1. z and the means are first centred on the means' average c (the expansion is exact for any c, as
       (z − c) − (μ_k − c) = z − μ_k), so the terms scale with the spread of the components and of z
       around them rather than with their distance from the origin;
    2. the three terms and their sum are computed in float64 (ε = 1.1·10⁻¹⁶): with z_d − c and μ_kd − c
       within ±10 and σ ≥ 10⁻⁴ the error is ≤ 1.1·10⁻¹⁶ · D · 200 · 10⁸ ≈ 2·10⁻⁶ D nats (10⁻⁴ at D = 50), below
       the float32 rounding of the result itself for a log-density of hundreds of nats.

    All of it is one float64 product, [z ⊙ z, z] · [−½ w, μ ⊙ w]ᵀ plus a constant per component
    (``addmm``): N × K × 2D multiply-adds, next to the decoder's N × hidden × pixels in float32;
    logsumexp over k then runs on the N × K float64 matrix and the result is cast back to the value's
    dtype. Far from every component Q_nk is large but finite, so log p(z) is finite for every
    finite z (no −inf; a float32 −inf could only come from Q_nk > 10³⁸, i.e. (z_d − μ_kd)/σ_kd beyond ±10¹⁹).

    **Full-rank components: the direct form** (documented fallback). The expansion of
    (z − μ_k)ᵀ Σ_k⁻¹ (z − μ_k) needs the precision matrices, whose rounding grows with the square of
    the condition number of L_k; the guide's floor (10⁻⁴ on the diagonal) makes that unbounded, so
    full-rank components are scored by ``MultivariateNormal.log_prob`` (triangular solves, backward
    stable), :data:`FULL_RANK_BLOCK` components at a time, so that N values hold N × K log-densities
    and an N × block × D working tensor rather than N × K × D. :attr:`numbers_per_value` says so, and
    the evaluation chunks (:func:`pyro_vae.evaluate.chunk_rows`) shrink to match.

    Sampling draws k ~ Categorical(π) and then z = μ_k + σ_k ⊙ ε (or μ_k + L_k ε), ε ~ N(0, I); there
    is no reparameterized sample (a mixture's index is discrete), as for ``MixtureSameFamily``.
    """

    support = constraints.real_vector
    has_rsample = False

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor | None = None,
                 scale_tril: torch.Tensor | None = None, validate_args: bool | None = None):
        if (scale is None) == (scale_tril is None):
            raise ValueError("GaussianMixture takes exactly one of scale (diagonal) and scale_tril (full rank)")
        if loc.dim() != 2 or logits.shape != loc.shape[:1]:
            raise ValueError(f"GaussianMixture takes logits (K,) and loc (K, D); got {tuple(logits.shape)} "
                             f"and {tuple(loc.shape)}")
        given = scale if scale is not None else scale_tril
        expected = loc.shape if scale is not None else loc.shape + loc.shape[-1:]
        if given.shape != expected:
            raise ValueError(f"GaussianMixture: {'scale' if scale is not None else 'scale_tril'} must have shape "
                             f"{tuple(expected)}, got {tuple(given.shape)}")
        self.logits, self.loc, self.scale, self.scale_tril = logits, loc, scale, scale_tril
        super().__init__(torch.Size(), loc.shape[-1:], validate_args=validate_args)

    @property
    def arg_constraints(self) -> dict:
        if self.diagonal:
            return {"logits": constraints.real, "loc": constraints.real, "scale": constraints.positive}
        return {"logits": constraints.real, "loc": constraints.real, "scale_tril": constraints.lower_cholesky}

    @property
    def num_components(self) -> int:
        return self.loc.shape[0]

    @property
    def diagonal(self) -> bool:
        return self.scale is not None

    @property
    def numbers_per_value(self) -> int:
        """How many numbers (in float32 units) :meth:`log_prob` holds per value beyond the value: the
        N × K float64 matrix (2K) for diagonal components; for full-rank ones the N × K log-densities
        and two copies of one block's N × block × D working tensor (the solve's input and output)."""
        k, d = self.loc.shape
        return 2 * k if self.diagonal else k + 2 * min(k, FULL_RANK_BLOCK) * d

    @property
    def component_distribution(self) -> dist.Distribution:
        """The K components as one distribution of batch shape ``(K,)``."""
        if self.diagonal:
            return dist.Normal(self.loc, self.scale).to_event(1)
        return dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_weights = torch.log_softmax(self.logits, -1)
        if not self.diagonal:  # the direct form, a block of components at a time (see the class docstring)
            value = value.unsqueeze(-2)
            log_components = torch.cat([
                dist.MultivariateNormal(self.loc[start:start + FULL_RANK_BLOCK],
                                        scale_tril=self.scale_tril[start:start + FULL_RANK_BLOCK],
                                        validate_args=False).log_prob(value)
                for start in range(0, self.num_components, FULL_RANK_BLOCK)], -1)
            return torch.logsumexp(log_weights + log_components, -1)
        shape, d = value.shape[:-1], value.shape[-1]
        loc, scale = self.loc.double(), self.scale.double()
        reference = loc.mean(0)
        centred_loc = loc - reference                          # (K, D)
        z = value.reshape(-1, d).double() - reference          # (N, D)
        precision = scale.pow(-2)                              # (K, D)
        # log π_k + log N(z_n; μ_k, σ_k²) = [z², z]_n · [−½ w, μ ⊙ w]_kᵀ + c_k: one product, in float64
        constant = (log_weights.double() - 0.5 * (centred_loc.pow(2) * precision).sum(-1)
                    - scale.log().sum(-1) - 0.5 * d * math.log(2 * math.pi))          # (K,)
        features = torch.cat([z * z, z], -1)                                         # (N, 2D)
        coefficients = torch.cat([-0.5 * precision, centred_loc * precision], -1)    # (K, 2D)
        log_joint = torch.addmm(constant, features, coefficients.T)                  # (N, K)
        return torch.logsumexp(log_joint, -1).to(value.dtype).reshape(shape)

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            index = dist.Categorical(logits=self.logits).sample(torch.Size(sample_shape))
            noise = torch.randn(index.shape + self.event_shape, dtype=self.loc.dtype, device=self.loc.device)
            if self.diagonal:
                return self.loc[index] + self.scale[index] * noise
            return self.loc[index] + (self.scale_tril[index] @ noise.unsqueeze(-1)).squeeze(-1)

    @property
    def mean(self) -> torch.Tensor:
        return (torch.softmax(self.logits, -1).unsqueeze(-1) * self.loc).sum(-2)

    @property
    def variance(self) -> torch.Tensor:
        """Var z_d = Σ_k π_k (Σ_k,dd + μ_kd²) − (E z_d)²."""
        component_variance = self.scale.pow(2) if self.diagonal else self.scale_tril.pow(2).sum(-1)
        second_moment = (torch.softmax(self.logits, -1).unsqueeze(-1) * (component_variance + self.loc.pow(2))).sum(-2)
        return second_moment - self.mean.pow(2)

    def expand(self, batch_shape, _instance=None):
        return dist.ExpandedDistribution(self, batch_shape)
