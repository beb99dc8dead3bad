"""The cache repository's entries as hostile data (tests/support/attacker.py's fake registry):
what is never used, what the key covers, and the prune that a registry may refuse."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from support.attacker import FakeRegistry, Reply, Seen, digest_of
from support.cli import lamina
from support.oci import tar_bytes

from lamina.errors import RegistryError, UsageError
from lamina.layers.compression import Compression, describe
from lamina.model import Descriptor, Digest, Layer, mediatypes
from lamina.registry import cache_repo, client
from lamina.registry.cache_repo import (
    ARTIFACT_TYPE,
    TAG_PREFIX,
    CacheRepo,
    entry_manifest,
    parse_cache_repo,
    remote_key,
)
from lamina.registry.options import Options
from lamina.store import BlobStore

KEY = "ab" * 32


@pytest.fixture
def env(env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    env.setattr(client, "RETRIES", 0)  # a poisoned or missing entry must be seen at once
    return env


def gz_layer() -> tuple[bytes, Layer]:
    """A real gzip layer (one file) and its Layer, as build_layer makes them."""
    import io

    from lamina.layers.pipeline import LayerStream

    out = io.BytesIO()
    stream = LayerStream(out, Compression.GZIP)
    tar = tar_bytes({"hello": b"hello cache\n"})
    stream.write(tar)
    result = stream.finish()
    data = out.getvalue()
    desc = Descriptor(mediatypes.OCI_LAYER_GZIP, Digest.of_bytes(data), len(data),
                      annotations={mediatypes.COMPRESSOR: describe(Compression.GZIP)})
    return data, Layer(desc, result.diff_id, result.uncompressed_size, 1, "")


def publish(registry: FakeRegistry, data: bytes, layer: Layer, key: str = KEY, *, doc: dict | None = None) -> None:
    """What a runner would have written: the blob and the entry, under the remote key's tag."""
    rkey = remote_key(key, Compression.GZIP)
    manifest = json.dumps(doc).encode() if doc is not None else entry_manifest(rkey, layer, "2026-01-01T00:00:00Z")
    registry.blobs[digest_of(data)] = data
    registry.manifests[TAG_PREFIX + rkey] = (mediatypes.OCI_MANIFEST, manifest)


def lookup(registry: FakeRegistry, tmp_path: Path, *, need_bytes: bool = True) -> tuple[Layer | None, list[str]]:
    notes: list[str] = []
    repo = CacheRepo(target=f"{registry.host}/team/cache", options=Options(), compression=Compression.GZIP,
                     note=notes.append, need_bytes=need_bytes)
    store = BlobStore(tmp_path / "store")
    try:
        return repo.lookup(KEY, "created by", store, lambda layer: None), notes
    finally:
        repo.close()


