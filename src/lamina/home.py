"""Where lamina keeps state on this machine: the one function that knows."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/lamina`` (default ``~/.cache/lamina``): the layer cache (``layers/``),
    bases pulled from registries (``images/``) and where blobs were pushed before."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lamina"
