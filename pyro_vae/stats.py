"""Summary statistics of per-image results: means, standard errors, paired differences.

Every standard error in the library comes from :func:`mean_and_stderr`: the sample standard
deviation (with Bessel's correction) over √n. Over test images it measures how much the mean would
move with another draw of test images; over seeds, how much it would move with another training run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def mean_and_stderr(values: torch.Tensor | Sequence[float]) -> tuple[float, float]:
    """(mean, s / √n) of ``values`` in float64; the standard error is NaN for fewer than two values."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = values.numel()
    if n == 0:
        raise ValueError("mean_and_stderr of no values")
    stderr = (values.std(unbiased=True) / math.sqrt(n)).item() if n > 1 else float("nan")
    return values.mean().item(), stderr


def paired_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean of a − b over the same items (e.g. per-image log-likelihoods of two models on the same
    test images) and its standard error. Pairing removes the spread between images, which both
    models share, so the error is that of the difference alone."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise ValueError(f"a paired difference needs results on the same items; got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    return mean_and_stderr(a.double() - b.double())
