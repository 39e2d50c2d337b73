"""The linear-Gaussian VAE: the one VAE where everything of the derivation is exact.

Model: z ~ N(0, I_d), x | z ~ N(Wz + b, σ² I_D). Then, in closed form,

* the evidence is p(x) = N(x; b, WWᵀ + σ²I);
* the posterior is p(z|x) = N(m(x), S) with S = (I + WᵀW/σ²)⁻¹ and m(x) = S Wᵀ(x − b)/σ²;
* for the linear guide q(z|x) = N(Ax + c, diag s²), with μ = Ax + c,

      E_q[log p(x|z)] = −(‖x − Wμ − b‖² + Σ_j s_j² ‖W_{:,j}‖²)/(2σ²) − (D/2) log 2πσ²,
      ELBO = E_q[log p(x|z)] − KL(q ‖ p(z))   and   log p(x) − ELBO = KL(q ‖ p(z|x)).

It is built from the library's own pieces (the standard normal prior, the diagonal Gaussian guide,
the Gaussian likelihood, linear networks), in float64, so the tests use it as the oracle of the Pyro
model and guide, and the tutorials to show the derivation's identities holding to rounding. Where
WᵀW is diagonal (orthogonal columns of W) the posterior covariance is diagonal and the diagonal
guide can equal the posterior exactly (:meth:`LinearGaussianVAE.exact_guide`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

from .bounds import gaussian_kl
from .guides import DiagonalNormalGuide
from .likelihoods import GaussianLikelihood
from .priors import StandardNormalPrior
from .vae import VAE

DTYPE = torch.float64


class LinearGaussianVAE:
    """The linear-Gaussian model with weights ``W`` (D × d), offset ``b`` (D,) and noise ``sigma``,
    and a linear diagonal Gaussian guide N(Ax + c, diag s²) (:meth:`set_guide`; by default the
    exact posterior's mean map and the square roots of the posterior variances). ``vae`` is the
    :class:`~pyro_vae.vae.VAE` of the library that computes the same model with Pyro."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor, sigma: float, A: torch.Tensor | None = None,
                 c: torch.Tensor | None = None, s: torch.Tensor | None = None):
        self.W, self.b, self.sigma = W.to(DTYPE), b.to(DTYPE), float(sigma)
        self.x_dim, self.z_dim = self.W.shape
        eye = torch.eye(self.z_dim, dtype=DTYPE)
        #: the posterior covariance S = (I + WᵀW/σ²)⁻¹, the same for every x
        self.posterior_cov = torch.linalg.inv(eye + self.W.T @ self.W / self.sigma ** 2)
        encoder, decoder = nn.Linear(self.x_dim, 2 * self.z_dim).to(DTYPE), nn.Linear(self.z_dim, self.x_dim).to(DTYPE)
        with torch.no_grad():
            decoder.weight.copy_(self.W)
            decoder.bias.copy_(self.b)
        self.vae = VAE(prior=StandardNormalPrior(self.z_dim).to(DTYPE), guide=DiagonalNormalGuide(self.z_dim, 0.0),
                       likelihood=GaussianLikelihood((self.x_dim,), self.sigma, False, 0.0).to(DTYPE),
                       encoder=encoder, decoder=decoder, x_shape=(self.x_dim,))
        exact = self.exact_guide()
        self.set_guide(exact[0] if A is None else A, exact[1] if c is None else c, exact[2] if s is None else s)

    @classmethod
    def random(cls, x_dim: int = 5, z_dim: int = 2, sigma: float = 0.5, scales=None, seed: int = 0,
               orthogonal: bool = True) -> LinearGaussianVAE:
        """W with orthogonal columns times ``scales`` (a diagonal posterior covariance), or, with
        ``orthogonal=False``, Gaussian entries (a correlated posterior); b ~ N(0, I)."""
        generator = torch.Generator().manual_seed(seed)
        if orthogonal:
            q, _ = torch.linalg.qr(torch.randn(x_dim, x_dim, generator=generator, dtype=DTYPE))
            scales = torch.ones(z_dim, dtype=DTYPE) if scales is None else torch.as_tensor(scales, dtype=DTYPE)
            W = q[:, :z_dim] * scales
        else:
            W = torch.randn(x_dim, z_dim, generator=generator, dtype=DTYPE)
        return cls(W, torch.randn(x_dim, generator=generator, dtype=DTYPE), sigma)

    # -- the guide -------------------------------------------------------------------------------------
    def exact_guide(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A, c, s) of the guide closest to the posterior in its family: A = SWᵀ/σ², c = −Ab give
        the exact posterior mean; s = √diag S, exact when S is diagonal."""
        A = self.posterior_cov @ self.W.T / self.sigma ** 2
        return A, -A @ self.b, self.posterior_cov.diagonal().sqrt()

    def set_guide(self, A: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> None:
        """Set the encoder so that q(z|x) = N(Ax + c, diag s²) (s through the guide's softplus)."""
        A, c, s = A.to(DTYPE), c.to(DTYPE), torch.as_tensor(s, dtype=DTYPE).expand(self.z_dim)
        self.A, self.c, self.s = A, c, s
        with torch.no_grad():
            self.vae.encoder.weight.copy_(torch.cat([A, torch.zeros_like(A)]))
            self.vae.encoder.bias.copy_(torch.cat([c, s.expm1().log()]))  # softplus⁻¹(s)

    def guide_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The guide's mean Ax + c and scale s for each row of ``x``."""
        return x @ self.A.T + self.c, self.s.expand(x.shape[0], self.z_dim)

    # -- the exact quantities ----------------------------------------------------------------------------
    def marginal(self) -> MultivariateNormal:
        """p(x) = N(b, WWᵀ + σ²I)."""
        return MultivariateNormal(self.b, self.W @ self.W.T + self.sigma ** 2 * torch.eye(self.x_dim, dtype=DTYPE))

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), exactly, per row of ``x``."""
        return self.marginal().log_prob(x)

    def posterior(self, x: torch.Tensor) -> MultivariateNormal:
        """p(z|x) = N(SWᵀ(x − b)/σ², S), per row of ``x``."""
        mean = (x - self.b) @ (self.posterior_cov @ self.W.T / self.sigma ** 2).T
        return MultivariateNormal(mean, self.posterior_cov)

    def expected_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[log p(x|z)] in closed form (the formula of the module's description)."""
        mu, s = self.guide_params(x)
        residual = ((x - mu @ self.W.T - self.b) ** 2).sum(-1)
        spread = (s ** 2 * (self.W ** 2).sum(0)).sum(-1)
        return -(residual + spread) / (2 * self.sigma ** 2) - self.x_dim / 2 * math.log(2 * math.pi * self.sigma ** 2)

    def kl_to_prior(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) ‖ N(0, I)), Appendix B (:func:`pyro_vae.bounds.gaussian_kl`)."""
        return gaussian_kl(*self.guide_params(x))

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)), exactly."""
        return self.expected_log_likelihood(x) - self.kl_to_prior(x)

    def kl_to_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) ‖ p(z|x)), exactly: the gap log p(x) − ELBO(x)."""
        mu, s = self.guide_params(x)
        return kl_divergence(MultivariateNormal(mu, torch.diag_embed(s ** 2)), self.posterior(x))
