"""A content-addressed blob store on disk: where layers land before a sink takes them.

Blobs are written to a temporary file in the store and renamed to their digest only
once complete, so a blob under its name is always whole (umoci's ``oci/cas/dir``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lamina.errors import OutputError
from lamina.model import Digest


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs" / "sha256"
        self._tmp = root / "tmp"
        try:
            self._blobs.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create blob store in {root}: {exc.strerror}") from exc

    def path(self, digest: Digest) -> Path:
        return self._blobs / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.path(digest).exists()

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
            os.replace(name, self.path(named[0]))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            raise

    def put_bytes(self, data: bytes) -> Digest:
        digest = Digest.of_bytes(data)
        if not self.has(digest):
            with self.writer() as (out, named):
                out.write(data)
                named.append(digest)
        return digest
