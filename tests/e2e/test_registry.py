"""Push and pull against a real distribution registry on 127.0.0.1 (through a counting proxy)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from support.cli import SRC, build_ok, lamina
from support.registry import DistributionRegistry, Proxy
from support.tools import require

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def registry():
    server = DistributionRegistry(require("docker-registry"))
    proxy = Proxy(server.port)
    yield proxy
    proxy.stop()
    server.stop()


@pytest.fixture
def env(tmp_path: Path, registry: Proxy) -> dict[str, str]:
    """Each test: its own docker config and cache, and a clean request log."""
    registry.reset()
    registry.bearer = None
    return {"DOCKER_CONFIG": str(tmp_path / "docker"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "LAMINA_REGISTRY_BACKOFF": "0.05"}


@pytest.fixture(scope="module")
def hello_image(testdata_out: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("img") / "hello.tar"
    build_ok("--add", f"{testdata_out / 'hello-amd64'}:/hello", "--add", f"{testdata_out / 'cacert.pem'}:/etc/ssl/certs/",
             "--cmd", '["/hello"]', "-o", str(out))
    return out


def blob_uploads(proxy: Proxy) -> int:
    return proxy.count("PUT", "/blobs/uploads/") + proxy.count("PATCH", "/blobs/uploads/")


def test_build_push_then_skopeo_and_docker_pull(registry: Proxy, env, testdata_out: Path, dockerd, tmp_path: Path) -> None:
    ref = f"{registry.host}/lamina/hello:v1"
    res = lamina("build", "--add", f"{testdata_out / 'hello-amd64'}:/hello", "--cmd", '["/hello"]', "--push", ref,
                 "--metadata-file", str(tmp_path / "meta.json"), env=env)
    assert res.returncode == 0, res.stderr
    pushed = res.stdout.strip().splitlines()[-1]
    name, digest = pushed.split("@")
    assert name == f"{registry.host}/lamina/hello"
    inspected = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"],
                                          capture_output=True, text=True, check=True).stdout)
    assert inspected["Digest"] == digest
    assert json.loads((tmp_path / "meta.json").read_text())["pushed"] == pushed
    dockerd.docker("pull", pushed)
    assert dockerd.docker("run", "--pull", "never", "--rm", "--network", "none", pushed).stdout == "hello, scratch!\n"


def test_second_push_uploads_nothing_and_other_repo_mounts(registry: Proxy, env, hello_image: Path) -> None:
    first = lamina("push", str(hello_image), f"{registry.host}/lamina/a:v1", env=env)
    assert first.returncode == 0, first.stderr
    assert blob_uploads(registry) == 3  # config and two layers
    registry.reset()
    again = lamina("push", str(hello_image), f"{registry.host}/lamina/a:v2", env=env)
    assert again.returncode == 0 and blob_uploads(registry) == 0
    assert registry.count("HEAD", "/blobs/") == 3
    registry.reset()
    other = lamina("push", str(hello_image), f"{registry.host}/lamina/b:v1", env=env)
    assert other.returncode == 0, other.stderr
    assert blob_uploads(registry) == 0
    mounts = [full for m, _, full in registry.requests if m == "POST" and "mount=" in full]
    assert len(mounts) == 3 and all("from=lamina/a" in m for m in mounts)
    assert other.stdout.strip().split("@")[1] == first.stdout.strip().split("@")[1]


def test_big_layer_pushes_in_chunks_with_flat_memory(registry: Proxy, env, tmp_path: Path) -> None:
    big = tmp_path / "big"
    with open(big, "wb") as f:
        for _ in range(300):
            f.write(os.urandom(1 << 20))
    build_ok("--add", f"{big}:/big", "--compression", "none", "--oci-dir", str(tmp_path / "layout"))
    peak = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    cmd = [sys.executable, "-c", peak, sys.executable, "-m", "lamina", "push", "--chunk-size", "32M",
           str(tmp_path / "layout"), f"{registry.host}/lamina/big:v1"]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env, "PYTHONPATH": str(SRC)}, timeout=600)
    assert res.returncode == 0, res.stderr
    peak_mb = int(res.stdout.strip().splitlines()[-1]) / 1024
    assert peak_mb < 150, f"peak RSS {peak_mb:.0f} MB pushing a 300 MB layer"
    assert registry.count("PATCH", "/blobs/uploads/") >= 300 // 32


def test_faults_are_retried_and_give_up_cleanly(registry: Proxy, env, hello_image: Path) -> None:
    registry.faults = [500, 503, "drop", 502]
    registry.fault_filter = None
    res = lamina("push", str(hello_image), f"{registry.host}/lamina/flaky:v1", env=env)
    assert res.returncode == 0, res.stderr
    check = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/lamina/flaky:v1"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    registry.reset()
    registry.faults = [503] * 50
    registry.fault_filter = ("PUT", "/manifests/")
    res = lamina("push", str(hello_image), f"{registry.host}/lamina/down:v1", env={**env, "LAMINA_REGISTRY_RETRIES": "3"})
    assert res.returncode == 1
    assert res.stderr.strip().startswith(f"lamina: error: {registry.host}: put manifest sha256:")
    assert res.stderr.strip().endswith("HTTP 503 Service Unavailable (UNAVAILABLE: injected failure) after 4 attempts")
    assert registry.count("PUT", "/manifests/") == 4


def test_chunked_upload_resumes_after_a_dropped_connection(registry: Proxy, env, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(3 << 20))
    build_ok("--add", f"{data}:/data", "--compression", "none", "--oci-dir", str(tmp_path / "layout"))
    registry.faults = ["drop"]
    registry.fault_filter = ("PATCH", "/blobs/uploads/")
    res = lamina("push", "--chunk-size", "1M", str(tmp_path / "layout"), f"{registry.host}/lamina/resume:v1", env=env)
    assert res.returncode == 0, res.stderr
    assert registry.count("GET", "/blobs/uploads/") >= 1  # asked where the upload stood


def test_bearer_auth_from_config_json_and_credential_helper(registry: Proxy, env, hello_image: Path, tmp_path: Path) -> None:
    registry.bearer = ("alice", "s3cret-pw")
    ref = f"{registry.host}/lamina/private:v1"
    res = lamina("--debug", "push", str(hello_image), ref, env=env)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == f"lamina: error: {registry.host}: authentication failed anonymously (HTTP 401 Unauthorized (UNAUTHORIZED: bad credentials))"
    login = subprocess.run([sys.executable, "-m", "lamina", "login", registry.host, "-u", "alice", "--password-stdin"],
                           input="wrong\n", capture_output=True, text=True, env={**os.environ, **env, "PYTHONPATH": str(SRC)})
    assert login.returncode == 1 and "authentication failed as 'alice'" in login.stderr and "wrong" not in login.stderr
    login = subprocess.run([sys.executable, "-m", "lamina", "login", registry.host, "-u", "alice", "--password-stdin"],
                           input="s3cret-pw\n", capture_output=True, text=True, env={**os.environ, **env, "PYTHONPATH": str(SRC)})
    assert login.returncode == 0, login.stderr
    config = json.loads((Path(env["DOCKER_CONFIG"]) / "config.json").read_text())
    assert registry.host in config["auths"]
    assert stat.S_IMODE((Path(env["DOCKER_CONFIG"]) / "config.json").stat().st_mode) == 0o600
    res = lamina("--debug", "push", str(hello_image), ref, env=env)
    assert res.returncode == 0, res.stderr
    assert "s3cret-pw" not in res.stdout + res.stderr
    assert registry.tokens_issued >= 1
    # A credential helper named in credHelpers, found on PATH.
    helper_dir = tmp_path / "bin"
    helper_dir.mkdir()
    helper = helper_dir / "docker-credential-lamina-test"
    helper.write_text('#!/bin/sh\nread host\necho \'{"ServerURL":"\'$host\'","Username":"alice","Secret":"s3cret-pw"}\'\n')
    helper.chmod(0o755)
    (Path(env["DOCKER_CONFIG"]) / "config.json").write_text(json.dumps({"credHelpers": {registry.host: "lamina-test"}}))
    res = lamina("--debug", "push", str(hello_image), f"{registry.host}/lamina/private:v2",
                 env={**env, "PATH": f"{helper_dir}:{os.environ['PATH']}"})
    assert res.returncode == 0, res.stderr
    assert "s3cret-pw" not in res.stdout + res.stderr


def _manifest_of(tarball: Path) -> dict:
    with tarfile.open(tarball) as t:
        index = json.load(t.extractfile("index.json"))  # type: ignore[arg-type]
        return json.load(t.extractfile(f"blobs/sha256/{index['manifests'][0]['digest'][7:]}"))  # type: ignore[arg-type]


def test_pull_base_by_tag_and_digest_then_offline(registry: Proxy, env, hello_image: Path, tmp_path: Path,
                                                 testdata_out: Path) -> None:
    pushed = lamina("push", str(hello_image), f"{registry.host}/lamina/base:v1", env=env).stdout.strip()
    by_tag = build_ok_env(env, "--from", f"{registry.host}/lamina/base:v1", "--add", f"{testdata_out / 'hello-c'}:/c",
                          "-o", str(tmp_path / "a.tar"))
    by_digest = build_ok_env(env, "--from", pushed, "--add", f"{testdata_out / 'hello-c'}:/c", "-o", str(tmp_path / "b.tar"))
    # The same image; only org.opencontainers.image.base.name says how the base was named.
    a, b = (_manifest_of(tmp_path / name) for name in ("a.tar", "b.tar"))
    assert a["annotations"].pop("org.opencontainers.image.base.name") == f"{registry.host}/lamina/base:v1"
    assert b["annotations"].pop("org.opencontainers.image.base.name") == pushed
    assert a == b and a["annotations"]["org.opencontainers.image.base.digest"] == pushed.split("@")[1]
    assert by_tag != by_digest
    res = lamina("build", "--hermetic", "--from", f"{registry.host}/lamina/base:v1", "-o", str(tmp_path / "c.tar"), env=env)
    assert res.returncode == 1 and "must be pinned by digest" in res.stderr
    # The registry goes away: the cached base is used.
    registry.faults = ["drop"] * 1000
    offline_digest = build_ok_env(env, "--from", pushed, "--add", f"{testdata_out / 'hello-c'}:/c", "-o", str(tmp_path / "d.tar"))
    assert offline_digest == by_digest
    res = lamina("build", "--from", f"{registry.host}/lamina/base:v1", "--add", f"{testdata_out / 'hello-c'}:/c",
                 "-o", str(tmp_path / "e.tar"), env={**env, "LAMINA_REGISTRY_RETRIES": "1"})
    assert res.returncode == 0, res.stderr
    assert "registry unreachable" in res.stderr and res.stdout.strip() == by_tag


def _pulled(registry: Proxy, env: dict[str, str], image: Path, name: str, out: Path) -> tuple[str, str, Path]:
    """``image`` pushed as lamina/NAME:v1 and built from into ``out``: (its reference, the
    build's digest, the pulled images' cache it now holds)."""
    ref = f"{registry.host}/lamina/{name}:v1"
    lamina("push", str(image), ref, env=env)
    return ref, build_ok_env(env, "--from", ref, "-o", str(out)), Path(env["XDG_CACHE_HOME"]) / "lamina" / "images"


def test_prune_empties_the_pulled_images_but_what_a_build_holds(registry: Proxy, env, hello_image: Path,
                                                                tmp_path: Path) -> None:
    from lamina import store as store_module
    from lamina.model import Digest

    ref, first, images = _pulled(registry, env, hello_image, "prune", tmp_path / "a.tar")
    blobs = images / "blobs" / "sha256"
    layer = _manifest_of(tmp_path / "a.tar")["layers"][0]["digest"]
    assert (blobs / layer[7:]).is_file() and (images / "diff_ids" / "sha256" / layer[7:]).is_file()
    assert ref in json.loads((images / "refs.json").read_text())
    # A build still running holds the layer (as Puller does, with a shared flock): prune leaves it.
    fds: list[int] = []
    assert store_module.BlobStore(images).hold(Digest.parse(layer), fds)
    pulled = len(list(blobs.iterdir()))  # the manifest, the config and the layers
    try:
        res = lamina("cache", "prune", env=env)
        assert res.returncode == 0, res.stderr
        assert [p.name for p in blobs.iterdir()] == [layer[7:]]
        assert f"removed {pulled - 1} blobs of pulled images" in res.stdout
    finally:
        for fd in fds:
            os.close(fd)
    assert json.loads((images / "refs.json").read_text()) == {}  # its manifest went: no offline fallback
    registry.faults = ["drop"] * 1000
    res = lamina("build", "--from", ref, "-o", str(tmp_path / "b.tar"), env={**env, "LAMINA_REGISTRY_RETRIES": "1"})
    assert res.returncode != 0 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "b.tar").exists()
    registry.faults = []
    registry.reset()
    assert build_ok_env(env, "--from", ref, "-o", str(tmp_path / "c.tar")) == first  # pulled again
    assert registry.count("GET", "/blobs/sha256:") >= 1
    res = lamina("cache", "prune", env=env)  # nothing held now: all of it goes
    assert res.returncode == 0 and list(blobs.iterdir()) == [] and list((images / "diff_ids" / "sha256").iterdir()) == []


def test_prune_meanwhile_leaves_a_running_pull_its_cached_layers(registry: Proxy, env, hello_image: Path,
                                                                  tmp_path: Path, testdata_out: Path) -> None:
    """A build pulling an image that shares layers with one pulled before holds those layers as
    it finds them cached; a prune while it waits for the rest leaves them, and the build succeeds."""
    import threading
    import time

    base = f"{registry.host}/lamina/shared:v1"
    lamina("push", str(hello_image), base, env=env)
    build_ok_env(env, "--from", base, "-o", str(tmp_path / "a.tar"))  # its layers are cached now
    other = f"{registry.host}/lamina/shared:v2"  # the same layers, and one more
    build_ok_env(env, "--from", base, "--add", f"{testdata_out / 'hello-c'}:/c", "--push", other)
    blobs = Path(env["XDG_CACHE_HOME"]) / "lamina" / "images" / "blobs" / "sha256"
    shared = {d["digest"] for d in _manifest_of(tmp_path / "a.tar")["layers"]}
    v1_only = {f"sha256:{p.name}" for p in blobs.iterdir()} - shared  # v1's manifest and config
    assert len(v1_only) == 2
    gate = threading.Event()
    registry.reset()
    registry.fault_filter = ("GET", "/blobs/sha256:")  # the first blob v2 lacks waits at the proxy
    registry.faults = [gate]
    pull = subprocess.Popen([sys.executable, "-m", "lamina", "build", "-q", "--from", other, "-o", str(tmp_path / "b.tar")],
                            env={**os.environ, **env, "PYTHONPATH": str(SRC)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while not registry.count("GET", "/blobs/sha256:") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the cached layers were held as the pull found them, before that request
        res = lamina("cache", "prune", env=env)
        assert res.returncode == 0, res.stderr
        left = {f"sha256:{p.name}" for p in blobs.iterdir()}
        assert shared <= left and not v1_only & left  # the pull's layers held, v1's own blobs gone
    finally:
        gate.set()
        out, err = pull.communicate(timeout=120)
    assert pull.returncode == 0, err
    with tarfile.open(tmp_path / "b.tar") as t:
        names = t.getnames()
    assert all(f"blobs/sha256/{d[7:]}" in names for d in shared)
    assert lamina("cache", "prune", env=env).returncode == 0 and list(blobs.iterdir()) == []  # released at exit


@pytest.mark.parametrize("planted", ["images symlink", "blobs symlink", "sha256 symlink"])
def test_prune_never_follows_a_symlink_planted_in_the_cache(env, tmp_path: Path, planted: str) -> None:
    """Whoever can write a shared cache cannot make another user's prune delete that user's
    own files: the cache's directories are opened without following links."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("years of work")
    images = Path(env["XDG_CACHE_HOME"]) / "lamina" / "images"
    (images / "blobs").mkdir(parents=True)
    if planted == "images symlink":
        (images / "blobs").rmdir()
        images.rmdir()
        images.symlink_to(victim)
        (victim / "blobs").mkdir()
        (victim / "blobs" / "sha256").mkdir()
        (victim / "blobs" / "sha256" / "own.txt").write_text("mine")
        (victim / "refs.json").write_text('{"x": {"digest": "sha256:00"}}')
    elif planted == "blobs symlink":
        (images / "blobs").rmdir()
        (images / "blobs").symlink_to(tmp_path)
        (tmp_path / "sha256").symlink_to(victim)
    else:
        (images / "blobs" / "sha256").symlink_to(victim)
    layers = Path(env["XDG_CACHE_HOME"]) / "lamina" / "layers" / "blobs"
    layers.mkdir(parents=True)
    (layers / "sha256").symlink_to(victim)
    res = lamina("cache", "prune", env=env)
    assert (victim / "thesis.txt").read_text() == "years of work"
    if planted == "images symlink":
        assert (victim / "blobs" / "sha256" / "own.txt").exists()
        assert (victim / "refs.json").read_text() == '{"x": {"digest": "sha256:00"}}'  # not rewritten
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr


