"""Base layers into the output: byte for byte when possible, converted once when not.

A base layer keeps its exact bytes (same digest, same media type) whenever the output can
carry it. Uncompressed layers (as docker save writes them) are compressed once with the
output's compression; a zstd layer in a gzip build is converted to gzip, because the gzip
output is what Docker 20.10 loads and it cannot read zstd. Either way the stored digest is
verified as the bytes are read, and so is the diff_id: a layer passed through unchanged is
decompressed on the side and hashed, because a layer whose content does not match the
config's diff_id is one that docker load refuses (or, worse, one chosen by an attacker).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import Any, BinaryIO

from lamina.errors import DigestMismatch
from lamina.layers.compression import Compression, describe
from lamina.layers.pipeline import CHUNK, LayerStream
from lamina.model import Descriptor, Digest, Layer, mediatypes
from lamina.sources.tarball import detect, open_decompressed
from lamina.store import BlobStore

_GZIP_TYPES = (mediatypes.OCI_LAYER_GZIP, mediatypes.DOCKER_LAYER_GZIP)
_PLAIN_TYPES = (mediatypes.OCI_LAYER, "application/vnd.docker.image.rootfs.diff.tar")


def _stored_kind(media_type: str | None, head: bytes) -> str:
    if media_type in _GZIP_TYPES:
        return "gzip"
    if media_type == mediatypes.OCI_LAYER_ZSTD:
        return "zstd"
    if media_type in _PLAIN_TYPES:
        return "tar"
    return detect(head)


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
) -> Layer:
    with open_stored() as stored:
        kind = _stored_kind(media_type, stored.peek(8)[:8])  # type: ignore[attr-defined]
        convert = (kind == "tar" and compression is not Compression.NONE) or (
            kind == "zstd" and compression is Compression.GZIP
        )
        if not convert:
            return _pass_through(stored, kind, media_type, digest, diff_id, annotations, store, created_by)
        if kind == "zstd":
            note(f"{name}: layer {digest} is zstd; converted to gzip so Docker 20.10 can load the image")
        return _recompress(stored, kind, diff_id, compression, store, created_by, name)


class _Tee(io.RawIOBase):
    """Reads the stored bytes for the decompressor and copies them, hashed, to the store."""

    def __init__(self, stored: BinaryIO, out: BinaryIO) -> None:
        self._stored, self._out = stored, out
        self.hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stored.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.hash.update(data)
        self._out.write(data)
        self.size += n
        return n


def _pass_through(stored: BinaryIO, kind: str, media_type: str | None, digest: Digest | None, diff_id: Digest,
                  annotations: tuple[tuple[str, str], ...], store: BlobStore, created_by: str) -> Layer:
    with store.writer() as (out, named):
        tee = _Tee(stored, out)
        plain = open_decompressed(io.BufferedReader(tee, CHUNK))
        content = hashlib.sha256()
        uncompressed = 0
        try:
            while data := plain.read(CHUNK):
                content.update(data)
                uncompressed += len(data)
        except DigestMismatch:
            raise
        except Exception as exc:  # a corrupt stream: whatever the decompressor raises
            raise DigestMismatch(f"layer {digest or ''}: cannot be decompressed ({exc})") from None
        while tee.read(CHUNK):  # bytes after the compressed stream still belong to the blob
            pass
        actual = Digest(tee.hash.hexdigest())
        if digest is not None and actual != digest:
            raise DigestMismatch(f"blob {digest}: content does not match its digest")
        if Digest(content.hexdigest()) != diff_id:
            raise DigestMismatch(f"layer {actual}: uncompressed content does not match its diff_id {diff_id}")
        named.append(actual)
    if media_type is None:
        media_type = {"gzip": mediatypes.OCI_LAYER_GZIP, "zstd": mediatypes.OCI_LAYER_ZSTD}.get(kind, mediatypes.OCI_LAYER)
    descriptor = Descriptor(media_type, actual, tee.size, annotations=annotations)
    return Layer(descriptor, diff_id, uncompressed, None, created_by)


def _recompress(stored: BinaryIO, kind: str, diff_id: Digest, compression: Compression, store: BlobStore,
                created_by: str, name: str) -> Layer:
    plain = open_decompressed(stored) if kind != "tar" else stored
    with store.writer() as (out, named):
        stream = LayerStream(out, compression)
        try:
            while data := plain.read(CHUNK):
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
