"""Guides: reparameterized samples over leading (K, B) dimensions, the IAF's log-determinant
against autograd, and the full-rank guide's closed-form KL against Monte Carlo and an exact oracle.
(``tests/test_model.py`` checks ``has_rsample`` and that gradients reach the encoder for every guide.)"""

import pytest
import torch
from torch.distributions import Independent, Laplace, MultivariateNormal, Normal, kl_divergence

from pyro_vae import GUIDES, build_vae, make_config
from pyro_vae.bounds import gaussian_kl
from pyro_vae.kl import describe_kl_term, has_closed_form_kl, kl_mvn_diagonal_normal

X_SHAPE = (1, 6, 6)


def small_vae(guide, prior="standard_normal", z_dim=3):
    config = make_config(X_SHAPE, z_dim, prior=prior, guide=guide,
                         options={"net": {"hidden_dims": [16]}, "prior": {"num_components": 4} if prior == "vamp" else {}})
    return build_vae(config)


@pytest.mark.parametrize("guide", GUIDES.names())
def test_guide_handles_particles_and_data_dimensions(guide):
    """Vectorized particles give the encoder images of shape (K, B, ...): q has batch shape (K, B)
    and its log-density is finite at its own reparameterized samples."""
    vae = small_vae(guide)
    q = vae.encode(torch.rand(4, 5, *X_SHAPE))
    assert q.batch_shape == (4, 5) and q.event_shape == (3,)
    z = q.rsample()
    assert z.shape == (4, 5, 3) and z.requires_grad
    assert torch.isfinite(q.log_prob(z)).all()
    assert vae.guide_net.encoder_out_dim(3) == vae.encoder(torch.rand(2, *X_SHAPE)).shape[-1]


def iaf_vae(z_dim=4, depth=3, seed=0):
    torch.manual_seed(seed)
    vae = build_vae(make_config(X_SHAPE, z_dim, guide="iaf", options={
        "net": {"hidden_dims": [16]}, "guide": {"depth": depth, "context_dim": 5, "hidden_dims": [12]}}))
    with torch.no_grad():
        for parameter in vae.guide_net.parameters():  # away from the near-identity initialization
            parameter.add_(0.3 * torch.randn_like(parameter))
    return vae


def test_iaf_log_det_equals_the_autograd_jacobian():
    """Σ_t log|det ∂z_t/∂z_{t−1}| from the transforms equals log|det| of the Jacobian of the whole
    flow z_0 -> z_T computed by autograd, image by image; and log q(z_T|x) is the base density minus
    that log-determinant (change of variables), from the cache and by inverting the flow."""
    vae = iaf_vae()
    q = vae.encode(torch.rand(3, *X_SHAPE))
    assert len(q.transforms) == 3
    with torch.no_grad():
        z0 = q.base_dist.sample()

    def flow(z):
        for transform in q.transforms:  # each conditioned on the three images' contexts
            z = transform(z)
        return z

    jacobian = torch.autograd.functional.jacobian(flow, z0)  # (3, z_dim, 3, z_dim)
    for i in range(3):  # image i's output depends on image i's input only
        for j in range(3):
            if i != j:
                assert jacobian[i, :, j, :].abs().max() == 0
    log_det_autograd = torch.stack([torch.linalg.slogdet(jacobian[i, :, i, :])[1] for i in range(3)])

    log_det, z = 0.0, z0
    for transform in q.transforms:
        z_next = transform(z)
        log_det = log_det + transform.log_abs_det_jacobian(z, z_next)
        z = z_next
    torch.testing.assert_close(log_det, log_det_autograd, rtol=1e-5, atol=1e-5)
    assert log_det_autograd.abs().min() > 1e-2  # far from volume-preserving: the test has teeth
    expected = q.base_dist.log_prob(z0) - log_det_autograd
    torch.testing.assert_close(q.log_prob(z), expected, rtol=1e-5, atol=1e-5)  # cached inverse
    torch.testing.assert_close(q.log_prob(z.clone()), expected, rtol=1e-4, atol=1e-4)  # inverted afresh


