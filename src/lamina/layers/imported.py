"""Base layers into the output: byte for byte when possible, converted once when not.

A base layer keeps its exact bytes (same digest, same media type) whenever the output can
carry it. Uncompressed layers (as docker save writes them) are compressed once with the
output's compression; a zstd layer in a gzip build is converted to gzip, because the gzip
output is what Docker 20.10 loads and it cannot read zstd. Either way the stored digest is
verified as the bytes are read, and a recompressed layer's diff_id is checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import BinaryIO

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


def _pass_through(stored: BinaryIO, kind: str, media_type: str | None, digest: Digest | None, diff_id: Digest,
                  annotations: tuple[tuple[str, str], ...], store: BlobStore, created_by: str) -> Layer:
    hasher = hashlib.sha256()
    size = 0
    with store.writer() as (out, named):
        while data := stored.read(CHUNK):
            hasher.update(data)
            out.write(data)
            size += len(data)
        actual = Digest(hasher.hexdigest())
        if digest is not None and actual != digest:
            raise DigestMismatch(f"blob {digest}: content does not match its digest")
        named.append(actual)
    if media_type is None:
        media_type = {"gzip": mediatypes.OCI_LAYER_GZIP, "zstd": mediatypes.OCI_LAYER_ZSTD}.get(kind, mediatypes.OCI_LAYER)
    if kind == "tar" and actual != diff_id:
        raise DigestMismatch(f"layer {actual}: uncompressed content does not match its diff_id {diff_id}")
    descriptor = Descriptor(media_type, actual, size, annotations=annotations)
    return Layer(descriptor, diff_id, None, None, created_by)


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
