"""Where lamina keeps state on this machine (the one function that knows), and how its
files there are read and written: whole, capped, never through a name planted beside them."""

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


def read_capped(path: str, limit: int) -> bytes:
    """A regular file's bytes (a symlink, FIFO or device planted in the cache is refused, not
    followed or waited on), at most ``limit``."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{path}: over {limit} bytes")
    return data


def replace_file(path: str, data: bytes) -> None:
    """Write ``path`` whole, through a new file of its own renamed over it: a name planted
    beside it (a symlink to another file) is never written through. OSError as os raises it."""
    tmp = f"{path}.{os.getpid()}-{os.urandom(6).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
