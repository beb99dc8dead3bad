"""The layer cache shared through a registry (--cache-repo), against a real distribution
registry behind the counting proxy: two "runners" are two XDG_CACHE_HOMEs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.cli import lamina
from support.registry import DistributionRegistry, Proxy
from support.tools import require

pytestmark = pytest.mark.e2e

ARTIFACT_TYPE = "application/vnd.dev.lamina.layer-cache.v1"


@pytest.fixture(scope="module")
def server():
    server = DistributionRegistry(require("docker-registry"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def registry(server: DistributionRegistry):
    proxy = Proxy(server.port)
    yield proxy
    proxy.stop()


def runner(tmp_path: Path, name: str) -> dict[str, str]:
    """One CI runner: its own (cold) cache and docker config."""
    return {"DOCKER_CONFIG": str(tmp_path / name / "docker"), "XDG_CACHE_HOME": str(tmp_path / name / "cache"),
            "LAMINA_REGISTRY_BACKOFF": "0.05"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300 MB tree: three directories (three layers) of five 20 MB files, half of each compressible."""
    root = tmp_path_factory.mktemp("tree")
    for i in range(3):
        (root / f"part{i}").mkdir()
        for j in range(5):
            with open(root / f"part{i}" / f"file{j}", "wb") as f:
                for _ in range(10):
                    f.write(os.urandom(1 << 20))
                    f.write(bytes(1 << 20))
    return root


def spec_file(tmp_path: Path, tree: Path) -> Path:
    spec = tmp_path / "lamina.toml"
    layers = "\n".join(f'[[layer]]\nentries = [{{ src = "{tree / f"part{i}"}", dst = "/data/part{i}" }}]\n' for i in range(3))
    spec.write_text(layers)
    return spec


def layer_uploads(proxy: Proxy, layer_digests: set[str]) -> list[str]:
    """Upload requests (PUT/PATCH) that carried a layer of the image."""
    return [full for m, _, full in proxy.requests if m in ("PUT", "PATCH") and "/blobs/uploads/" in full
            and (m == "PATCH" or any(d in full for d in layer_digests))]


def test_two_runners_share_layers_through_the_registry(registry: Proxy, tree: Path, tmp_path: Path) -> None:
    spec = spec_file(tmp_path, tree)
    cache = f"{registry.host}/lamina/cache"
    registry.reset()
    first = lamina("build", str(spec), "--cache-repo", cache, "--push", f"{registry.host}/lamina/app:one",
                   "--metadata-file", str(tmp_path / "one.json"), env=runner(tmp_path, "a"))
    assert first.returncode == 0, first.stderr
    one = json.loads((tmp_path / "one.json").read_text())
    assert [layer["source"] for layer in one["platforms"][0]["layers"]] == ["built"] * 3
    assert "layers: 3 built, 0 from the local cache, 0 from" in first.stderr
    digests = {layer["digest"] for layer in one["platforms"][0]["layers"]}
    entries = [full for m, _, full in registry.requests if m == "PUT" and "/manifests/lamina-layer-" in full]
    assert len(entries) == 3  # one cache entry per layer, after the build
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                     f"docker://{cache}:{entries[0].rsplit('/', 1)[1]}"],
                                    capture_output=True, text=True, check=True).stdout)
    assert raw["artifactType"] == ARTIFACT_TYPE and raw["layers"][0]["digest"] in digests
    assert {"dev.lamina.cache.key", "dev.lamina.cache.diff-id", "dev.lamina.cache.uncompressed-size",
            "org.opencontainers.image.created"} <= set(raw["annotations"])

    registry.reset()
    second = lamina("build", str(spec), "--cache-repo", cache, "--push", f"{registry.host}/lamina/app2:two",
                    "--metadata-file", str(tmp_path / "two.json"), env=runner(tmp_path, "b"))
    assert second.returncode == 0, second.stderr
    two = json.loads((tmp_path / "two.json").read_text())
    assert [layer["source"] for layer in two["platforms"][0]["layers"]] == ["cache repo"] * 3, second.stderr  # no compression work
    assert "layers: 0 built, 0 from the local cache, 3 from" in second.stderr and "(0 bytes downloaded)" in second.stderr
    assert two["digest"] == one["digest"]
    assert layer_uploads(registry, digests) == []  # 0 layer bytes uploaded ...
    assert not [p for m, p, _ in registry.requests if m == "GET" and any(d in p for d in digests)]  # ... or downloaded
    mounts = [full for m, _, full in registry.requests if m == "POST" and "mount=" in full]
    assert len(mounts) == 3 and all("from=lamina/cache" in m for m in mounts)
    assert not [full for m, _, full in registry.requests if m == "PUT" and "/manifests/lamina-layer-" in full]


