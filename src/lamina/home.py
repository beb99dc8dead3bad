"""Where lamina keeps state on this machine: the one function that knows."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def cache_root() -> str:
    """``$XDG_CACHE_HOME/lamina`` (default ``~/.cache/lamina``), as text: what lamina.quickcheck
    reads before pathlib is loaded."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lamina")


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/lamina``: the layer cache (``layers/``), bases pulled from registries
    (``images/``) and where blobs were pushed before."""
    from pathlib import Path

    return Path(cache_root())