def random_full_rank_and_diagonal(seed=0, z_dim=4, batch=(3,)):
    g = torch.Generator().manual_seed(seed)
    scale_tril = torch.randn(*batch, z_dim, z_dim, generator=g, dtype=torch.float64).tril(-1) * 0.5
    scale_tril = scale_tril + torch.diag_embed(torch.rand(*batch, z_dim, generator=g, dtype=torch.float64) + 0.3)
    q = MultivariateNormal(torch.randn(*batch, z_dim, generator=g, dtype=torch.float64), scale_tril=scale_tril)
    p = Independent(Normal(torch.randn(*batch, z_dim, generator=g, dtype=torch.float64) * 0.5,
                           torch.rand(*batch, z_dim, generator=g, dtype=torch.float64) + 0.5), 1)
    return q, p


def test_full_rank_kl_equals_the_exact_gaussian_kl():
    """Against torch's MultivariateNormal-vs-MultivariateNormal KL with Σ_p = diag σ², and against
    the diagonal formula of Appendix B when L is diagonal and p = N(0, I)."""
    q, p = random_full_rank_and_diagonal()
    p_as_mvn = MultivariateNormal(p.base_dist.loc, scale_tril=torch.diag_embed(p.base_dist.scale))
    torch.testing.assert_close(kl_divergence(q, p), kl_divergence(q, p_as_mvn), rtol=1e-10, atol=1e-10)
    diagonal = MultivariateNormal(q.loc, scale_tril=torch.diag_embed(q.scale_tril.diagonal(dim1=-2, dim2=-1)))
    standard = Independent(Normal(torch.zeros_like(q.loc), torch.ones_like(q.loc)), 1)
    torch.testing.assert_close(kl_divergence(diagonal, standard),
                               gaussian_kl(q.loc, q.scale_tril.diagonal(dim1=-2, dim2=-1)), rtol=1e-10, atol=1e-10)


def test_full_rank_kl_equals_its_monte_carlo_estimate():
    """KL = E_q[log q(z) − log p(z)]: the mean over 200,000 draws agrees within 4 standard errors,
    for each of three random pairs."""
    q, p = random_full_rank_and_diagonal(seed=1)
    torch.manual_seed(0)
    z = q.sample((200_000,))
    log_ratio = q.log_prob(z) - p.log_prob(z)
    estimate, standard_error = log_ratio.mean(0), log_ratio.std(0) / 200_000 ** 0.5
    closed_form = kl_divergence(q, p)
    assert ((closed_form - estimate).abs() < 4 * standard_error).all(), (closed_form, estimate, standard_error)
    assert (closed_form > 20 * standard_error).all()  # the KLs are far from 0: the comparison has teeth


def test_full_rank_kl_broadcasts_like_trace_mean_field_asks_it():
    q, _ = random_full_rank_and_diagonal(batch=(2, 3))
    prior = Independent(Normal(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)), 1)
    assert kl_divergence(q, prior.expand((2, 3))).shape == (2, 3)


def test_other_independent_priors_fall_back_to_monte_carlo():
    q, _ = random_full_rank_and_diagonal()
    laplace = Independent(Laplace(torch.zeros(3, 4, dtype=torch.float64), 1.0), 1)
    with pytest.raises(NotImplementedError):
        kl_mvn_diagonal_normal(q, laplace)
    assert not has_closed_form_kl(q, laplace)


@pytest.mark.parametrize("prior,guide,closed", [
    ("standard_normal", "diagonal_normal", True), ("learned_normal", "diagonal_normal", True),
    ("standard_normal", "full_rank", True), ("learned_normal", "full_rank", True),
    ("standard_normal", "iaf", False), ("mixture", "diagonal_normal", False),
    ("vamp", "full_rank", False), ("flow", "diagonal_normal", False),
])
def test_which_pairs_have_a_closed_form_kl(prior, guide, closed):
    """What each docstring states, and what the run's output says (closed form or Monte Carlo)."""
    vae = small_vae(guide, prior)
    with torch.no_grad():
        q, p = vae.encode(torch.rand(2, *X_SHAPE)), vae.prior()
    assert has_closed_form_kl(q, p) is closed
    assert ("closed form (" in describe_kl_term(q, p)) is closed


