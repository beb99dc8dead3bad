"""build_layer(): entries in, a finished Layer out, its blob in the store."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import BinaryIO

from lamina.errors import InputError
from lamina.layers import tarformat
from lamina.layers.compression import Compression, describe
from lamina.layers.entries import Entry, Kind
from lamina.layers.pipeline import CHUNK, LayerStream
from lamina.model import Descriptor, Layer, mediatypes
from lamina.store import BlobStore

# Opens an entry's bytes when the writer reaches it. None: the entry has no data, or its data
# is the host file named by entry.source (no closure per file: a 200,000-file tree stays small).
Opener = Callable[[], BinaryIO] | None


def _copy(entry: Entry, src: BinaryIO, stream: LayerStream) -> None:
    """Copy exactly entry.size bytes: a file that grew or shrank mid-build is an error."""
    remaining = entry.size
    name = entry.source or entry.path
    try:
        while remaining:
            data = src.read(min(CHUNK, remaining))
            if not data:
                raise InputError(f"{name}: file shrank while it was being read")
            stream.write(data)
            remaining -= len(data)
        if entry.source is not None and src.read(1):
            raise InputError(f"{name}: file grew while it was being read")
    except InputError:
        raise
    except Exception as exc:  # truncated or corrupt archives (tarfile, zlib, lzma, zstd errors), I/O errors
        raise InputError(f"{name}: cannot read: {exc}") from None
    stream.write(tarformat.padding(entry.size))


def build_layer(
    items: Iterable[tuple[Entry, Opener]],
    *,
    compression: Compression,
    store: BlobStore,
    created_by: str,
    on_bytes: Callable[[int], None] | None = None,
) -> Layer:
    """Write one layer in one pass; the blob is renamed to its digest only when complete."""
    with store.writer() as (out, named):
        stream = LayerStream(out, compression, on_bytes)
        count = 0
        try:
            for entry, opener in items:
                stream.write(tarformat.header(entry))
                if entry.kind is Kind.FILE and entry.size:
                    if opener is None and entry.source is None:
                        raise InputError(f"{entry.path}: no data for a regular file")
                    try:
                        src: BinaryIO = opener() if opener is not None else open(str(entry.source), "rb")
                    except OSError as exc:
                        raise InputError(f"cannot read {entry.source or entry.path!r}: {exc.strerror}") from exc
                    with src:
                        _copy(entry, src, stream)
                count += 1
            stream.write(tarformat.END_OF_ARCHIVE)
            result = stream.finish()
        except BaseException:
            stream.abort()
            raise
        named.append(result.digest)
    descriptor = Descriptor(
        media_type=compression.media_type,
        digest=result.digest,
        size=result.size,
        annotations={mediatypes.COMPRESSOR: describe(compression)} if compression is not Compression.NONE else None,
    )
    return Layer(descriptor, result.diff_id, result.uncompressed_size, count, created_by)
