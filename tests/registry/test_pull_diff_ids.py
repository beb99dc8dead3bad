"""A layer's diff_id is computed as it downloads and recorded by its digest, only once that digest
matched; an import takes the record only for cached bytes it has just hashed to that digest."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest
from support.attacker import FakeRegistry, Reply, Seen, digest_of
from support.oci import tar_bytes

from lamina.errors import DigestMismatch
from lamina.layers.compression import Compression
from lamina.model import Digest, Layer
from lamina.registry.client import Registry
from lamina.registry.pull import cache_dir, fetch, recorded_layer
from lamina.sources import imported
from lamina.sources.archive import verifying
from lamina.sources.imported import import_layer
from lamina.store import BlobStore

GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def add_gzip_image(registry: FakeRegistry, blob: bytes, diff_id: str) -> str:
    """A config naming ``diff_id`` and one gzip layer ``blob``, tagged v1; the layer's digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    registry.blobs[digest_of(config)] = config
    registry.blobs[digest_of(blob)] = blob
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config),
                           "size": len(config)},
                "layers": [{"mediaType": GZIP_LAYER, "digest": digest_of(blob), "size": len(blob)}]}
    data = json.dumps(manifest).encode()
    registry.manifests["v1"] = (manifest["mediaType"], data)
    return digest_of(blob)


def pull(registry: FakeRegistry) -> None:
    fetch(f"{registry.host}/team/app:v1", None, lambda host: Registry(host))


