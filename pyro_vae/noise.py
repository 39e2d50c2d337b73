"""Keyed random numbers: every draw of a run is a function of (seed, what it is for, where it is).

A run's random numbers are not taken from one global stream but drawn from generators seeded by
a *key*: the run's seed, the purpose of the draw (:data:`PERMUTATION`, :data:`BINARIZATION`,
:data:`GUIDE_NOISE`, :data:`EVALUATION`) and its place (epoch, step, image rows, evaluation
batch). So a training step draws the same noise for the same images however the global batch is
split over processes, a run resumed at another number of processes continues the same way, and
an evaluation sharded over processes gives per image what it gives in one process.

* Rows of images: the noise of rows ``start .. stop`` of a step's global batch is cut from blocks
  of :data:`BLOCK` rows, block b drawn from a generator seeded by ``key + (b,)``
  (:func:`keyed_rows`); a process draws only the blocks its rows fall in, never the whole batch.
* The guide's ε: :class:`GuideNoise`, a Pyro messenger on the latent sites (``"z"``; ``"z1"``, ``"z2"``,
  .. each with its own stream), reparameterizes the guide's q(z|x) with given standard normal noise,
  z = g(ε) (:func:`pyro_vae.annealing.noise_map`, which
  covers every guide of the library, flows included, Kingma & Welling arXiv:1312.6114 Sec. 2.4).
  A flow's transforms run forward and cache (ε-side, z) pairs, so its ``log_prob(z)`` needs no
  inverse, as with ``rsample``.
* Evaluation: each batch of images draws from the global generator reseeded by ``(seed, batch)``
  (:func:`seeded`), inside ``fork_rng`` so no other stream moves.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections.abc import Iterator, Sequence

import torch
from pyro.poutine.messenger import Messenger

#: Purposes of draws (the second entry of every key).
PERMUTATION, BINARIZATION, GUIDE_NOISE, EVALUATION, VALIDATION = range(5)
#: Rows per independently seeded block of noise.
BLOCK = 64

_GENERATORS: dict[torch.device, torch.Generator] = {}


def derive_seed(*key: int) -> int:
    """A 63-bit seed from a tuple of integers (BLAKE2b of their 64-bit encodings): distinct keys
    give unrelated seeds."""
    data = struct.pack(f"<{len(key)}q", *key)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def generator(key: Sequence[int], device: torch.device | str) -> torch.Generator:
    """A generator on ``device`` seeded by ``key`` (one reused object per device; seeding it is
    cheap and reads nothing back from the device)."""
    device = torch.device(device)
    gen = _GENERATORS.get(device)
    if gen is None:
        gen = _GENERATORS[device] = torch.Generator(device=device)
    return gen.manual_seed(derive_seed(*key))


def permutation(n: int, key: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """A random permutation of ``range(n)`` on ``device``, the same for the same key."""
    return torch.randperm(n, generator=generator(key, device), device=device)


def keyed_rows(key: Sequence[int], start: int, stop: int, event: Sequence[int] = (), lead: Sequence[int] = (),
               *, normal: bool, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows ``start .. stop`` of an array of noise of shape ``(*lead, rows, *event)`` (standard
    normal with ``normal``, else uniform on [0, 1)): row r is row ``r % BLOCK`` of block
    ``r // BLOCK``, drawn from :func:`generator` of ``key + (block,)``. The result does not depend
    on how the rows are split between callers."""
    lead, event = tuple(lead), tuple(event)
    if stop <= start:
        return torch.empty(*lead, 0, *event, device=device, dtype=dtype)
    first, last = start // BLOCK, (stop - 1) // BLOCK
    draw = torch.randn if normal else torch.rand
    blocks = [draw(*lead, BLOCK, *event, generator=generator((*key, block), device), device=device, dtype=dtype)
              for block in range(first, last + 1)]
    rows = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=len(lead))
    return rows.narrow(len(lead), start - first * BLOCK, stop - start)


def binarize_rows(intensity: torch.Tensor, key: Sequence[int], start: int) -> torch.Tensor:
    """x ~ Bernoulli(intensity) for rows ``start ..`` of a keyed batch: x = 1[u < intensity] with
    u ~ U[0, 1) from :func:`keyed_rows`."""
    u = keyed_rows(key, start, start + intensity.shape[0], intensity.shape[1:], normal=False,
                   device=intensity.device, dtype=intensity.dtype)
    return (u < intensity).to(intensity.dtype)


class StepNoise:
    """Where the current training step's guide noise comes from: its key and the rows of the
    global batch that this process holds (set by the batches, read by :class:`GuideNoise`)."""

    def __init__(self):
        self.key: tuple[int, ...] | None = None
        self.start = 0

    def eps(self, batch_shape: torch.Size, event_shape: torch.Size, device, dtype, stream: int = 0) -> torch.Tensor:
        """Standard normal noise for a site of ``batch_shape`` (``(particles, rows)`` or ``(rows,)``);
        ``stream`` numbers the latent site (0: the first, ``"z"`` or ``"z1"``; the key of stream s > 0
        ends in s, so each site of a hierarchical model has its own noise)."""
        rows = batch_shape[-1]
        key = (*self.key, GUIDE_NOISE) if stream == 0 else (*self.key, GUIDE_NOISE, stream)
        return keyed_rows(key, self.start, self.start + rows, event_shape, batch_shape[:-1],
                          normal=True, device=device, dtype=dtype)


class GuideNoise(Messenger):
    """Draw the guide's latent sites from given noise: for a site in ``sites`` that no other handler
    has already set (the model's replayed z, an observed site), z = g(ε) with ε from
    ``noise.eps`` and g the guide's reparameterization (:func:`pyro_vae.annealing.noise_map`).
    The value stays differentiable in q's parameters, as ``rsample`` is."""

    def __init__(self, noise: StepNoise, sites: Sequence[str] = ("z",)):
        super().__init__()
        self.noise, self.sites = noise, tuple(sites)

    def _pyro_sample(self, msg) -> None:
        if msg["name"] not in self.sites or msg["is_observed"] or msg["done"] or msg["value"] is not None \
                or self.noise.key is None:
            return
        from .annealing import noise_map

        fn = msg["fn"]
        loc = _a_tensor(fn)
        eps = self.noise.eps(fn.batch_shape, fn.event_shape, loc.device, loc.dtype, self.sites.index(msg["name"]))
        # a distribution that keeps state about its own samples (the flow guide's chain, which its
        # path derivative needs) reparameterizes itself; the others through the generic map
        reparameterize = getattr(fn, "reparameterize", None)
        msg["value"] = reparameterize(eps) if reparameterize is not None else noise_map(fn)(eps)[0]
        msg["done"] = True


def _a_tensor(fn) -> torch.Tensor:
    """A parameter tensor of a distribution (for its device and dtype)."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    for name in ("loc", "scale_tril", "scale"):
        if hasattr(fn, name):
            return getattr(fn, name)
    raise TypeError(f"cannot find the parameters of a {type(fn).__name__}")


@contextlib.contextmanager
def seeded(key: Sequence[int], device: torch.device | str) -> Iterator[None]:
    """The global generators of the CPU (and of ``device``, if a GPU) seeded by ``key`` while the
    block runs, and restored after it."""
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    seed = derive_seed(*key)
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield
