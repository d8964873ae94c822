"""Import torchvision (and so timm) on a CPU torch that got torchvision's CUDA wheel.

The torchvision wheel pinned in ``constraints.txt`` is a CUDA build; its compiled ops (``_C.so``) do not
load against the CPU torch, and ``import torchvision`` then dies registering fake kernels for
``torchvision::nms`` and ``torchvision::qnms``, ops that were never defined. logmac uses only torchvision's
pure-Python model classes and transforms, so defining those two schemas is enough for the import to
succeed. Calling the compiled ops (``torchvision.ops.nms``...) still raises torchvision's own clear error.

On a proper install the first import succeeds and this module changes nothing.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch

# Schemas of the ops that torchvision's ``_meta_registrations`` registers fake kernels for unconditionally.
_MISSING_OP_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library: torch.library.Library | None = None  # kept alive: dropping a Library removes its definitions


def import_torchvision() -> ModuleType:
    """Return the ``torchvision`` module, defining the missing op schemas first if its import needs them."""
    global _library
    try:
        import torchvision
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        # The failed import left half-initialised modules behind; drop them so the retry starts clean.
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _MISSING_OP_SCHEMAS:
            _library.define(schema)
        import torchvision
    return torchvision


def import_timm() -> ModuleType:
    """Return the ``timm`` module; timm imports torchvision, so that goes through :func:`import_torchvision`."""
    import_torchvision()
    import timm

    return timm