def tar_and_gzip(size: int = 3 << 20) -> tuple[bytes, bytes]:
    tar = tar_bytes({"data": os.urandom(size // 2) + bytes(size // 2)})
    return tar, gzip.compress(tar, compresslevel=1)


def cached(digest: str) -> Path:
    return cache_dir() / "blobs" / "sha256" / digest[7:]


def import_from(opener: Callable[[], BinaryIO], blob: bytes, diff_id: str, store: BlobStore, verifies: bool = True) -> Layer:
    return import_layer(opener, media_type=GZIP_LAYER, digest=Digest.parse(digest_of(blob)), diff_id=Digest.parse(diff_id),
                        annotations=(), compression=Compression.GZIP, store=store, created_by="", name="base",
                        note=lambda _: None, verifies=verifies, recorded=recorded_layer)


def test_a_downloaded_layer_has_its_diff_id_recorded(env: pytest.MonkeyPatch) -> None:
    tar, blob = tar_and_gzip()
    with FakeRegistry() as registry:
        digest = add_gzip_image(registry, blob, digest_of(tar))
        pull(registry)
    assert BlobStore(cache_dir()).known_diff_id(Digest.parse(digest)) == (Digest.parse(digest_of(tar)), len(tar))


def test_no_record_for_bytes_whose_digest_did_not_match(env: pytest.MonkeyPatch) -> None:
    """The registry sends another valid gzip layer under the digest: it decompresses fine, but
    nothing about it (nor about the digest it claimed) may be recorded."""
    tar, blob = tar_and_gzip()
    other = gzip.compress(tar_bytes({"data": b"not the layer"}))  # shorter: the whole of it is read
    with FakeRegistry() as registry:
        digest = add_gzip_image(registry, blob, digest_of(tar))

        def swap(seen: Seen) -> Reply | None:
            if seen.method == "GET" and seen.route.endswith(digest):
                return Reply(200, {}, other)
            return None

        registry.override = swap
        with pytest.raises(DigestMismatch):
            pull(registry)
    store = BlobStore(cache_dir())
    assert store.known_diff_id(Digest.parse(digest)) is None
    assert store.known_diff_id(Digest.parse(digest_of(other))) is None
    assert not (cache_dir() / "diff_ids" / "sha256").exists() or not any((cache_dir() / "diff_ids" / "sha256").iterdir())


def test_a_layer_that_does_not_decompress_gets_no_record(env: pytest.MonkeyPatch) -> None:
    tar, blob = tar_and_gzip()
    broken = blob[:100] + bytes(50) + blob[150:]  # its digest is what the manifest names: it downloads
    with FakeRegistry() as registry:
        digest = add_gzip_image(registry, broken, digest_of(tar))
        pull(registry)
    assert cached(digest).read_bytes() == broken
    assert BlobStore(cache_dir()).known_diff_id(Digest.parse(digest)) is None


def test_an_import_with_a_record_does_not_decompress_and_equals_one_without(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tar, blob = tar_and_gzip()
    with FakeRegistry() as registry:
        digest = add_gzip_image(registry, blob, digest_of(tar))
        pull(registry)
    plain = import_from(lambda: io.BufferedReader(io.BytesIO(blob)), blob, digest_of(tar), BlobStore(tmp_path / "a"),
                        verifies=False)

    def no_decompressing(raw: BinaryIO) -> BinaryIO:
        raise AssertionError("decompressed although the diff_id was recorded")

    env.setattr(imported, "open_decompressed", no_decompressing)
    store = BlobStore(tmp_path / "b")
    recorded = import_from(lambda: verifying(open(cached(digest), "rb"), Digest.parse(digest), len(blob), "cache"),
                           blob, digest_of(tar), store)
    assert recorded == plain
    assert store.path(Digest.parse(digest)).read_bytes() == blob


def test_a_record_is_not_trusted_for_cached_bytes_that_changed(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The cached blob is altered after its record was written: the import hashes it, finds it is
    not those bytes any more, and reads the layer as any other (which refuses it)."""
    tar, blob = tar_and_gzip()
    with FakeRegistry() as registry:
        digest = add_gzip_image(registry, blob, digest_of(tar))
        pull(registry)
    _, other = tar_and_gzip()
    os.chmod(cached(digest), 0o600)
    cached(digest).write_bytes(other)  # valid gzip, another content
    store = BlobStore(tmp_path / "store")
    with pytest.raises(DigestMismatch):
        import_from(lambda: verifying(open(cached(digest), "rb"), Digest.parse(digest), len(blob), "cache"),
                    blob, digest_of(tar), store)
    assert not store.has(Digest.parse(digest))
    # The same import from good bytes elsewhere is taken from those bytes, not from the cache.
    good = import_from(lambda: io.BufferedReader(io.BytesIO(blob)), blob, digest_of(tar), store, verifies=False)
    assert good.diff_id == Digest.parse(digest_of(tar))
    assert store.path(Digest.parse(digest)).read_bytes() == blob
    assert hashlib.sha256(store.path(Digest.parse(digest)).read_bytes()).hexdigest() == digest[7:]


def test_a_blob_this_process_downloaded_is_not_hashed_again(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The pull hashed the bytes as they came: the import right after it (one process) takes the
    file as it is; a later process (or a file changed since) hashes it again."""
    from lamina import hashing, store as stores

    tar, blob = tar_and_gzip()
    with FakeRegistry() as registry:
        digest = add_gzip_image(registry, blob, digest_of(tar))
        pull(registry)
    hashed: list[object] = []
    real = hashing.sha256_stream

    def counted(f: BinaryIO) -> tuple[str, int]:
        hashed.append(f)
        return real(f)

    env.setattr(hashing, "sha256_stream", counted)
    opener = lambda: verifying(open(cached(digest), "rb"), Digest.parse(digest), len(blob), "cache")  # noqa: E731
    first = import_from(opener, blob, digest_of(tar), BlobStore(tmp_path / "a"))
    assert hashed == []
    env.setattr(stores, "_HASHED_HERE", {})  # as a new process finds the cache
    again = import_from(opener, blob, digest_of(tar), BlobStore(tmp_path / "b"))
    assert len(hashed) == 1 and again == first  # control: the same import does hash then


def test_a_blob_changed_after_this_process_downloaded_it_is_hashed(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tar, blob = tar_and_gzip()
    with FakeRegistry() as registry:
        digest = add_gzip_image(registry, blob, digest_of(tar))
        pull(registry)
    os.chmod(cached(digest), 0o600)
    cached(digest).write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))  # same size, in place
    with pytest.raises(DigestMismatch):
        import_from(lambda: verifying(open(cached(digest), "rb"), Digest.parse(digest), len(blob), "cache"),
                    blob, digest_of(tar), BlobStore(tmp_path / "store"))


@pytest.mark.parametrize("kind", ["gzip", "two gzip members", "zstd", "tar", "tiny gzip", "corrupt gzip"])
def test_the_download_side_diff_id_is_the_imports(kind: str) -> None:
    """What the diff_id thread computes from network-sized pieces is exactly what an import
    computes from the whole blob (the same decompressor, the same hash), or nothing at all."""
    import zstandard

    from lamina.hashing import content_digest
    from lamina.registry.pull import _DiffId
    from lamina.sources.tarball import open_decompressed

    tar, _ = tar_and_gzip(1 << 20)
    blob = {"gzip": gzip.compress(tar), "two gzip members": gzip.compress(tar[:5000]) + gzip.compress(tar[5000:]),
            "zstd": zstandard.ZstdCompressor().compress(tar), "tar": tar, "tiny gzip": gzip.compress(b""),
            "corrupt gzip": gzip.compress(tar)[:-9] + b"\0" * 9}[kind]
    side = _DiffId("test")
    for start in range(0, len(blob), 65536):
        side.feed(blob[start:start + 65536])
    found = side.result()
    try:
        expected = content_digest(open_decompressed(io.BufferedReader(io.BytesIO(blob))), "test")
    except DigestMismatch:
        assert found is None
        return
    assert found == expected
    assert found[0] == Digest.parse(digest_of(tar if kind != "tiny gzip" else b""))
