"""The training loop and its optimizer."""

import pytest
import torch

from pyro_vae.train import NonFiniteLossError, fit, make_adam


def _quadratic_steps(optimizer_factory, steps=20):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(50, 30))
    target = torch.randn(50, 30)
    optimizer = optimizer_factory([w])
    for _ in range(steps):
        optimizer.zero_grad()
        ((w - target) ** 2).sum().backward()
        optimizer.step()
    return w.detach()


def test_fused_adam_is_adam():
    fused = _quadratic_steps(lambda p: make_adam(p, lr=1e-2, eps=1e-4))
    plain = _quadratic_steps(lambda p: torch.optim.Adam(p, lr=1e-2, eps=1e-4))
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    assert make_adam([torch.nn.Parameter(torch.zeros(2))]).defaults["fused"] is True  # CPU has a fused kernel


def test_fit_reports_the_objective_per_image_and_the_learning_rate():
    w = torch.nn.Parameter(torch.zeros(3))
    batches = [torch.ones(4, 3), torch.ones(2, 3)]
    history = fit(lambda x: ((x - w) ** 2).sum(), torch.optim.SGD([w], lr=0.0), lambda: batches, 2,
                  lr_factor=lambda epoch: 1.0, progress=False, verbose=False)
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[0]["train_elbo"] == pytest.approx(-3.0)  # −(4·3 + 2·3) / 6 images
    assert history[0]["lr"] == 0.0


def test_non_finite_loss_stops_training_with_a_clear_error():
    w = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(NonFiniteLossError, match="lower the learning rate"):
        fit(lambda x: (w * float("nan")).sum(), torch.optim.SGD([w], lr=0.1), lambda: [torch.ones(2, 1)], 1,
            progress=False, verbose=False)