def test_a_tarball_build_downloads_verified_into_the_local_cache(registry: Proxy, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(2 << 20))
    cache = f"{registry.host}/lamina/cache-tar"
    args = ("build", "--add", f"{data}:/data", "--cache-repo", cache)
    fresh = lamina(*args, "-o", str(tmp_path / "a.tar"), env=runner(tmp_path, "a"))
    assert fresh.returncode == 0, fresh.stderr
    registry.reset()
    warm = lamina(*args, "-o", str(tmp_path / "b.tar"), "--metadata-file", str(tmp_path / "b.json"), env=runner(tmp_path, "b"))
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout == fresh.stdout
    # a cached layer is byte-identical to a fresh build: the two tarballs are the same file
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    layer = json.loads((tmp_path / "b.json").read_text())["platforms"][0]["layers"][0]
    assert layer["source"] == "cache repo"
    assert registry.count("GET", f"/blobs/{layer['digest']}") == 1
    local = Path(runner(tmp_path, "b")["XDG_CACHE_HOME"]) / "lamina" / "layers" / "blobs" / "sha256" / layer["digest"][7:]
    assert hashlib.sha256(local.read_bytes()).hexdigest() == layer["digest"][7:]
    # third run on runner b: the local cache answers, the registry is not asked
    registry.reset()
    again = lamina(*args, "-o", str(tmp_path / "c.tar"), "--metadata-file", str(tmp_path / "c.json"), env=runner(tmp_path, "b"))
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "c.json").read_text())["platforms"][0]["layers"][0]["source"] == "local cache"
    assert registry.count("GET", "/manifests/lamina-layer-") == 0


def _blob_file(server: DistributionRegistry, digest: str) -> Path:
    return server.dir / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data"


def test_poisoned_entries_are_ignored_and_rebuilt(registry: Proxy, server: DistributionRegistry, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(1 << 20))
    cache = f"{registry.host}/lamina/cache-poison"
    args = ("build", "--add", f"{data}:/data", "--cache-repo", cache)
    fresh = lamina(*args, "-o", str(tmp_path / "a.tar"), "--metadata-file", str(tmp_path / "a.json"), env=runner(tmp_path, "a"))
    assert fresh.returncode == 0, fresh.stderr
    digest = json.loads((tmp_path / "a.json").read_text())["platforms"][0]["layers"][0]["digest"]
    # Replaced: the registry's stored bytes are no longer the blob its digest names.
    blob = _blob_file(server, digest)
    original = blob.read_bytes()
    blob.write_bytes(bytes(len(original)))
    try:
        res = lamina(*args, "-o", str(tmp_path / "b.tar"), "--metadata-file", str(tmp_path / "b.json"), env=runner(tmp_path, "b"))
        assert res.returncode == 0, res.stderr
        assert "ignored" in res.stderr and "building the layer" in res.stderr
        assert json.loads((tmp_path / "b.json").read_text())["platforms"][0]["layers"][0]["source"] == "built"
        assert (tmp_path / "b.tar").read_bytes() == (tmp_path / "a.tar").read_bytes()
    finally:
        blob.write_bytes(original)
    # Missing: the blob is deleted from the cache repository; a pushing build (which would
    # not download) sees it is gone and rebuilds, and re-publishes it.
    import urllib.request

    req = urllib.request.Request(f"http://{server.host}/v2/lamina/cache-poison/blobs/{digest}", method="DELETE")
    assert urllib.request.urlopen(req).status == 202
    res = lamina(*args, "--push", f"{registry.host}/lamina/poison:v1", "--metadata-file", str(tmp_path / "c.json"),
                 env=runner(tmp_path, "c"))
    assert res.returncode == 0, res.stderr
    assert f"its layer {digest} is missing" in res.stderr
    assert json.loads((tmp_path / "c.json").read_text())["platforms"][0]["layers"][0]["source"] == "built"
    assert res.stdout.strip().split("@")[1] == fresh.stdout.strip()
    res = lamina(*args, "-o", str(tmp_path / "d.tar"), "--metadata-file", str(tmp_path / "d.json"), env=runner(tmp_path, "d"))
    assert json.loads((tmp_path / "d.json").read_text())["platforms"][0]["layers"][0]["source"] == "cache repo", res.stderr


