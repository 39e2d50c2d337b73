"""Import torchvision even where its C++ extension cannot load.

Why this exists: the CPU-only torch of our CI (``torch==2.13.0+cpu``) pairs with a torchvision wheel
(0.28.0) that is a CUDA build. Its ``_C`` extension fails to load, and torchvision's import then
dies in ``_meta_registrations.py`` with ``RuntimeError: operator torchvision::nms does not exist``,
because ``torch.library.register_fake`` needs the operator's *schema* to exist.

We need none of torchvision's compiled operators (NMS, RoI pooling, ...), only its pure-Python
parts: ``torchvision.datasets`` (MNIST with its download-and-checksum path), ``transforms`` and
``utils.make_grid`` / ``save_image``. So, only when the plain import fails in that precise way, we
declare the schemas of the two operators that ``register_fake`` touches (``nms`` and ``qnms``,
without kernels) and import again. Calling those operators would still raise, which is right.

Where the plain import works (a matching torch/torchvision pair, e.g. the GPU machine), this module
does nothing: :data:`PATCHED` stays ``False``.
"""

from __future__ import annotations

import sys

import torch

#: True when the missing-operator workaround had to be applied in this process.
PATCHED = False

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # kept alive: a torch.library.Library deregisters its ops when collected


def _declare_missing_schemas() -> None:
    global _library
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in _SCHEMAS.items():
        if not hasattr(torch.ops.torchvision, name):  # AttributeError -> False: not declared
            _library.define(schema)


def import_torchvision():
    """Return the ``torchvision`` module, applying the schema workaround only if needed."""
    global PATCHED
    if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "utils"):
        return sys.modules["torchvision"]
    try:
        import torchvision
    except RuntimeError as error:
        if "torchvision::" not in str(error) or "does not exist" not in str(error):
            raise
        # Drop the half-imported package and try again with the schemas declared.
        for module in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[module]
        _declare_missing_schemas()
        PATCHED = True
        import torchvision
    return torchvision


torchvision = import_torchvision()
