"""Base layers into the output: byte for byte when possible, converted once when not.

A base layer keeps its exact bytes (same digest, same media type) whenever the output can
carry it. Uncompressed layers (as docker save writes them) are compressed once with the
output's compression; a zstd layer in a gzip build is converted to gzip, because the gzip
output is what Docker 20.10 loads and it cannot read zstd. Either way the stored digest is
verified as the bytes are read, and so is the diff_id: a layer passed through unchanged is
decompressed on the side and hashed, because a layer whose content does not match the
config's diff_id is one that docker load refuses (or, worse, one chosen by an attacker).

The diff_id check is the one expensive step (decompressing every byte), so its result is
remembered by content digest (``BlobStore.known_diff_id``; the registry cache records it while
a blob downloads): a layer whose digest has a record naming the config's diff_id is only
hashed as it is copied, and taken only if it hashes to that digest.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from lamina.errors import DigestMismatch, ImageError, LaminaError
from lamina.hashing import content_digest
from lamina.layers.compression import Compression, describe
from lamina.layers.pipeline import CHUNK, LayerStream
from lamina.model import Descriptor, Digest, Layer, mediatypes
from lamina.sources.tarball import detect, open_decompressed
from lamina.store import BlobStore

_GZIP_TYPES = (mediatypes.OCI_LAYER_GZIP, mediatypes.DOCKER_LAYER_GZIP)
_PLAIN_TYPES = (mediatypes.OCI_LAYER, "application/vnd.docker.image.rootfs.diff.tar")


def _stored_kind(media_type: str | None, head: bytes, name: str = "layer") -> str:
    """The stored compression. A layer passed through keeps its media type, so bytes in
    another compression than the one it names (zstd labelled gzip, which Docker 20.10 cannot
    read) are refused; an uncompressed tar labelled gzip stays accepted, as docker reads it."""
    magic = detect(head)
    labelled = ("gzip" if media_type in _GZIP_TYPES else "zstd" if media_type == mediatypes.OCI_LAYER_ZSTD
                else "tar" if media_type in _PLAIN_TYPES else magic)
    if magic != "tar" and magic != labelled:
        raise ImageError(f"{name}: layer labelled {media_type} holds {magic} data")
    return labelled


# (blob digest, diff_id) -> (the blob's path, its uncompressed size, whether this process
# downloaded and hashed that very file) if it is so recorded.
Recorded = Callable[[Digest, Digest], tuple[Path, int, bool] | None]


def import_layer(
    open_stored: Callable[[], BinaryIO],
    *,
    media_type: str | None,
    digest: Digest | None,
    diff_id: Digest,
    annotations: tuple[tuple[str, str], ...],
    compression: Compression,
    store: BlobStore,
    created_by: str,
    name: str,
    note: Callable[[str], None],
    verifies: bool = False,
    recorded: Recorded | None = None,
) -> Layer:
    """``verifies``: ``open_stored`` checks the digest and size itself as it is read to its end
    (``image.Blobs.open`` does), so the copy is not hashed a second time. ``recorded``: where
    a blob known to decompress to a diff_id lies (registry.pull.recorded_layer), if anywhere."""
    if digest is not None and recorded is not None:
        cached = _from_pull_cache(recorded, media_type, digest, diff_id, annotations, compression, store, created_by, name)
        if cached is not None:
            return cached
    with open_stored() as stored:
        kind = _stored_kind(media_type, stored.peek(8)[:8], name)  # type: ignore[attr-defined]
        convert = _converts(kind, compression)
        if not convert:
            return _pass_through(stored, kind, media_type, digest, diff_id, annotations, store, created_by,
                                 verifies=verifies and digest is not None)
        if kind == "zstd":
            note(f"{name}: layer {digest} is zstd; converted to gzip so Docker 20.10 can load the image")
        return _recompress(stored, kind, diff_id, compression, store, created_by, name)


class _Tee(io.RawIOBase):
    """Reads the stored bytes for the decompressor and copies them, hashed, to the store."""

    def __init__(self, stored: BinaryIO, out: BinaryIO, hashing: bool = True) -> None:
        self._stored, self._out = stored, out
        self.hash = hashlib.sha256() if hashing else None
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stored.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if self.hash is not None:
            self.hash.update(data)
        self._out.write(data)
        self.size += n
        return n


def _converts(kind: str, compression: Compression) -> bool:
    return (kind == "tar" and compression is not Compression.NONE) or (kind == "zstd" and compression is Compression.GZIP)


def _from_pull_cache(recorded_layer: Recorded, media_type: str | None, digest: Digest, diff_id: Digest,
                     annotations: tuple[tuple[str, str], ...], compression: Compression, store: BlobStore,
                     created_by: str, name: str) -> Layer | None:
    """A layer passed through whose bytes the registry cache holds, recorded (by their digest,
    as they downloaded) to decompress to ``diff_id``: not decompressed, hashed unless this
    process downloaded that very file, and referred to from the build's store as cached
    layers are (sinks copy out of it). None: not so known."""
    from lamina.hashing import sha256_stream

    recorded = recorded_layer(digest, diff_id)
    if recorded is None:
        return None
    path, uncompressed, hashed = recorded
    try:
        with open(path, "rb") as f:
            kind = _stored_kind(media_type, f.read(8), name)
            if _converts(kind, compression):
                return None
            if hashed:  # downloaded by this process, digest checked as the bytes came
                hexdigest, size = digest.hex, os.fstat(f.fileno()).st_size
            else:
                f.seek(0)
                hexdigest, size = sha256_stream(f)
            if hexdigest != digest.hex or os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:
                return None  # not those bytes (any more): read and checked as any other
            store.refer(digest, path)
    except OSError:
        return None
    return Layer(Descriptor(_layer_type(media_type, kind), digest, size, annotations=annotations), diff_id, uncompressed,
                 None, created_by)


def _layer_type(media_type: str | None, kind: str) -> str:
    if media_type is not None:
        return media_type
    return {"gzip": mediatypes.OCI_LAYER_GZIP, "zstd": mediatypes.OCI_LAYER_ZSTD}.get(kind, mediatypes.OCI_LAYER)


def _pass_through(stored: BinaryIO, kind: str, media_type: str | None, digest: Digest | None, diff_id: Digest,
                  annotations: tuple[tuple[str, str], ...], store: BlobStore, created_by: str, *,
                  verifies: bool = False) -> Layer:
    """``verifies``: ``stored`` raises DigestMismatch at its end unless it hashed to ``digest``."""
    with store.writer() as (out, named):
        tee = _Tee(stored, out, hashing=not verifies)
        plain = open_decompressed(io.BufferedReader(tee, CHUNK))
        content, uncompressed = content_digest(plain, f"layer {digest or ''}")
        while tee.read(CHUNK):  # bytes after the compressed stream still belong to the blob
            pass
        actual = Digest(tee.hash.hexdigest()) if tee.hash is not None else digest
        assert actual is not None
        if digest is not None and actual != digest:
            raise DigestMismatch(f"blob {digest}: content does not match its digest")
        if content != diff_id:
            raise DigestMismatch(f"layer {actual}: uncompressed content does not match its diff_id {diff_id}")
        named.append(actual)
    descriptor = Descriptor(_layer_type(media_type, kind), actual, tee.size, annotations=annotations)
    return Layer(descriptor, diff_id, uncompressed, None, created_by)


def _recompress(stored: BinaryIO, kind: str, diff_id: Digest, compression: Compression, store: BlobStore,
                created_by: str, name: str) -> Layer:
    plain = open_decompressed(stored) if kind != "tar" else stored
    with store.writer() as (out, named):
        stream = LayerStream(out, compression)
        try:
            while True:
                try:
                    data = plain.read(CHUNK)
                except LaminaError:
                    raise
                except Exception as exc:  # a corrupt stream: whatever the decompressor raises
                    raise DigestMismatch(f"{name}: layer cannot be decompressed ({exc})") from None
                if not data:
                    break
                stream.write(data)
            result = stream.finish()
        except BaseException:
            stream.abort()
            raise
        if result.diff_id != diff_id:
            raise DigestMismatch(f"{name}: layer content does not match its diff_id {diff_id}")
        named.append(result.digest)
    annotations = {mediatypes.COMPRESSOR: describe(compression)} if compression is not Compression.NONE else None
    descriptor = Descriptor(compression.media_type, result.digest, result.size, annotations=annotations)
    return Layer(descriptor, diff_id, result.uncompressed_size, None, created_by)