def test_readonly_never_writes(registry: Proxy, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(1 << 16))
    registry.reset()
    spec = tmp_path / "lamina.toml"  # the spec names the cache repository; the environment makes it read-only
    spec.write_text(f'cache_repo = "{registry.host}/lamina/cache-ro"\n[[layer]]\nentries = [{{ src = "{data}", dst = "/data" }}]\n')
    res = lamina("build", str(spec), "-o", str(tmp_path / "a.tar"), env={**runner(tmp_path, "a"), "LAMINA_CACHE_REPO_READONLY": "1"})
    assert res.returncode == 0, res.stderr
    assert registry.count("GET", "/manifests/lamina-layer-") == 1
    assert [m for m, _, _ in registry.requests if m not in ("GET", "HEAD")] == []


def test_an_unreachable_cache_repo_is_a_note_not_a_failure(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"x")
    from support.registry import free_port

    res = lamina("build", "--add", f"{data}:/data", "--cache-repo", f"127.0.0.1:{free_port()}/lamina/cache",
                 "-o", str(tmp_path / "a.tar"), env={**runner(tmp_path, "a"), "LAMINA_REGISTRY_RETRIES": "0"})
    assert res.returncode == 0, res.stderr
    assert "unavailable" in res.stderr and "building without it" in res.stderr


def test_a_413_on_the_whole_blob_falls_back_to_chunks(registry: Proxy, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(3 << 20))
    registry.reset()
    registry.faults = [413]
    registry.fault_filter = ("PUT", "/blobs/uploads/")
    res = lamina("build", "--add", f"{data}:/data", "--compression", "none", "--push", f"{registry.host}/lamina/big413:v1",
                 env=runner(tmp_path, "a"))
    assert res.returncode == 0, res.stderr
    assert registry.count("PATCH", "/blobs/uploads/") >= 1
    check = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/lamina/big413:v1"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_prune_remote_deletes_old_entries(registry: Proxy, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(1 << 16))
    cache = f"{registry.host}/lamina/cache-prune"
    res = lamina("build", "--add", f"{data}:/data", "--cache-repo", cache, "-o", str(tmp_path / "a.tar"), env=runner(tmp_path, "a"))
    assert res.returncode == 0, res.stderr
    keep = lamina("cache", "prune", "--remote", cache, "--older-than", "1", env=runner(tmp_path, "a"))
    assert (keep.returncode, keep.stdout.strip()) == (0, f"deleted 0 cache entries from {cache}; 1 remain"), keep.stderr
    drop = lamina("cache", "prune", "--remote", cache, "--older-than", "0", env=runner(tmp_path, "a"))
    assert (drop.returncode, drop.stdout.strip()) == (0, f"deleted 1 cache entries from {cache}; 0 remain"), drop.stderr
    res = lamina("build", "--add", f"{data}:/data", "-o", str(tmp_path / "b.tar"),
                 "--metadata-file", str(tmp_path / "b.json"), env={**runner(tmp_path, "b"), "LAMINA_CACHE_REPO": cache})
    assert json.loads((tmp_path / "b.json").read_text())["platforms"][0]["layers"][0]["source"] == "built", res.stderr
    assert "layers: 1 built" in res.stderr  # the environment named the cache repository
    shutil.rmtree(tmp_path / "a", ignore_errors=True)