def test_a_good_entry_is_downloaded_verified_and_equal_to_the_built_layer(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data, layer = gz_layer()
    with FakeRegistry() as registry:
        publish(registry, data, layer)
        hit, notes = lookup(registry, tmp_path)
    assert notes == []
    assert hit is not None and hit.descriptor == layer.descriptor and hit.diff_id == layer.diff_id
    assert (tmp_path / "store" / "blobs" / "sha256" / layer.descriptor.digest.hex).read_bytes() == data


def test_a_push_only_build_never_downloads(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data, layer = gz_layer()
    with FakeRegistry() as registry:
        publish(registry, data, layer)
        hit, _ = lookup(registry, tmp_path, need_bytes=False)
        assert hit is not None and registry.count("GET", "/blobs/") == 0 and registry.count("HEAD", "/blobs/") == 1


def test_a_push_only_hit_fetched_for_another_registry_has_its_diff_id_checked(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A hit is mounted, never downloaded, when the push goes to the cache's registry; pushed
    elsewhere it is fetched, and then its bytes stream: digest and diff_id are both checked."""
    data, layer = gz_layer()
    rkey = remote_key(KEY, Compression.GZIP)
    with FakeRegistry() as registry:
        doc = json.loads(entry_manifest(rkey, layer, "2026-01-01T00:00:00Z"))
        doc["annotations"]["dev.lamina.cache.diff-id"] = "sha256:" + "6" * 64  # a lie only the bytes can show
        publish(registry, data, layer, doc=doc)
        repo = CacheRepo(target=f"{registry.host}/team/cache", options=Options(), compression=Compression.GZIP,
                         note=lambda _: None, need_bytes=False)
        store = BlobStore(tmp_path / "store")
        try:
            hit = repo.lookup(KEY, "created by", store, lambda layer: None)
            assert hit is not None and registry.count("GET", "/blobs/") == 0  # push-only: taken as the entry says
            fetch = repo.fetch_missing(store)
            assert fetch is not None
            with pytest.raises(RegistryError, match="does not match its diff_id"):
                fetch(layer.descriptor.digest)
        finally:
            repo.close()
    assert not store.has(layer.descriptor.digest)


@pytest.mark.parametrize("poison, why", [
    ("missing", "is missing"),
    ("replaced", "does not match its digest"),
    ("wrong-diff-id", "does not match its diff_id"),
    ("other-key", "it names key"),
    ("zstd", "not application/vnd.oci.image.layer.v1.tar+gzip"),
    ("not-ours", "not a lamina cache entry"),
    ("short-blob", "does not match the entry's digest and size"),
])
def test_a_poisoned_entry_is_ignored_with_a_note(env: pytest.MonkeyPatch, tmp_path: Path, poison: str, why: str) -> None:
    data, layer = gz_layer()
    rkey = remote_key(KEY, Compression.GZIP)
    with FakeRegistry() as registry:
        doc = json.loads(entry_manifest(rkey, layer, "2026-01-01T00:00:00Z"))
        if poison == "wrong-diff-id":
            doc["annotations"]["dev.lamina.cache.diff-id"] = "sha256:" + "0" * 64
        elif poison == "other-key":
            doc["annotations"]["dev.lamina.cache.key"] = "cd" * 32
        elif poison == "zstd":
            doc["layers"][0]["mediaType"] = mediatypes.OCI_LAYER_ZSTD
        elif poison == "not-ours":
            doc["artifactType"] = "application/something-else"
        publish(registry, data, layer, doc=doc)
        if poison == "missing":
            del registry.blobs[digest_of(data)]
        elif poison == "replaced":
            registry.blobs[digest_of(data)] = bytes(len(data))
        elif poison == "short-blob":
            registry.blobs[digest_of(data)] = data[:-1]
        hit, notes = lookup(registry, tmp_path)
    assert hit is None
    assert len(notes) == 1 and why in notes[0] and "ignored" in notes[0] and "building the layer" in notes[0]
    assert list((tmp_path / "store" / "blobs" / "sha256").iterdir()) == []  # nothing of it kept


def test_the_key_covers_the_cpu_family_for_gzip_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_repo.host_platform, "machine", lambda: "x86_64")
    x86 = {c: remote_key(KEY, c) for c in Compression}
    monkeypatch.setattr(cache_repo.host_platform, "machine", lambda: "aarch64")
    arm = {c: remote_key(KEY, c) for c in Compression}
    assert x86[Compression.GZIP] != arm[Compression.GZIP]
    assert x86[Compression.ZSTD] == arm[Compression.ZSTD] and x86[Compression.NONE] == arm[Compression.NONE]
    assert remote_key("cd" * 32, Compression.ZSTD) != arm[Compression.ZSTD]


def test_cache_repo_names_a_repository_not_an_image() -> None:
    assert parse_cache_repo("registry.example.com:5000/team/cache").repository == "team/cache"
    for bad in ("registry.example.com/team/cache:v1", "registry.example.com/cache@sha256:" + "a" * 64, "cache", "Not A Repo"):
        with pytest.raises(UsageError):
            parse_cache_repo(bad)


def test_bad_cache_repo_flag_and_spec_key_are_usage_errors(tmp_path: Path) -> None:
    res = lamina("build", "--add", f"{__file__}:/x", "--cache-repo", "host/repo:tag", "-o", str(tmp_path / "a.tar"))
    assert res.returncode == 2 and res.stderr.startswith("lamina: error: bad cache repository 'host/repo:tag'")
    spec = tmp_path / "lamina.toml"
    spec.write_text('cache_repo = "nope"\n')
    res = lamina("build", str(spec), "-o", str(tmp_path / "a.tar"))
    assert res.returncode == 2 and "cache_repo" in res.stderr and "REGISTRY/REPOSITORY" in res.stderr
    assert not (tmp_path / "a.tar").exists()


def _entries(registry: FakeRegistry, created: list[str]) -> list[str]:
    data, layer = gz_layer()
    tags = []
    for i, when in enumerate(created):
        rkey = f"{i:064x}"
        tags.append(TAG_PREFIX + rkey)
        registry.manifests[TAG_PREFIX + rkey] = (mediatypes.OCI_MANIFEST, entry_manifest(rkey, layer, when))
    registry.manifests["latest"] = (mediatypes.OCI_MANIFEST, b"{}")  # not an entry: never touched

    def tags_list(seen: Seen) -> Reply | None:
        if seen.route.endswith("/tags/list"):
            return Reply(200, {"Content-Type": "application/json"}, json.dumps({"tags": [*tags, "latest"]}).encode())
        return None

    registry.override = tags_list
    return tags


def test_prune_deletes_old_entries_by_digest(env: pytest.MonkeyPatch) -> None:
    now = datetime.datetime(2026, 6, 10, tzinfo=datetime.timezone.utc)
    with FakeRegistry() as registry:
        _entries(registry, ["2026-06-01T00:00:00Z", "2026-06-09T12:00:00Z"])
        inner = registry.override
        deleted: list[str] = []

        def with_delete(seen: Seen) -> Reply | None:
            if seen.method == "DELETE":
                deleted.append(seen.route.rsplit("/", 1)[1])
                return Reply(202)
            return inner(seen) if inner else None

        registry.override = with_delete
        assert cache_repo.prune(f"{registry.host}/team/cache", Options(), "7", now=now) == (1, 1)
    old = entry_manifest(f"{0:064x}", gz_layer()[1], "2026-06-01T00:00:00Z")
    assert deleted == [digest_of(old)]


def test_prune_says_when_the_registry_refuses_deletes(env: pytest.MonkeyPatch) -> None:
    with FakeRegistry() as registry:
        _entries(registry, ["2020-01-01T00:00:00Z"])
        inner = registry.override

        def refuse(seen: Seen) -> Reply | None:
            if seen.method == "DELETE":
                return Reply(405, {"Content-Type": "application/json"}, b'{"errors":[{"code":"UNSUPPORTED"}]}')
            return inner(seen) if inner else None

        registry.override = refuse
        with pytest.raises(RegistryError, match="does not allow deleting manifests"):
            cache_repo.prune(f"{registry.host}/team/cache", Options(), "1")
    assert ARTIFACT_TYPE.startswith("application/vnd.")


def test_prune_remote_needs_older_than() -> None:
    res = lamina("cache", "prune", "--remote", "127.0.0.1:1/team/cache")
    assert (res.returncode, res.stderr.strip()) == (
        2, "lamina: error: cache prune: --remote REGISTRY/REPO and --older-than DAYS go together")
    for bad in ("soon", "-1", "inf", "nan"):
        res = lamina("cache", "prune", "--remote", "127.0.0.1:1/team/cache", "--older-than", bad)
        assert (res.returncode, res.stderr.strip()) == (2, f"lamina: error: --older-than '{bad}': expected a number of days")
