"""Figures a person would rather look at than read: reconstructions, samples, the latent space,
training curves. Each function writes one PNG and returns its path. The figures are
``matplotlib.figure.Figure`` objects, drawn without pyplot: no display is needed, and the caller's
backend (a notebook's inline one, say) is left as it was."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .evaluate import latent_means
from .outputs import atomic_write
from .vae import VAE


def _save(fig: Figure, path: Path) -> Path:
    """Write the figure as a PNG, atomically (:func:`pyro_vae.outputs.atomic_write`)."""
    fig.tight_layout()
    return atomic_write(path, lambda file: fig.savefig(file, format="png", dpi=100))


def _subplots(*args, figsize, **kwargs):
    """A figure of its own (``matplotlib.figure.Figure``, no pyplot): it needs no display, leaves the
    user's backend and open figures alone, and is freed when it goes out of scope."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    from ._torchvision import torchvision

    return torchvision.utils.make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow,
                                       padding=2, pad_value=1.0)


def _show_grid(grid: torch.Tensor, title: str, path: Path, width: float = 8.0) -> Path:
    height = width * grid.shape[1] / grid.shape[2]
    fig, ax = _subplots(figsize=(width, height + 0.5))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    return _save(fig, path)


def plot_reconstructions(vae: VAE, x: torch.Tensor, path: Path, n: int = 16) -> Path:
    """Row 1: inputs x; row 2: E[x|z] with z ~ q(z|x) (the model replayed on the guide's z)."""
    x = x[:n]
    recon = vae.reconstruct(x)
    grid = _grid(torch.cat([x, recon]), nrow=x.shape[0])
    return _show_grid(grid, "top: data x    bottom: reconstruction E[x | z], z ~ q(z|x)", path)


def plot_samples(vae: VAE, path: Path, n: int = 64) -> Path:
    """New images: z ~ p(z), shown as E[x|z]."""
    grid = _grid(vae.sample(n), nrow=int(n ** 0.5))
    return _show_grid(grid, "samples: E[x | z], z ~ p(z)", path, width=6.0)


def plot_latent(vae: VAE, x: torch.Tensor, labels: torch.Tensor | None, path: Path) -> Path:
    """Scatter of E_q[z|x] coloured by label; the first two principal components when z_dim > 2.
    For a model with several stochastic layers, the lowest one, E_q[z1|x] (``vae.encode``).
    Without labels (binarized MNIST has none) the points are coloured by the share of pixels on, a
    property of the image itself, and the title says so."""
    z = latent_means(vae, x, num_samples=64).cpu()
    axis_names = ("z[0]", "z[1]")
    if z.shape[1] > 2:
        z_centered = z - z.mean(0)
        _, s, v = torch.linalg.svd(z_centered, full_matrices=False)
        z = z_centered @ v[:2].T
        explained = (s[:2] ** 2 / (s ** 2).sum()).tolist()
        axis_names = tuple(f"PC{i + 1} ({100 * e:.0f}% of variance)" for i, e in enumerate(explained))
    elif z.shape[1] == 1:
        z = torch.cat([z, torch.zeros_like(z)], dim=1)
    fig, ax = _subplots(figsize=(6.5, 5.5))
    if labels is not None:
        points = ax.scatter(z[:, 0], z[:, 1], c=labels.cpu(), cmap="tab10", s=4, alpha=0.7)
        fig.colorbar(points, ax=ax, label="label")
        title = "latent means E_q[z | x] of test images"
    else:
        ink = x.flatten(1).mean(1).cpu()
        points = ax.scatter(z[:, 0], z[:, 1], c=ink, cmap="viridis", s=4, alpha=0.7)
        fig.colorbar(points, ax=ax, label="share of pixels on")
        title = "latent means E_q[z | x] of test images (no labels: coloured by ink)"
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title)
    return _save(fig, path)


@torch.no_grad()
def plot_manifold(vae: VAE, path: Path, n: int = 20) -> Path:
    """For z_dim = 2: E[x|z] on an n×n grid of z at the prior's quantiles 0.05 .. 0.95
    (the learned manifold figure of Kingma & Welling, arXiv:1312.6114, Fig. 4)."""
    if vae.config["z_dim"] != 2:
        raise ValueError("the manifold plot needs z_dim = 2")
    device = vae.device
    quantiles = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n))
    z1, z0 = torch.meshgrid(quantiles.flip(0), quantiles, indexing="ij")
    z = torch.stack([z0.reshape(-1), z1.reshape(-1)], dim=-1).to(device)
    images = vae.likelihood(vae.decoder(z)).mean
    return _show_grid(_grid(images, nrow=n), "decoded manifold E[x | z] over a grid of z", path)


