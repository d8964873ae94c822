"""The float network an artifact was quantized from, rebuilt from its metadata (the emulator needs it)."""

from __future__ import annotations

from typing import Any

from torch import nn

from logmac.format.artifact import Artifact
from logmac.models import UnknownModelError, load_model
from logmac.models.house import HOUSE_BUILDERS, load_house
from logmac.quant.fold import fold_batchnorm
from logmac.sim.layers import EmulatorError


def build_float_model(artifact: Artifact) -> nn.Module:
    """The float network named in ``artifact.meta['model']`` with BatchNorm folded as the artifact records."""
    name = artifact.meta.get("model")
    if not name:
        raise EmulatorError("the artifact names no model (meta.model); pass the float model to the emulator")
    recorded: dict[str, Any] = artifact.meta.get("folded_bn", {})
    if name in HOUSE_BUILDERS:
        model = load_house(name).eval()
    else:
        try:
            model = load_model(name, device="cpu").model
        except (UnknownModelError, FileNotFoundError) as exc:
            raise EmulatorError(f"cannot rebuild model {name!r} ({exc}); pass the float model to the emulator") from exc
    folded = fold_batchnorm(model) if recorded or name in HOUSE_BUILDERS else {}
    if recorded and folded != recorded:
        raise EmulatorError(f"BatchNorm folding of {name} differs from the artifact's record: {folded} vs {recorded}")
    return model