@pytest.mark.parametrize("stable", [True, False])
def test_affine_step_is_the_transforms_own_map_and_log_det(stable):
    """The pure function the path derivative differentiates is Pyro's step, value and log-determinant."""
    from pyro.distributions import transforms

    from pyro_vae.guides.iaf import affine_step

    torch.manual_seed(0)
    step = transforms.affine_autoregressive(4, [8], stable=stable)
    z = torch.randn(6, 4)
    y, log_det = affine_step(step, z)
    torch.testing.assert_close(y, step(z))
    torch.testing.assert_close(log_det, step.log_abs_det_jacobian(z, step(z)))


def test_flow_path_log_prob_has_the_gradient_of_log_q_at_fixed_parameters():
    """∇_z log q(z) from the flow's forward recursion (no inverse) equals autograd through Pyro's
    inverse of the flow at a new tensor (which never uses the cache), for a perturbed two-step IAF,
    K × B samples. Float64 throughout (Pyro's inverse starts from zeros of the default dtype)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        config = make_config(X_SHAPE, 5, guide="iaf", options={"net": {"hidden_dims": [16]},
                                                                "guide": {"hidden_dims": [12], "context_dim": 3}})
        vae = build_vae(config)
        with torch.no_grad():
            for parameter in vae.guide_net.parameters():
                parameter.add_(0.3 * torch.randn_like(parameter))  # a flow far from the identity
        q = vae.encode(torch.bernoulli(torch.full((4, *X_SHAPE), 0.3))).expand((3, 4))
        z = q.rsample()
        path = q.path_log_prob(z)
        (path_gradient,) = torch.autograd.grad(path.sum(), z)
        fresh = z.detach().clone().requires_grad_()
        reference = q.log_prob(fresh)  # inverts the flow
        (reference_gradient,) = torch.autograd.grad(reference.sum(), fresh)
        torch.testing.assert_close(path, reference.detach(), rtol=0, atol=1e-10)
        torch.testing.assert_close(path_gradient, reference_gradient, rtol=1e-9, atol=1e-9)
        assert reference_gradient.abs().max() > 0.5  # a real gradient, not zeros on both sides
    finally:
        torch.set_default_dtype(default)


def test_fill_tril_is_torchs_row_by_row_layout():
    """The full-rank guide's sync-free tril fill equals ``vec_to_tril_matrix`` (the layout checkpoints hold)."""
    from torch.distributions.utils import vec_to_tril_matrix

    from pyro_vae.guides.full_rank import fill_tril

    entries = torch.randn(2, 3, 10, requires_grad=True)
    torch.testing.assert_close(fill_tril(entries, 4), vec_to_tril_matrix(entries), rtol=0, atol=0)
    fill_tril(entries, 4).sum().backward()
    torch.testing.assert_close(entries.grad, torch.ones_like(entries))


def _perturbed_step(conditional: bool, stable: bool, hidden: list[int], dim: int = 5):
    """A MADE step (Pyro's) in float64, far from the identity, and the step as the flow calls it."""
    from pyro.distributions import transforms

    torch.manual_seed(0)
    if conditional:
        made = transforms.conditional_affine_autoregressive(dim, 3, hidden, stable=stable)
        step, parameters = made.condition(torch.randn(4, 3, dtype=torch.float64)), made
    else:
        step = parameters = transforms.affine_autoregressive(dim, hidden, stable=stable)
    parameters.double()
    with torch.no_grad():
        for parameter in parameters.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return step


def _autograd_jacobian_t(step, z):
    """(Jᵀ[..., j, i] = ∂y_i/∂z_j, ∇_z log abs(det J)) of the step by reverse mode, one output at a time."""
    from pyro_vae.guides import iaf

    z = z.detach().requires_grad_()
    y, log_det = iaf.affine_step(step, z)
    jacobian_t = torch.stack([torch.autograd.grad(y[..., i].sum(), z, retain_graph=True)[0]
                              for i in range(z.shape[-1])], -1)
    return jacobian_t, torch.autograd.grad(log_det.sum(), z)[0]