def plot_elbo(history: Sequence[dict], path: Path, test_elbo: float | None = None) -> Path:
    """Train and validation ELBO (nats per image) against epochs."""
    epochs = [r["epoch"] for r in history]
    fig, ax = _subplots(figsize=(6.5, 4.5))
    ax.plot(epochs, [r["train_elbo"] for r in history], marker="o", label="train ELBO")
    val: list[float] = [r["val_elbo"] for r in history if "val_elbo" in r]
    if len(val) == len(epochs):
        ax.plot(epochs, val, marker="s", label="validation ELBO")
    if test_elbo is not None:
        ax.axhline(test_elbo, color="k", linestyle="--", label="test ELBO (selected model)")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("ELBO (nats per image)")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_sample_panels(vaes: dict[str, VAE], path: Path, n: int = 36, seed: int = 0, ncols: int = 4) -> Path:
    """One panel of new images E[x|z], z ~ p(z), per labelled model (``ncols`` panels a row), each
    drawn with the same ``seed``: how the samples change with the prior and the guide."""
    nrows = -(-len(vaes) // ncols)
    fig, axes = _subplots(nrows, ncols, figsize=(2.8 * ncols, 3.1 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, vae) in zip(axes.flat, vaes.items()):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            grid = _grid(vae.sample(n), nrow=int(n ** 0.5))
        ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", interpolation="nearest")
        ax.set_title(label, fontsize=8)
    fig.suptitle("samples E[x | z], z ~ p(z)")
    return _save(fig, path)


def plot_khat(khats: dict[str, torch.Tensor], path: Path) -> Path:
    """Histogram of the per-image PSIS k̂ of each run; k̂ > 0.7 marks an unreliable log p(x) estimate
    (Yao et al., arXiv:1802.02538)."""
    fig, ax = _subplots(figsize=(6.5, 4.5))
    finite = [k[torch.isfinite(k)] for k in khats.values()]
    low = min([-0.5] + [k.min().item() for k in finite if k.numel()])
    high = max([1.5] + [k.max().item() for k in finite if k.numel()])
    bins = torch.linspace(low, high, 41).tolist()
    for (label, khat), values in zip(khats.items(), finite):
        share = (khat > 0.7).double().mean().item()
        ax.hist(values.numpy(), bins=bins, histtype="step", linewidth=1.5, label=f"{label} ({100 * share:.0f}% > 0.7)")
    ax.axvline(0.7, color="k", linestyle="--", linewidth=1)
    ax.set_xlabel("PSIS k̂ of the importance weights of one test image")
    ax.set_ylabel("test images")
    ax.legend()
    return _save(fig, path)


def plot_bounds_vs_k(bounds: dict[str, dict[int, float]], path: Path) -> Path:
    """E[L_K] against K (log scale) for each model: the ELBO at K = 1 rising towards log p(x)."""
    fig, ax = _subplots(figsize=(6.5, 4.5))
    for label, by_k in bounds.items():
        ks = sorted(int(k) for k in by_k)
        ax.plot(ks, [by_k[k] if k in by_k else by_k[str(k)] for k in ks], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("K (importance samples)")
    ax.set_ylabel("E[L_K] on test images (nats per image)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_training_curves(histories: dict[str, Sequence[dict]], path: Path) -> Path:
    """Training objective and validation ELBO per epoch for each run."""
    fig, axes = _subplots(1, 2, figsize=(11, 4.5), sharex=True)
    for label, history in histories.items():
        epochs = [r["epoch"] for r in history]
        axes[0].plot(epochs, [r["train_elbo"] for r in history], label=label)
        if all("val_elbo" in r for r in history):
            axes[1].plot(epochs, [r["val_elbo"] for r in history], label=label)
    axes[0].set_title("training objective (its own bound)")
    axes[1].set_title("validation ELBO (K = 1)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("nats per image")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_ais_vs_is(importance: torch.Tensor, annealed: torch.Tensor, path: Path, label: str = "IS") -> Path:
    """Per test image, AIS's log p(x) minus importance sampling's: how much the importance-sampled
    estimate (a lower bound in expectation) misses, image by image."""
    difference = (annealed - importance).double()
    fig, axes = _subplots(1, 2, figsize=(11, 4.2))
    axes[0].scatter(importance, annealed, s=8)
    low, high = min(importance.min(), annealed.min()).item(), max(importance.max(), annealed.max()).item()
    axes[0].plot([low, high], [low, high], color="k", linestyle="--", linewidth=1)
    axes[0].set_xlabel(f"log p(x), importance sampling ({label})")
    axes[0].set_ylabel("log p(x), AIS")
    axes[0].set_title("per test image")
    axes[1].hist(difference.numpy(), bins=30)
    axes[1].axvline(0, color="k", linestyle="--", linewidth=1)
    axes[1].set_xlabel("AIS − importance sampling (nats)")
    axes[1].set_ylabel("test images")
    axes[1].set_title(f"mean {difference.mean().item():+.2f} nats")
    return _save(fig, path)


def plot_bdmc(sandwiches: Sequence[dict], path: Path) -> Path:
    """The BDMC bounds on simulated images (mean lower and upper bound ± standard error) against
    the number of AIS steps: the sandwich closing on log p(x)."""
    steps = [s["steps"] for s in sandwiches]
    fig, ax = _subplots(figsize=(6.5, 4.5))
    for key, name in (("upper", "reverse AIS (upper bound)"), ("lower", "forward AIS (lower bound)")):
        ax.errorbar(steps, [s[key]["mean"] for s in sandwiches], yerr=[s[key]["stderr"] or 0 for s in sandwiches],
                    marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("AIS steps")
    ax.set_ylabel("log p(x) of simulated images (nats per image)")
    ax.set_title("BDMC sandwich")
    ax.legend()
    return _save(fig, path)
