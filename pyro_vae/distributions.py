"""What the pieces' own distribution objects share (the guide's :class:`DiagonalNormal`, the prior's
:class:`StandardNormal`, the likelihood's :class:`IndependentBernoulli`): each is a Pyro
distribution, ``Independent`` over Pyro's ``Normal`` or ``Bernoulli``, with a cheaper
``log_prob`` than the generic one; tests/test_speed_paths.py holds each to the generic numbers."""

from __future__ import annotations

import math

import torch

#: ½ log 2π, the normalizing constant of one standard normal coordinate.
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class KeepsShape:
    """``expand`` to the batch shape a distribution already has returns the distribution itself.

    Pyro's plates expand every site's distribution to the plates' shape, also when it already has
    it (the guide's q(z|x) and the likelihood inside the data plate), and ``torch.distributions``
    builds a new object each time; a distribution is immutable, so the same object will do.
    Put it before the distribution class: ``class D(KeepsShape, dist.Independent)``."""

    def expand(self, batch_shape, _instance=None):
        """The distribution with batch shape ``batch_shape``: itself if it has it already."""
        if _instance is None and torch.Size(batch_shape) == self.batch_shape:
            return self
        return super().expand(batch_shape, self._get_checked_instance(type(self), _instance))
