"""Push and pull at wire speed, against the scriptable fake registry (tests/support/attacker.py):
one streamed PUT per blob unless chunks are asked for, announced or forced by a 413; a
download that drops mid-blob resumes with a Range request at the offset it reached."""

from __future__ import annotations

import io
import json
import os

import pytest
from support.attacker import FakeRegistry, Reply, Seen, digest_of

from lamina.errors import DigestMismatch, RegistryError
from lamina.model import Descriptor, Digest, Reference
from lamina.registry import client
from lamina.registry.client import Registry
from lamina.registry.pull import cache_dir, fetch
from lamina.registry.push import CHUNK_SIZE, Pusher, PushPlan, PushStats

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def env(env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    env.setattr(client, "RETRIES", 2)  # a dropped download needs a second try
    return env


def plan(layer: bytes) -> PushPlan:
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    cdesc = Descriptor("application/vnd.oci.image.config.v1+json", Digest.of_bytes(config), len(config))
    ldesc = Descriptor("application/vnd.oci.image.layer.v1.tar", Digest.of_bytes(layer), len(layer))
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cdesc.to_json(),
                           "layers": [ldesc.to_json()]}).encode()
    stored = {cdesc.digest: config, ldesc.digest: layer}
    return PushPlan((cdesc, ldesc), ((Descriptor(OCI_MANIFEST, Digest.of_bytes(manifest), len(manifest)), manifest),),
                    lambda digest: io.BytesIO(stored[digest]))


def push(host: str, the_plan: PushPlan, chunk_size: int | None = None) -> PushStats:
    registry = Registry(host)
    try:
        pusher = Pusher(registry, "team/app", the_plan, chunk_size=chunk_size)
        pusher.run(Reference.parse(f"{host}/team/app:v1"))
        return pusher.stats
    finally:
        registry.close()


def uploads(registry: FakeRegistry, method: str) -> list[Seen]:
    return [r for r in registry.requests if r.method == method and r.route.startswith("/upload/")]


# ---- push


def test_a_large_blob_goes_in_one_streamed_put(env: pytest.MonkeyPatch) -> None:
    layer = os.urandom(1 << 20) * 70  # 70 MiB: over the old 64 MiB threshold for chunks
    with FakeRegistry() as registry:
        stats = push(registry.host, plan(layer))
        assert uploads(registry, "PATCH") == []
        puts = [r for r in uploads(registry, "PUT") if len(r.body) == len(layer)]
        assert len(puts) == 1 and puts[0].headers["content-length"] == str(len(layer))
        assert registry.blobs[digest_of(layer)] == layer
        assert (stats.uploaded, stats.chunked) == (2, 0)


def test_a_413_on_the_whole_blob_falls_back_to_chunks(env: pytest.MonkeyPatch) -> None:
    layer = os.urandom(3 << 20)
    limit = 1 << 20

    def too_large(seen: Seen) -> Reply | None:
        if seen.method in ("PUT", "PATCH") and seen.route.startswith("/upload/") and len(seen.body) > limit:
            return Reply(413, {"Content-Type": "application/json"}, b'{"errors":[{"code":"SIZE_INVALID"}]}')
        return None

    with FakeRegistry() as registry:
        registry.override = too_large
        stats = push(registry.host, plan(layer))
        refused = [r for r in uploads(registry, "PUT") if len(r.body) == len(layer)]
        assert len(refused) == 1  # tried whole once, then never again
        patches = uploads(registry, "PATCH")
        # 16 MiB chunks (3 MiB here, the whole blob) are refused too: halved until 1 MiB passes
        accepted = [len(p.body) for p in patches if len(p.body) <= limit]
        assert accepted == [limit] * 3 and len(patches) > len(accepted)
        assert registry.blobs[digest_of(layer)] == layer
        assert stats.chunked == 1


def test_oci_chunk_min_length_means_chunks_of_at_least_that(env: pytest.MonkeyPatch) -> None:
    layer = os.urandom(3 << 20)
    minimum = 2 << 20

    def announce(seen: Seen) -> Reply | None:
        if seen.method == "POST" and seen.route.endswith("/blobs/uploads/"):
            reply = registry.upload(seen)
            assert reply is not None
            reply.headers["OCI-Chunk-Min-Length"] = str(minimum)
            return reply
        return None

    with FakeRegistry() as registry:
        registry.override = announce
        push(registry.host, plan(layer), chunk_size=64 << 10)
        patches = uploads(registry, "PATCH")
        assert [len(p.body) for p in patches if len(p.body) > 1000] == [minimum, len(layer) - minimum]
        assert registry.blobs[digest_of(layer)] == layer


def test_chunk_size_flag_still_chunks(env: pytest.MonkeyPatch) -> None:
    layer = os.urandom(1 << 20)
    with FakeRegistry() as registry:
        push(registry.host, plan(layer), chunk_size=256 << 10)
        assert len([p for p in uploads(registry, "PATCH") if len(p.body) == 256 << 10]) == 4
        assert registry.blobs[digest_of(layer)] == layer
    assert CHUNK_SIZE >= 1 << 20