def test_a_300_mb_layer_goes_in_one_put_with_flat_memory(registry: Proxy, tmp_path: Path) -> None:
    """The default push: one streamed PUT per blob (no PATCH), memory flat however large the blob."""
    import sys

    from support.cli import SRC, build_ok

    big = tmp_path / "big"
    with open(big, "wb") as f:
        for _ in range(300):
            f.write(os.urandom(1 << 20))
    build_ok("--add", f"{big}:/big", "--compression", "none", "--oci-dir", str(tmp_path / "layout"))
    registry.reset()
    peak = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    cmd = [sys.executable, "-c", peak, sys.executable, "-m", "lamina", "push", str(tmp_path / "layout"),
           f"{registry.host}/lamina/big-mono:v1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, **runner(tmp_path, "a"), "PYTHONPATH": str(SRC)})
    assert res.returncode == 0, res.stderr
    peak_mb = int(res.stdout.strip().splitlines()[-1]) / 1024
    assert peak_mb < 150, f"peak RSS {peak_mb:.0f} MB pushing a 300 MB layer"
    assert registry.count("PATCH", "/blobs/uploads/") == 0
    assert registry.count("PUT", "/blobs/uploads/") == 2  # the config and the layer, whole


def test_a_hit_pushed_to_another_registry_is_fetched_then_verified(registry: Proxy, tmp_path: Path) -> None:
    """The cache repository is on one registry, the image goes to another: no mount is possible,
    so the push fetches the cached layer (only then) and uploads it there."""
    data = tmp_path / "data"
    data.write_bytes(os.urandom(1 << 20))
    cache = f"{registry.host}/lamina/cache-far"
    first = lamina("build", "--add", f"{data}:/data", "--cache-repo", cache, "-o", str(tmp_path / "a.tar"),
                   env=runner(tmp_path, "a"))
    assert first.returncode == 0, first.stderr
    other = DistributionRegistry(require("docker-registry"))
    try:
        registry.reset()
        res = lamina("build", "--add", f"{data}:/data", "--cache-repo", cache, "--push", f"{other.host}/lamina/far:v1",
                     "--metadata-file", str(tmp_path / "b.json"), env=runner(tmp_path, "b"))
        assert res.returncode == 0, res.stderr
        layer = json.loads((tmp_path / "b.json").read_text())["platforms"][0]["layers"][0]
        assert layer["source"] == "cache repo"
        assert registry.count("GET", f"/blobs/{layer['digest']}") == 1  # fetched once, for the upload
        assert res.stdout.strip().split("@")[1] == first.stdout.strip()
        check = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{other.host}/lamina/far:v1",
                                f"oci-archive:{tmp_path / 'far.tar'}"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    finally:
        other.stop()


def test_a_tarball_layer_is_shared_too_and_lint_reads_the_input(registry: Proxy, tmp_path: Path) -> None:
    """--tarball layers are keyed by the tarball's content; a push-only hit is never downloaded,
    even though build-time lint reads files of that layer (from the input tarball on disk)."""
    import tarfile

    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "big").write_bytes(os.urandom(1 << 20))
    with tarfile.open(tmp_path / "rootfs.tar", "w") as t:
        t.add(etc, arcname="etc")
    cache = f"{registry.host}/lamina/cache-tarball"
    args = ("build", "--tarball", str(tmp_path / "rootfs.tar"), "--cache-repo", cache)
    first = lamina(*args, "--push", f"{registry.host}/lamina/rootfs:a", env=runner(tmp_path, "a"))
    assert first.returncode == 0, first.stderr
    registry.reset()
    second = lamina(*args, "--push", f"{registry.host}/lamina/rootfs:b", "--metadata-file", str(tmp_path / "b.json"),
                    env=runner(tmp_path, "b"))
    assert second.returncode == 0, second.stderr
    layer = json.loads((tmp_path / "b.json").read_text())["platforms"][0]["layers"][0]
    assert layer["source"] == "cache repo"
    assert registry.count("GET", f"/blobs/{layer['digest']}") == 0
    assert second.stdout.strip().split("@")[1] == first.stdout.strip().split("@")[1]
