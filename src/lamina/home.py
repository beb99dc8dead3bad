"""Where lamina keeps state on this machine: the one function that knows."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
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


def remove_files(root: Path, counted: Callable[[str], bool]) -> tuple[int, int]:
    """Forget one kind of state: remove the regular files directly in ``root`` (nothing
    followed, nothing below); (how many of them ``counted`` names, bytes freed)."""
    count, freed = 0, 0
    try:
        names = os.listdir(root)
    except OSError:
        return 0, 0
    for name in names:
        path = os.path.join(root, name)
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                os.unlink(path)
                freed += st.st_size
                count += counted(name)
    return count, freed
