"""The linear-Gaussian VAE: the one VAE where everything of the derivation is exact.

Model: z ~ N(0, I_d), x | z ~ N(Wz + b, σ² I_D). Then, in closed form,

* the evidence is p(x) = N(x; b, WWᵀ + σ²I);
* the posterior is p(z|x) = N(m(x), S) with S = (I + WᵀW/σ²)⁻¹ and m(x) = S Wᵀ(x − b)/σ²;
* for the linear guide q(z|x) = N(Ax + c, diag s²), with μ = Ax + c,

      E_q[log p(x|z)] = −(‖x − Wμ − b‖² + Σ_j s_j² ‖W_{:,j}‖²)/(2σ²) − (D/2) log 2πσ²,
      ELBO = E_q[log p(x|z)] − KL(q ‖ p(z))   and   log p(x) − ELBO = KL(q ‖ p(z|x)).

It is built from the library's own pieces (the standard normal prior, the diagonal or full-rank
Gaussian guide, the Gaussian likelihood, linear networks), in float64, so the tests use it as the oracle of the Pyro
model and guide, and the tutorials to show the derivation's identities holding to rounding. Where
WᵀW is diagonal (orthogonal columns of W) the posterior covariance is diagonal and the diagonal
guide can equal the posterior exactly (:meth:`LinearGaussianVAE.exact_guide`); otherwise the
posterior is correlated, the full-rank guide can still equal it, and the best diagonal guide misses
it by a KL divergence known in closed form.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

from .bounds import gaussian_kl
from .guides import DiagonalNormalGuide, FullRankNormalGuide
from .likelihoods import GaussianLikelihood
from .priors import StandardNormalPrior
from .vae import VAE

DTYPE = torch.float64


class LinearGaussianVAE:
    """The linear-Gaussian model with weights ``W`` (D × d), offset ``b`` (D,) and noise ``sigma``,
    and a linear Gaussian guide (:meth:`set_guide`; by default the best of its family, :meth:`exact_guide`):
    with ``full_rank=False`` the diagonal guide N(Ax + c, diag s²), with ``full_rank=True`` the
    full-rank guide N(Ax + c, LLᵀ), which can equal the posterior whatever W is. ``vae`` is the
    :class:`~pyro_vae.vae.VAE` of the library that computes the same model with Pyro."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor, sigma: float, A: torch.Tensor | None = None,
                 c: torch.Tensor | None = None, s: torch.Tensor | None = None, full_rank: bool = False):
        self.W, self.b, self.sigma = W.to(DTYPE), b.to(DTYPE), float(sigma)
        self.x_dim, self.z_dim = self.W.shape
        self.full_rank = full_rank
        eye = torch.eye(self.z_dim, dtype=DTYPE)
        #: the posterior covariance S = (I + WᵀW/σ²)⁻¹, the same for every x
        self.posterior_cov = torch.linalg.inv(eye + self.W.T @ self.W / self.sigma ** 2)
        guide = FullRankNormalGuide(self.z_dim, 0.0) if full_rank else DiagonalNormalGuide(self.z_dim, 0.0)
        encoder = nn.Linear(self.x_dim, guide.encoder_out_dim(self.z_dim)).to(DTYPE)
        decoder = nn.Linear(self.z_dim, self.x_dim).to(DTYPE)
        likelihood = GaussianLikelihood((self.x_dim,), self.sigma, False, 0.0).to(DTYPE)
        with torch.no_grad():
            decoder.weight.copy_(self.W)
            decoder.bias.copy_(self.b)
            likelihood.x_scale_raw.fill_(math.log(math.expm1(self.sigma)))  # σ exactly, in float64
        self.vae = VAE(prior=StandardNormalPrior(self.z_dim).to(DTYPE), guide=guide, likelihood=likelihood,
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
    @property
    def posterior_precision(self) -> torch.Tensor:
        """Λ = S⁻¹ = I + WᵀW/σ²."""
        return torch.eye(self.z_dim, dtype=DTYPE) + self.W.T @ self.W / self.sigma ** 2

    def exact_guide(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A, c, s) of the guide closest to the posterior in its family (closest in KL(q ‖ p(z|x))):
        A = SWᵀ/σ², c = −Ab give the exact posterior mean. For the full-rank guide s is the Cholesky
        factor of S (exact); for the diagonal one s_j = 1/√Λ_jj, the precisions of the best
        diagonal Gaussian being the diagonal of the posterior precision (exact when S is diagonal)."""
        A = self.posterior_cov @ self.W.T / self.sigma ** 2
        if self.full_rank:
            return A, -A @ self.b, torch.linalg.cholesky(self.posterior_cov)
        return A, -A @ self.b, self.posterior_precision.diagonal().rsqrt()

    def set_guide(self, A: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> None:
        """Set the encoder so that q(z|x) = N(Ax + c, diag s²), or with the full-rank guide
        N(Ax + c, ssᵀ) for a lower-triangular s (through the guides' own parameterization)."""
        A, c, s = A.to(DTYPE), c.to(DTYPE), torch.as_tensor(s, dtype=DTYPE)
        self.A, self.c = A, c
        if self.full_rank:
            rows, cols = torch.tril_indices(self.z_dim, self.z_dim)
            raw = s * math.sqrt(self.z_dim)  # the guide divides the off-diagonal by √d
            raw.diagonal().copy_(s.diagonal().expm1().log())  # softplus⁻¹ of the diagonal
            self.s, scale_bias = s, raw[rows, cols]
        else:
            self.s = s.expand(self.z_dim)
            scale_bias = self.s.expm1().log()  # softplus⁻¹(s)
        with torch.no_grad():
            self.vae.encoder.weight.zero_()
            self.vae.encoder.weight[: self.z_dim] = A
            self.vae.encoder.bias.copy_(torch.cat([c, scale_bias]))

    def guide_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The guide's mean Ax + c and its scale (s, or the Cholesky factor) for each row of ``x``."""
        return x @ self.A.T + self.c, self.s.expand(x.shape[0], *self.s.shape)

    def guide_distribution(self, x: torch.Tensor) -> MultivariateNormal:
        mu, s = self.guide_params(x)
        return MultivariateNormal(mu, scale_tril=s if self.full_rank else torch.diag_embed(s))

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
        """E_q[log p(x|z)] in closed form: −(‖x − Wμ − b‖² + tr(W Σ_q Wᵀ))/(2σ²) − (D/2) log 2πσ²."""
        q = self.guide_distribution(x)
        residual = ((x - q.loc @ self.W.T - self.b) ** 2).sum(-1)
        spread = (self.W @ q.covariance_matrix @ self.W.T).diagonal(dim1=-2, dim2=-1).sum(-1)
        return -(residual + spread) / (2 * self.sigma ** 2) - self.x_dim / 2 * math.log(2 * math.pi * self.sigma ** 2)

    def kl_to_prior(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) ‖ N(0, I)): Appendix B (:func:`pyro_vae.bounds.gaussian_kl`) for the diagonal guide."""
        if not self.full_rank:
            return gaussian_kl(*self.guide_params(x))
        q = self.guide_distribution(x)
        zeros = torch.zeros_like(q.loc)
        return kl_divergence(q, MultivariateNormal(zeros, torch.eye(self.z_dim, dtype=DTYPE)))

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)), exactly."""
        return self.expected_log_likelihood(x) - self.kl_to_prior(x)

    def kl_to_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) ‖ p(z|x)), exactly: the gap log p(x) − ELBO(x)."""
        return kl_divergence(self.guide_distribution(x), self.posterior(x))
