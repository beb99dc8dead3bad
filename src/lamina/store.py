"""A content-addressed blob store on disk: where layers land before a sink takes them.

Blobs are written to a temporary file in the store and renamed to their digest only
once complete, so a blob under its name is always whole (umoci's ``oci/cas/dir``).

A store also remembers what a layer blob decompresses to: "the bytes of sha256:X have diff_id
Y and N uncompressed bytes", written only after both X and Y were computed from the same
stream (the registry cache records it as it downloads). It is keyed by the content digest,
so it is true of any copy of those bytes, wherever read, as long as the reader checks that
what it reads hashes to X; an import that does so need not decompress the layer again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lamina.errors import LaminaError, OutputError
from lamina.model import Descriptor, Digest


# Blobs this process wrote and hashed as it wrote them: path -> their stat then (device, inode,
# size, mtime). A blob whose stat is still that one was checked minutes ago, by this process,
# and need not be hashed again before use (a 300 MB pull did that twice); a cache file from
# an earlier run is hashed before use, as any other.
_HASHED_HERE: dict[str, tuple[int, int, int, int]] = {}


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs" / "sha256"
        self._tmp = root / "tmp"
        self._diff_ids = root / "diff_ids" / "sha256"
        try:
            self._blobs.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create blob store in {root}: {exc.strerror}") from exc

    def path(self, digest: Digest) -> Path:
        return self._blobs / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.path(digest).exists()

    def hold(self, digest: Digest, held: list[int]) -> bool:
        """Whether the store has ``digest``; if so it stays while ``held`` (see :func:`hold`)."""
        return hold(self.path(digest), held) is not None

    def open(self, descriptor: Descriptor) -> BinaryIO:
        """A blob as an image's layer (``image.Blobs``); the store only holds blobs it hashed
        as it wrote them, so they are read as they are."""
        try:
            return open(self.path(descriptor.digest), "rb")
        except FileNotFoundError:
            raise OutputError(f"blob {descriptor.digest} is missing from the build's store") from None

    @contextlib.contextmanager
    def writer(self) -> Iterator[tuple[BinaryIO, list[Digest]]]:
        """Yield a temp file and a one-slot list the caller fills with the final digest."""
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="blob-")
        named: list[Digest] = []
        try:
            with os.fdopen(fd, "wb") as out:
                yield out, named
            if not named:
                raise RuntimeError("blob writer closed without a digest")
            final = self.path(named[0])
            os.replace(name, final)
            with contextlib.suppress(OSError):
                _HASHED_HERE[str(final)] = _identity(os.stat(final))
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError)) and exc.errno in (
                    errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EROFS):
                raise OutputError(f"cannot write a blob in {self.root}: {exc.strerror}") from None
            raise

    def hashed_here(self, digest: Digest) -> bool:
        """Whether this process wrote the blob of ``digest`` (hashing it as it wrote), and the
        file is still the one it wrote (same inode, size and mtime)."""
        path = str(self.path(digest))
        known = _HASHED_HERE.get(path)
        if known is None:
            return False
        try:
            return _identity(os.stat(path)) == known
        except OSError:
            return False

    def refer(self, digest: Digest, blob: Path) -> None:
        """Make ``digest`` in the store a symlink to ``blob``, a verified blob outside it (the
        layer cache): nothing reads it but by path, and nothing writes through the store."""
        if not self.has(digest):
            with contextlib.suppress(FileExistsError):
                os.symlink(os.path.abspath(blob), self.path(digest))

    def copy_into(self, digest: Digest, out: BinaryIO) -> int:
        """Append a blob to an open file, copied by the kernel (copy_file_range) where it can."""
        out.flush()
        with open(self.path(digest), "rb") as src:
            size = os.fstat(src.fileno()).st_size
            copy_range(src, out, size)
        return size

    def remember_diff_id(self, digest: Digest, diff_id: Digest, size: int) -> None:
        """Record that the bytes of ``digest`` decompress to ``diff_id`` (``size`` bytes). Call only
        with both digests computed from one stream of those bytes; a cache, so failing is silent."""
        name = ""
        try:
            self._diff_ids.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self._tmp, prefix="diff-id-")
            with os.fdopen(fd, "wb") as out:
                out.write(f"{diff_id} {size}\n".encode())
            os.replace(name, self._diff_ids / digest.hex)
        except OSError:
            if name:
                with contextlib.suppress(OSError):
                    os.unlink(name)

    def known_diff_id(self, digest: Digest) -> tuple[Digest, int] | None:
        """(diff_id, uncompressed size) recorded for the bytes of ``digest``, or None."""
        try:
            with open(self._diff_ids / digest.hex, "rb") as f:
                text = f.read(256).decode()  # "sha256:<64 hex> <size>": anything longer is not ours
            diff_id, size = text.split()
            return Digest.parse(diff_id), int(size)
        except (OSError, ValueError, LaminaError):
            return None

    def put_bytes(self, data: bytes) -> Digest:
        digest = Digest.of_bytes(data)
        if not self.has(digest):
            with self.writer() as (out, named):
                out.write(data)
                named.append(digest)
        return digest


def hold(path: Path, held: list[int]) -> int | None:
    """The inode of the file at ``path``, kept there while ``held`` (the caller's, which closes
    them when it is done) keeps it open with a shared flock, which ``lamina cache prune``
    (remove_unless_held) leaves alone; None when there is no such file. Out of descriptors (an
    index of many images), the file is used unheld rather than failing the build."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            with contextlib.suppress(OSError):
                return os.stat(path).st_ino
            return None
        raise OutputError(f"cannot read {path}: {exc.strerror}") from None
    fcntl.flock(fd, fcntl.LOCK_SH)  # waits out a prune that holds it exclusively
    try:
        inode = os.fstat(fd).st_ino
        if os.stat(path).st_ino == inode:
            held.append(fd)
            return inode
    except FileNotFoundError:
        pass
    os.close(fd)  # pruned between the open and the lock
    return None


def open_directory(root: Path, *parts: str) -> int:
    """A directory under ``root`` opened without following a symlink below ``root``: what a
    prune deletes in it is in it, never where a link someone planted in a shared cache points."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_unless_held(directory: int, name: str) -> int | None:
    """Remove the file ``name`` of the open ``directory`` unless a build holds it (a shared
    flock: in use; a later prune will), or it is not a regular file; the bytes freed, or None
    if it stays. Removed under an exclusive flock, and only while the name is still that file,
    so no build takes it meanwhile."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
    except OSError:  # gone, or not a file of ours (a symlink, a FIFO, a directory): left alone
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or os.stat(name, dir_fd=directory, follow_symlinks=False).st_ino != st.st_ino:
            return None  # a directory, or replaced under that name since the open
        os.unlink(name, dir_fd=directory)
        return st.st_size
    except OSError:  # held (BlockingIOError), or gone meanwhile
        return None
    finally:
        os.close(fd)


def copy_range(src: BinaryIO, out: BinaryIO, size: int) -> None:
    """``size`` bytes from src's position to out's, without passing them through Python."""
    remaining = size
    try:
        while remaining:
            n = os.copy_file_range(src.fileno(), out.fileno(), min(remaining, 1 << 30))
            if n == 0:
                raise OutputError("blob shrank while it was being copied")
            remaining -= n
        return
    except OSError as exc:
        if remaining != size or exc.errno not in (
            errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.ESPIPE):
            raise
    shutil.copyfileobj(src, out, 1 << 20)
