"""Outputs appear whole or not at all: written under a temporary name, then renamed.

Every temporary name lamina leaves beside an output carries the pid of the process that made it
(``.NAME.lamina-tmp-PID-XXXX``, ``.lamina-build-PID-XXXX``), and that process holds an flock on
it while it lives. A build killed with SIGKILL cannot clean up, so the next build removes the
litter of dead builds (:func:`clean_stale`): the pid is gone and nobody holds the lock (the lock
covers builds in another pid namespace sharing the directory, and a pid reused since).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lamina.errors import OutputError

_STALE = re.compile(r"^(?:\.lamina-build-|\..*\.lamina-tmp-)(\d+)-")


_EXCHANGE_FROM = 32 << 20  # below this, a rename costs less than loading ctypes for renameat2


def replace(tmp: str, path: Path) -> None:
    """Rename ``tmp`` over ``path``, atomically. Over an existing large file the two are
    exchanged (renameat2 RENAME_EXCHANGE) and the old one, now at ``tmp``, unlinked: ext4
    writes back a new file's delayed blocks when it is renamed over another (auto_da_alloc),
    which made replacing a 240 MB tarball cost 0.1-0.2 s. Elsewhere (no such file, another
    kernel or filesystem): os.replace."""
    try:
        if os.lstat(path).st_size >= _EXCHANGE_FROM and _exchange(tmp, path):
            with contextlib.suppress(OSError):  # left behind, it is a dead build's litter (clean_stale)
                os.unlink(tmp)
            return
    except FileNotFoundError:
        pass
    os.replace(tmp, path)


def _exchange(a: str, b: Path) -> bool:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return bool(renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0)


def temp_prefix(path: Path) -> str:
    return f".{path.name}.lamina-tmp-{os.getpid()}-"


def work_prefix() -> str:
    return f".lamina-build-{os.getpid()}-"


def hold(path: str | Path) -> int:
    """Open ``path`` (file or directory) and flock it, marking it as in use by a live process."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def owner_gone(pid: int, path: str | Path | None = None) -> bool:
    """True when the process ``pid`` that named a temporary file is dead (and, given ``path``,
    nobody holds its lock)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
        return False
    except ProcessLookupError:
        pass
    except PermissionError:  # alive, another user's
        return False
    if path is None:
        return True
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            return True  # a symlink with our name: unlinked, never followed
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return False  # never ours, never opened (a FIFO would block, a device could act)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def clean_stale(directory: Path) -> None:
    """Remove what builds killed mid-way left in ``directory``; best effort, never an error."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        match = _STALE.match(entry.name)
        if match is None or not owner_gone(int(match[1]), entry.path):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path))
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        raise OutputError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
        raise


def check_replaceable_dir(path: Path) -> None:
    """Only an empty directory or an OCI layout may be written into: never user data."""
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise OutputError(f"cannot write {str(path)!r}: it exists and is not a directory")
    if any(path.iterdir()) and not (path / "oci-layout").is_file():
        raise OutputError(f"cannot write {str(path)!r}: it is a non-empty directory and not an OCI layout; refusing to replace it")


_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def check_replaceable_file(path: Path) -> None:
    """An output file may replace a regular file only: renaming over /dev/null, a FIFO or a
    symlink would replace the node itself, not write into it."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise OutputError(f"cannot write {str(path)!r}: it is {kind}" + ("" if kind == "a directory" else
                          "; an output may only replace a regular file"))