def test_prune_and_pull_take_a_damaged_image_cache_in_their_stride(registry: Proxy, env, hello_image: Path,
                                                                  tmp_path: Path) -> None:
    ref, first, images = _pulled(registry, env, hello_image, "damaged", tmp_path / "a.tar")
    (images / "refs.json").write_text("[" * 100_000 + "]" * 100_000)
    (images / "diff_ids" / "sha256" / ("0" * 64)).mkdir()
    assert build_ok_env(env, "--from", ref, "-o", str(tmp_path / "b.tar")) == first
    res = lamina("cache", "prune", env=env)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert list((images / "blobs" / "sha256").iterdir()) == []


def test_an_api_caller_releases_what_it_pulled_when_done(registry: Proxy, env, hello_image: Path) -> None:
    """A long-lived process (a build service) holds pulled blobs only while it uses them."""
    ref = f"{registry.host}/lamina/api:v1"
    lamina("push", str(hello_image), ref, env=env)
    script = ("import lamina, os, subprocess, sys\n"
              f"with lamina.open_image({ref!r}) as image:\n"
              "    during = subprocess.run([sys.executable, '-m', 'lamina', 'cache', 'prune'], capture_output=True, text=True).stdout\n"
              "after = subprocess.run([sys.executable, '-m', 'lamina', 'cache', 'prune'], capture_output=True, text=True).stdout\n"
              "print(during.splitlines()[-1]); print(after.splitlines()[-1]); print(len(os.listdir('/proc/self/fd')))\n")
    res = subprocess.run([sys.executable, "-c", script], env={**os.environ, **env, "PYTHONPATH": str(SRC)},
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    during, after, _ = res.stdout.splitlines()
    assert during.startswith("removed 0 blobs of pulled images"), during  # all in use
    assert not after.startswith("removed 0 "), after  # released when the block ended


def build_ok_env(env: dict[str, str], *args: str) -> str:
    res = lamina("build", *args, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


def test_bad_references(env, hello_image: Path) -> None:
    res = lamina("push", str(hello_image), "Not A Ref", env=env)
    assert (res.returncode, res.stderr.strip()) == (2, "lamina: error: bad image reference 'Not A Ref': expected [host[:port]/]name[:tag][@digest]")


def test_tls_registry_with_htpasswd_basic_auth(env, hello_image: Path, test_ca, tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    out = subprocess.run([require("htpasswd"), "-Bbn", "bob", "hunter2-pw"], capture_output=True, text=True, check=True).stdout
    htpasswd.write_text(out)
    server = DistributionRegistry(require("docker-registry"), htpasswd=htpasswd, tls=(test_ca.cert, test_ca.key))
    try:
        host = server.host
        ref = f"{host}/lamina/tls:v1"
        res = lamina("push", str(hello_image), ref, env=env)
        assert res.returncode == 1
        assert res.stderr.startswith(f"lamina: error: {host}: check blob") and "TLS certificate not trusted" in res.stderr
        res = lamina("push", "--ca-file", str(test_ca.ca_pem), str(hello_image), ref, env=env)
        assert res.returncode == 1
        assert f"{host}: authentication required and no credentials found (try 'lamina login {host}')" in res.stderr
        creds = {"LAMINA_REGISTRY_USERNAME": "bob", "LAMINA_REGISTRY_PASSWORD": "wrong-pw"}
        res = lamina("push", "--ca-file", str(test_ca.ca_pem), str(hello_image), ref, env={**env, **creds})
        assert res.returncode == 1 and "LAMINA_REGISTRY_HOST is not" in res.stderr  # env credentials name their registry
        creds["LAMINA_REGISTRY_HOST"] = host
        res = lamina("--debug", "push", "--ca-file", str(test_ca.ca_pem), str(hello_image), ref, env={**env, **creds})
        assert res.returncode == 1 and "authentication failed as 'bob'" in res.stderr and "wrong-pw" not in res.stderr
        creds["LAMINA_REGISTRY_PASSWORD"] = "hunter2-pw"
        res = lamina("--debug", "push", str(hello_image), ref, env={**env, **creds, "SSL_CERT_FILE": str(test_ca.ca_pem)})
        assert res.returncode == 0, res.stderr
        assert "hunter2" not in res.stdout + res.stderr
    finally:
        server.stop()


def test_push_multi_platform_index_and_docker_pull(registry: Proxy, env, testdata_out: Path, dockerd) -> None:
    ref = f"{registry.host}/lamina/multi:v1"
    res = lamina("build", "--platform", "linux/amd64,linux/arm64", "--add", f"{testdata_out}/hello-{{arch}}:/hello",
                 "--cmd", '["/hello"]', "--push", ref, env=env)
    assert res.returncode == 0, res.stderr
    digest = res.stdout.strip().split("@")[1]
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                                    capture_output=True, text=True, check=True).stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["amd64", "arm64"]
    assert f"sha256:{__import__('hashlib').sha256(json.dumps(raw, separators=(',', ':'), ensure_ascii=False).encode()).hexdigest()}" == digest
    dockerd.docker("pull", "--platform", "linux/amd64", ref)
    assert dockerd.docker("run", "--pull", "never", "--rm", "--network", "none", ref).stdout == "hello, scratch!\n"


def test_push_with_an_attached_sbom(registry: Proxy, env, testdata_out: Path, tmp_path: Path) -> None:
    ref = f"{registry.host}/lamina/with-sbom:v1"
    res = lamina("build", "--add", f"{testdata_out / 'hello-c'}:/hello", "--cmd", '["/hello"]', "--sbom", "spdx",
                 "--sbom-attach", "--oci-dir", str(tmp_path / "layout"), "--push", ref, env=env)
    assert res.returncode == 0, res.stderr
    image_digest = res.stdout.strip().split("@")[1]
    attached = json.loads((tmp_path / "layout" / "index.json").read_text())["manifests"][1]["digest"]
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                     f"docker://{registry.host}/lamina/with-sbom@{attached}"],
                                    capture_output=True, text=True, check=True).stdout)
    assert raw["subject"]["digest"] == image_digest and raw["artifactType"] == "application/spdx+json"
