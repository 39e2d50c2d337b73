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


class LinearGaussianChain:
    """The two-layer linear-Gaussian model, still exact (a Gaussian chain):

        z2 ~ N(0, I_{d2}),   z1 | z2 ~ N(W2 z2 + b2, τ² I_{d1}),   x | z1 ~ N(W1 z1 + b1, σ² I_D).

    In closed form, with C1 = W2W2ᵀ + τ²I the covariance of z1,

    * the evidence p(x) = N(x; W1 b2 + b1, W1 C1 W1ᵀ + σ²I);
    * the posterior p(z1, z2 | x), by conditioning the joint Gaussian of (z1, z2, x) on x;
    * since z2 ⟂ x | z1, p(z1, z2|x) = p(z1|x) p(z2|z1) with p(z1|x) = N(S1(C1⁻¹ b2 + W1ᵀ(x − b1)/σ²), S1),
      S1 = (C1⁻¹ + W1ᵀW1/σ²)⁻¹, and p(z2|z1) = N(S2 W2ᵀ(z1 − b2)/τ², S2), S2 = (I + W2ᵀW2/τ²)⁻¹:
      the bottom-up guide q(z1|x) q(z2|z1) of :class:`~pyro_vae.hierarchical.HierarchicalVAE`, with
      linear maps, represents it exactly when S1 and S2 are diagonal (:meth:`random` makes them so).

    The linear guide q(z1|x) = N(A1 x + c1, diag s1²), q(z2|z1) = N(A2 z1 + c2, diag s2²) is jointly
    Gaussian, so its ELBO (:meth:`elbo`, from the expected log densities) and KL(q ‖ p(z1, z2|x))
    (:meth:`kl_to_posterior`) are exact too, and log p(x) − ELBO = KL(q ‖ p(z1, z2|x)).
    ``vae`` is the library's :class:`~pyro_vae.hierarchical.HierarchicalVAE` computing the same model.
    """

    def __init__(self, W1: torch.Tensor, b1: torch.Tensor, sigma: float, W2: torch.Tensor, b2: torch.Tensor,
                 tau: float):
        from .hierarchical import GaussianLayer, HierarchicalVAE

        self.W1, self.b1, self.W2, self.b2 = (t.to(DTYPE) for t in (W1, b1, W2, b2))
        self.sigma, self.tau = float(sigma), float(tau)
        (self.x_dim, self.z1_dim), self.z2_dim = self.W1.shape, self.W2.shape[1]
        d1, d2 = self.z1_dim, self.z2_dim
        guide1, guide2 = DiagonalNormalGuide(d1, 0.0), DiagonalNormalGuide(d2, 0.0)
        encoder1, encoder2 = nn.Linear(self.x_dim, 2 * d1).to(DTYPE), nn.Linear(d1, 2 * d2).to(DTYPE)
        decoder = nn.Linear(d1, self.x_dim).to(DTYPE)
        upper_prior = GaussianLayer(d2, d1, [], "tanh", 0.0).to(DTYPE)  # no hidden layer: one linear map
        likelihood = GaussianLikelihood((self.x_dim,), self.sigma, False, 0.0).to(DTYPE)
        with torch.no_grad():
            decoder.weight.copy_(self.W1)
            decoder.bias.copy_(self.b1)
            likelihood.x_scale_raw.fill_(math.log(math.expm1(self.sigma)))
            layer = upper_prior.net[0]
            layer.weight.zero_()
            layer.weight[:d1] = self.W2
            layer.bias.copy_(torch.cat([self.b2, torch.full((d1,), math.log(math.expm1(self.tau)), dtype=DTYPE)]))
        self.vae = HierarchicalVAE(StandardNormalPrior(d2).to(DTYPE), guide1, likelihood, encoder1, decoder,
                                   (self.x_dim,), [guide2], [encoder2], [upper_prior])
        self.set_guide(*self.exact_guide())

    @classmethod
    def random(cls, x_dim: int = 5, z1_dim: int = 3, z2_dim: int = 2, sigma: float = 0.5, tau: float = 0.6,
               seed: int = 0) -> LinearGaussianChain:
        """W1 with orthogonal columns (scaled), W2 = scaled columns of the identity: then C1, S1 and S2
        are diagonal and the diagonal bottom-up guide can be exact."""
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(x_dim, x_dim, generator=g, dtype=DTYPE))
        W1 = q[:, :z1_dim] * torch.linspace(1.8, 0.6, z1_dim, dtype=DTYPE)
        W2 = torch.eye(z1_dim, z2_dim, dtype=DTYPE) * torch.linspace(1.5, 0.8, z2_dim, dtype=DTYPE)
        return cls(W1, torch.randn(x_dim, generator=g, dtype=DTYPE), sigma, W2,
                   torch.randn(z1_dim, generator=g, dtype=DTYPE), tau)

    # -- the exact quantities ----------------------------------------------------------------------------
    @property
    def z1_cov(self) -> torch.Tensor:
        """C1 = W2W2ᵀ + τ²I, the covariance of z1 under p."""
        return self.W2 @ self.W2.T + self.tau ** 2 * torch.eye(self.z1_dim, dtype=DTYPE)

    def marginal(self) -> MultivariateNormal:
        """p(x) = N(W1 b2 + b1, W1 C1 W1ᵀ + σ²I)."""
        cov = self.W1 @ self.z1_cov @ self.W1.T + self.sigma ** 2 * torch.eye(self.x_dim, dtype=DTYPE)
        return MultivariateNormal(self.W1 @ self.b2 + self.b1, cov)

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        return self.marginal().log_prob(x)

    def posterior(self, x: torch.Tensor) -> MultivariateNormal:
        """p(z1, z2 | x) over the concatenation [z1, z2]: the joint Gaussian of (z, x) conditioned on x."""
        d2 = self.z2_dim
        # z = [z1, z2]: mean [b2, 0], covariance [[C1, W2], [W2ᵀ, I]]
        mean_z = torch.cat([self.b2, torch.zeros(d2, dtype=DTYPE)])
        cov_z = torch.cat([torch.cat([self.z1_cov, self.W2], 1),
                           torch.cat([self.W2.T, torch.eye(d2, dtype=DTYPE)], 1)], 0)
        H = torch.cat([self.W1, torch.zeros(self.x_dim, d2, dtype=DTYPE)], 1)  # x = H z + b1 + σ ε
        cov_x = H @ cov_z @ H.T + self.sigma ** 2 * torch.eye(self.x_dim, dtype=DTYPE)
        gain = cov_z @ H.T @ torch.linalg.inv(cov_x)
        mean = mean_z + (x - H @ mean_z - self.b1) @ gain.T
        cov = cov_z - gain @ H @ cov_z
        return MultivariateNormal(mean, 0.5 * (cov + cov.T))

    def exact_guide(self) -> tuple[torch.Tensor, ...]:
        """(A1, c1, s1, A2, c2, s2) of the bottom-up guide p(z1|x) p(z2|z1) (diagonal parts of the
        covariances: exact when they are diagonal)."""
        C1_inv = torch.linalg.inv(self.z1_cov)
        S1 = torch.linalg.inv(C1_inv + self.W1.T @ self.W1 / self.sigma ** 2)
        A1 = S1 @ self.W1.T / self.sigma ** 2
        c1 = S1 @ C1_inv @ self.b2 - A1 @ self.b1
        S2 = torch.linalg.inv(torch.eye(self.z2_dim, dtype=DTYPE) + self.W2.T @ self.W2 / self.tau ** 2)
        A2 = S2 @ self.W2.T / self.tau ** 2
        return A1, c1, S1.diagonal().sqrt(), A2, -A2 @ self.b2, S2.diagonal().sqrt()

    def set_guide(self, A1, c1, s1, A2, c2, s2) -> None:
        """Set the two linear encoders: q(z1|x) = N(A1 x + c1, diag s1²), q(z2|z1) = N(A2 z1 + c2, diag s2²)."""
        self.guide = tuple(torch.as_tensor(t, dtype=DTYPE) for t in (A1, c1, s1, A2, c2, s2))
        A1, c1, s1, A2, c2, s2 = self.guide
        with torch.no_grad():
            for encoder, A, c, s in ((self.vae.encoder, A1, c1, s1), (self.vae.upper_encoders[0], A2, c2, s2)):
                encoder.weight.zero_()
                encoder.weight[: len(c)] = A
                encoder.bias.copy_(torch.cat([c, s.expm1().log()]))

    def guide_distribution(self, x: torch.Tensor) -> MultivariateNormal:
        """q(z1, z2 | x) over [z1, z2]: mean [μ1, A2 μ1 + c2], covariance [[Σ1, Σ1A2ᵀ], [A2Σ1, A2Σ1A2ᵀ + diag s2²]]."""
        A1, c1, s1, A2, c2, s2 = self.guide
        mu1 = x @ A1.T + c1
        S1 = torch.diag(s1 ** 2)
        cov = torch.cat([torch.cat([S1, S1 @ A2.T], 1), torch.cat([A2 @ S1, A2 @ S1 @ A2.T + torch.diag(s2 ** 2)], 1)])
        return MultivariateNormal(torch.cat([mu1, mu1 @ A2.T + c2], -1), cov)

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """ELBO(x) = E_q[log p(x|z1) + log p(z1|z2) + log p(z2)] + H[q], each expectation of a Gaussian
        log density of an affine function r = Mz − v of z ~ q: −(‖M m − v‖² + tr(M Σ Mᵀ))/(2 var) − (n/2) log 2π var."""
        q = self.guide_distribution(x)
        m, cov = q.loc, q.covariance_matrix
        d1, d2 = self.z1_dim, self.z2_dim

        def expected(M: torch.Tensor, v: torch.Tensor, var: float) -> torch.Tensor:
            residual = ((m @ M.T - v) ** 2).sum(-1)
            return -(residual + (M @ cov @ M.T).diagonal(dim1=-2, dim2=-1).sum(-1)) / (2 * var) - M.shape[0] / 2 * math.log(2 * math.pi * var)

        zeros = torch.zeros
        x_term = expected(torch.cat([self.W1, zeros(self.x_dim, d2, dtype=DTYPE)], 1), x - self.b1, self.sigma ** 2)
        z1_term = expected(torch.cat([torch.eye(d1, dtype=DTYPE), -self.W2], 1), self.b2, self.tau ** 2)
        z2_term = expected(torch.cat([zeros(d2, d1, dtype=DTYPE), torch.eye(d2, dtype=DTYPE)], 1),
                           zeros(d2, dtype=DTYPE), 1.0)
        return x_term + z1_term + z2_term + q.entropy()

    def kl_to_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q(z1, z2|x) ‖ p(z1, z2|x)), exactly."""
        return kl_divergence(self.guide_distribution(x), self.posterior(x))
