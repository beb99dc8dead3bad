"""sha256 of a stream or a file, read in 1 MiB chunks: the one helper for hashing bytes on disk."""

from __future__ import annotations

import hashlib
from typing import BinaryIO


def sha256_stream(f: BinaryIO) -> tuple[str, int]:
    """The hex sha256 of the rest of ``f`` and how many bytes that was."""
    h = hashlib.sha256()
    size = 0
    while chunk := f.read(1 << 20):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def sha256_file(path: str) -> str:
    """The hex sha256 of a file's bytes (OSError as opening and reading raise it)."""
    with open(path, "rb") as f:
        return sha256_stream(f)[0]