# ---- pull


def _dropping(registry: FakeRegistry, layer: bytes, *, honour_range: bool = True, content_range: str | None = None) -> None:
    """The layer's first GET sends its headers and DROP bytes, then hangs up."""
    digest = digest_of(layer)
    drop = len(layer) // 2

    def serve(seen: Seen) -> Reply | None:
        if seen.method != "GET" or not seen.route.endswith(f"/blobs/{digest}"):
            return None
        if "range" not in seen.headers and sum(1 for r in registry.requests if r.route == seen.route) == 1:
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(layer)}\r\nContent-Type: application/octet-stream\r\n\r\n"
            return Reply(raw=[head.encode(), layer[:drop]])
        wanted = seen.headers.get("range", "")
        if honour_range and wanted.startswith("bytes="):
            start = int(wanted[6:].rstrip("-"))
            return Reply(206, {"Content-Range": content_range or f"bytes {start}-{len(layer) - 1}/{len(layer)}"}, layer[start:])
        return Reply(200, {}, layer)

    registry.override = serve


def test_a_dropped_download_resumes_at_the_offset(env: pytest.MonkeyPatch) -> None:
    layer = os.urandom(1 << 20)
    with FakeRegistry() as registry:
        registry.add_image(layer=layer)
        _dropping(registry, layer)
        fetch(f"{registry.host}/team/app:v1", None, lambda host: Registry(host))
        gets = [r for r in registry.requests if r.method == "GET" and r.route.endswith(f"/blobs/{digest_of(layer)}")]
        assert [g.headers.get("range") for g in gets] == [None, f"bytes={len(layer) // 2}-"]
        assert (cache_dir() / "blobs" / "sha256" / digest_of(layer)[7:]).read_bytes() == layer


def test_a_registry_that_ignores_range_is_read_again_from_the_start(env: pytest.MonkeyPatch) -> None:
    layer = os.urandom(1 << 20)
    with FakeRegistry() as registry:
        registry.add_image(layer=layer)
        _dropping(registry, layer, honour_range=False)
        fetch(f"{registry.host}/team/app:v1", None, lambda host: Registry(host))
        assert (cache_dir() / "blobs" / "sha256" / digest_of(layer)[7:]).read_bytes() == layer


def test_a_resume_at_the_wrong_offset_is_refused(env: pytest.MonkeyPatch) -> None:
    layer = os.urandom(1 << 20)
    with FakeRegistry() as registry:
        registry.add_image(layer=layer)
        _dropping(registry, layer, content_range=f"bytes 0-{len(layer) - 1}/{len(layer)}")
        with pytest.raises(RegistryError, match="asked for bytes from 524288, the registry sent bytes 0-"):
            fetch(f"{registry.host}/team/app:v1", None, lambda host: Registry(host))
        assert not (cache_dir() / "blobs" / "sha256" / digest_of(layer)[7:]).exists()


def test_resumed_bytes_are_still_verified(env: pytest.MonkeyPatch) -> None:
    layer = os.urandom(1 << 20)
    with FakeRegistry() as registry:
        registry.add_image(layer=layer)
        _dropping(registry, layer)
        inner = registry.override
        assert inner is not None

        def tamper(seen: Seen) -> Reply | None:
            reply = inner(seen)
            if reply is not None and reply.status == 206:
                reply.body = b"\0" * len(reply.body)  # type: ignore[arg-type]
            return reply

        registry.override = tamper
        with pytest.raises(DigestMismatch):
            fetch(f"{registry.host}/team/app:v1", None, lambda host: Registry(host))


def test_a_blob_over_4_mib_that_the_registry_has_is_skipped(env: pytest.MonkeyPatch) -> None:
    """HEAD answers carry the blob's size as Content-Length and no body: not a 'too large answer'."""
    layer = os.urandom(5 << 20)
    with FakeRegistry() as registry:
        registry.blobs[digest_of(layer)] = layer
        stats = push(registry.host, plan(layer))
        assert stats.skipped == 1 and uploads(registry, "PUT")[0].body != layer


def test_a_self_verifying_plan_hashes_once_and_still_never_sends_a_whole_wrong_blob(env: pytest.MonkeyPatch) -> None:
    from lamina.errors import DigestMismatch
    from lamina.sources.archive import verifying

    layer = os.urandom(3 << 20)
    good = plan(layer)
    corrupt = layer[:-1] + bytes([layer[-1] ^ 1])
    served = {d.digest: (corrupt if d.digest == good.blobs[1].digest else None) for d in good.blobs}

    def open_blob(digest: Digest) -> io.BufferedReader:
        with good.open_blob(digest) as f:
            data = served[digest] or f.read()
        return verifying(io.BytesIO(data), digest, len(data), "test")

    bad = PushPlan(good.blobs, good.manifests, open_blob, verifies=True)
    with FakeRegistry() as registry:
        with pytest.raises(DigestMismatch, match="does not match its digest"):
            push(registry.host, bad)
        assert digest_of(layer) not in registry.finished
        assert all(len(r.body) < len(layer) for r in uploads(registry, "PUT"))