def _solved_with_autograd(step, z, score):
    """(J⁻ᵀ (score − ∇ log abs(det J)) by a dense solve with autograd's whole Jacobian, that Jᵀ)."""
    jacobian_t, log_det_grad = _autograd_jacobian_t(step, z)
    return torch.linalg.solve(jacobian_t, (score - log_det_grad).unsqueeze(-1)).squeeze(-1), jacobian_t


@pytest.mark.parametrize("hidden", [[12], [12, 10]], ids=["one-hidden-layer", "two-hidden-layers"])
@pytest.mark.parametrize("stable", [True, False], ids=["stable", "plain"])
@pytest.mark.parametrize("conditional", [True, False], ids=["conditional", "unconditional"])
def test_step_jacobian_by_forward_mode_equals_autograd(conditional, stable, hidden):
    """The generic route of the path derivative: ``step_jacobian`` (vmap of jvp) gives the transposed
    Jacobian and ∇ log |det J| of autograd, in the step's autoregressive order, where Jᵀ is upper
    triangular (what the triangular solve relies on)."""
    from pyro_vae.guides import iaf

    step = _perturbed_step(conditional, stable, hidden)
    z = torch.randn(2, 4, 5, dtype=torch.float64)
    order = step.arn.permutation
    reference_t, log_det_reference = _autograd_jacobian_t(step, z)
    jacobian_t, log_det_grad = iaf.step_jacobian(step, z, order)
    torch.testing.assert_close(jacobian_t, reference_t[..., order, :][..., :, order], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(log_det_grad, log_det_reference[..., order], rtol=1e-10, atol=1e-12)
    assert jacobian_t.tril(-1).abs().max() == 0 and reference_t.triu(1).abs().max() > 1e-2


@pytest.mark.parametrize("block", [1, 2, 3, 5, 8, None])
@pytest.mark.parametrize("hidden", [[12], [12, 10], [12, 10, 9]], ids=["1-hidden", "2-hidden", "3-hidden"])
@pytest.mark.parametrize("stable", [True, False], ids=["stable", "plain"])
@pytest.mark.parametrize("conditional", [True, False], ids=["conditional", "unconditional"])
def test_made_step_score_is_the_triangular_solve_with_the_autograd_jacobian(conditional, stable, hidden, block):
    """The MADE step's blockwise solve, g_out = J⁻ᵀ (g_in − ∇ log abs(det J)), equals solving with the
    whole Jacobian of autograd, for blocks of one coordinate, of sizes that do and do not divide
    D = 7, of all of D and more, and the default; and ``step_score`` takes that route for MADE steps."""
    from pyro_vae.guides import iaf

    step = _perturbed_step(conditional, stable, hidden, dim=7)
    z, score = torch.randn(2, 4, 7, dtype=torch.float64), torch.randn(2, 4, 7, dtype=torch.float64)
    reference, jacobian_t = _solved_with_autograd(step, z, score)
    made, context = iaf._made_of(step)
    torch.testing.assert_close(iaf.made_step_score(step, made, context, z, score, block), reference,
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(iaf.step_score(step, z, score), reference, rtol=1e-10, atol=1e-10)
    assert (jacobian_t - torch.diag_embed(jacobian_t.diagonal(dim1=-2, dim2=-1))).abs().max() > 1e-3  # ≫ rtol


def test_step_score_by_forward_mode_for_a_network_that_is_not_made(monkeypatch):
    """A step whose network is not Pyro's MADE takes the generic route (forward-mode Jacobian and
    one triangular solve), with the same result."""
    from pyro_vae.guides import iaf

    step = _perturbed_step(True, True, [12], dim=7)
    z, score = torch.randn(2, 4, 7, dtype=torch.float64), torch.randn(2, 4, 7, dtype=torch.float64)
    reference, _ = _solved_with_autograd(step, z, score)
    monkeypatch.setattr(iaf, "made_step_score", None)  # reaching it would fail
    monkeypatch.setattr(iaf, "_made_of", lambda transform: None)
    torch.testing.assert_close(iaf.step_score(step, z, score), reference, rtol=1e-10, atol=1e-10)
