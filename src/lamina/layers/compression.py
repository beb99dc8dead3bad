"""Layer compressors with pinned settings, so the same tar always gives the same blob.

Why these: the system zlib differs across distributions (and is ~25 MB/s at level 6 on
the reference 2-core machine), so lamina never uses it to write. gzip comes from ISA-L's
igzip (the ``isal`` wheel links its own copy of ISA-L), level 2: ~300 MB/s for output
about 8% larger than zlib-6. zstd comes from the ``zstandard`` wheel's bundled libzstd,
level 3, always in multi-threaded mode: zstd's multi-threaded output is the same for any
worker count >= 1, but differs from single-threaded mode, so the mode is fixed.

Caveat: ISA-L dispatches on CPU features; its output is the same on every x86-64 CPU
with SSE4.2 (every x86-64 CPU of the last decade) but may differ on other CPU families.
zstd output depends only on the libzstd version. Both versions are pinned in pyproject.
"""

from __future__ import annotations

import enum
import os
import struct
from typing import Protocol

from lamina.model import mediatypes

GZIP_LEVEL = 2
ZSTD_LEVEL = 3
# zstd's multi-threaded mode buffers whole jobs per worker; its default job size at level 3
# (8 MiB) peaks near 200 MB RSS on incompressible input, 4 MiB near 120 MB, 2 MiB near 80 MB
# (measured with a 300 MB random file), for a few percent of speed. Fixed, because the job
# size is part of what decides the output bytes.
ZSTD_JOB_SIZE = 2 << 20
# RFC 1952 header: magic, CM=deflate, FLG=0 (no name, no comment), MTIME=0, XFL=0, OS=255 (unknown).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class Compression(enum.Enum):
    GZIP = "gzip"
    ZSTD = "zstd"
    NONE = "none"

    @property
    def media_type(self) -> str:
        return {
            Compression.GZIP: mediatypes.OCI_LAYER_GZIP,
            Compression.ZSTD: mediatypes.OCI_LAYER_ZSTD,
            Compression.NONE: mediatypes.OCI_LAYER,
        }[self]


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class _Gzip:
    """Raw igzip deflate framed by a fixed gzip header and trailer written here."""

    def __init__(self) -> None:
        from isal import isal_zlib

        self._zlib = isal_zlib
        self._deflate = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, -15)
        self._crc = 0
        self._size = 0
        self._started = False

    def compress(self, data: bytes) -> bytes:
        self._crc = self._zlib.crc32(data, self._crc)
        self._size += len(data)
        out = self._deflate.compress(data)
        if not self._started:
            self._started = True
            return _GZIP_HEADER + out
        return out

    def flush(self) -> bytes:
        head = b"" if self._started else _GZIP_HEADER
        self._started = True
        return head + self._deflate.flush() + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF)


class _Zstd:
    def __init__(self) -> None:
        import zstandard

        workers = max(1, min(4, os.cpu_count() or 1))
        params = zstandard.ZstdCompressionParameters.from_level(
            ZSTD_LEVEL, threads=workers, job_size=ZSTD_JOB_SIZE, write_checksum=False, write_content_size=False
        )
        self._obj = zstandard.ZstdCompressor(compression_params=params).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


class _Identity:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def new_compressor(compression: Compression) -> Compressor:
    if compression is Compression.GZIP:
        return _Gzip()
    if compression is Compression.ZSTD:
        return _Zstd()
    return _Identity()


def describe(compression: Compression) -> str:
    """Name and version of what makes the bytes; recorded in each layer's annotations."""
    if compression is Compression.GZIP:
        import isal

        return f"isal-{isal.__version__} igzip level {GZIP_LEVEL}"
    if compression is Compression.ZSTD:
        import zstandard

        libzstd = ".".join(map(str, zstandard.ZSTD_VERSION))
        return f"zstandard-{zstandard.__version__} libzstd-{libzstd} level {ZSTD_LEVEL} multithreaded job {ZSTD_JOB_SIZE >> 20}MiB"
    return "none"
