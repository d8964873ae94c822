"""Where logmac writes what the user did not name: one documented home, never the working directory."""

from __future__ import annotations

import os
from pathlib import Path


def results_home() -> Path:
    """``$LOGMAC_HOME`` if set, else ``$XDG_DATA_HOME/logmac`` (``~/.local/share/logmac``): results CSVs and reports."""
    if os.environ.get("LOGMAC_HOME"):
        return Path(os.environ["LOGMAC_HOME"])
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "logmac"
