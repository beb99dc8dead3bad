"""lamina's registry client against a registry run by an attacker (tests/support/attacker.py).

Every fake server records every request's headers: the credential tests assert which
servers saw an Authorization header, and which never did.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.attacker import FakeRegistry, FakeServer, Reply, Seen, TokenService, basic, cert_for, endless, trickle
from support.cli import build_ok, lamina

from lamina.errors import AuthError, DigestMismatch, ImageError, LaminaError, RegistryError
from lamina.model import Descriptor, Digest, Reference
from lamina.registry import api, auth, client
from lamina.registry.client import Registry
from lamina.registry.options import Options
from lamina.registry.pull import fetch
from lamina.sources.base import is_registry_ref
from lamina.registry.push import Pusher, PushPlan
from lamina.store import BlobStore

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"




def credentials(monkeypatch: pytest.MonkeyPatch, host: str, user: str, password: str) -> None:
    monkeypatch.setenv("LAMINA_REGISTRY_HOST", host)
    monkeypatch.setenv("LAMINA_REGISTRY_USERNAME", user)
    monkeypatch.setenv("LAMINA_REGISTRY_PASSWORD", password)


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    clean = {k: "" for k in os.environ if k.startswith("LAMINA_REGISTRY_")}
    return {**clean, "DOCKER_CONFIG": str(tmp_path / "docker"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "LAMINA_REGISTRY_RETRIES": "1", "LAMINA_REGISTRY_BACKOFF": "0.01", **extra}


def pull(ref: str, **registry: Any) -> Descriptor:
    _, desc = fetch(ref, None, lambda host: Registry(host, **registry))
    return desc


def plan(layer: bytes = b"layer " * 1000, corrupt: bool = False) -> PushPlan:
    """A one-layer image held in memory; ``corrupt`` serves a layer whose bytes differ from its digest."""
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    cdesc = Descriptor("application/vnd.oci.image.config.v1+json", Digest.of_bytes(config), len(config))
    ldesc = Descriptor("application/vnd.oci.image.layer.v1.tar", Digest.of_bytes(layer), len(layer))
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cdesc.to_json(),
                           "layers": [ldesc.to_json()]}).encode()
    stored = {cdesc.digest: config, ldesc.digest: bytes([layer[0] ^ 0xFF]) + layer[1:] if corrupt else layer}
    return PushPlan((cdesc, ldesc), ((Descriptor(OCI_MANIFEST, Digest.of_bytes(manifest), len(manifest)), manifest),),
                    lambda digest: io.BytesIO(stored[digest]))


def push(host: str, the_plan: PushPlan, chunk_size: int | None = None, **registry: Any) -> Digest:
    registry_client = Registry(host, **registry)
    try:
        return Pusher(registry_client, "team/app", the_plan, chunk_size=chunk_size).run(Reference.parse(f"{host}/team/app:v1"))
    finally:
        registry_client.close()


def in_thread(func: Any, limit: float) -> tuple[bool, Any]:
    """Run ``func`` in a thread for at most ``limit`` seconds: (finished, result or exception)."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(func())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    return not thread.is_alive(), (box[0] if box else None)


# ---- 1. credentials go only to the host:port they belong to


def test_upload_location_on_another_port_gets_no_credentials(env: pytest.MonkeyPatch) -> None:
    with FakeServer(lambda seen: Reply(201) if seen.method == "PUT" else None) as elsewhere, \
            FakeRegistry(basic_auth=("alice", "pw-of-A"), upload_base=elsewhere.url) as registry:
        credentials(env, registry.host, "alice", "pw-of-A")
        push(registry.host, plan())
        assert elsewhere.count("PUT", "/upload/") == 2  # config and layer went where the Location said
        assert elsewhere.authorizations() == []
        assert basic("alice", "pw-of-A") in registry.authorizations()


def test_redirected_blob_challenged_by_a_second_host_never_sends_the_first_hosts_credentials(env: pytest.MonkeyPatch) -> None:
    with TokenService() as realm, FakeRegistry(bearer=realm) as storage, \
            FakeRegistry(basic_auth=("alice", "pw-of-A")) as registry:
        registry.add_image()
        storage.blobs.update(registry.blobs)

        def redirect(seen: Seen) -> Reply | None:
            if "/blobs/" in seen.route and seen.headers.get("authorization") == basic("alice", "pw-of-A"):
                return Reply(307, {"Location": f"{storage.url}{seen.route}"})
            return None

        registry.override = redirect
        credentials(env, registry.host, "alice", "pw-of-A")
        pull(f"{registry.host}/team/app:v1")
        assert storage.count("GET", "/blobs/") >= 2
        assert realm.requests and realm.authorizations() == []  # asked for a token, anonymously
        assert set(storage.authorizations()) == {f"Bearer {realm.token}"}
        assert all(a == basic("alice", "pw-of-A") for a in registry.authorizations())


def test_the_registrys_own_realm_gets_its_credentials_and_its_redirect_target_nothing(env: pytest.MonkeyPatch) -> None:
    with TokenService(require=("alice", "pw-of-A")) as realm, FakeRegistry() as storage, \
            FakeRegistry(bearer=realm) as registry:
        registry.add_image()
        storage.blobs.update(registry.blobs)

        def redirect(seen: Seen) -> Reply | None:
            if "/blobs/" in seen.route and seen.headers.get("authorization") == f"Bearer {realm.token}":
                return Reply(307, {"Location": f"{storage.url}{seen.route}"})
            return None

        registry.override = redirect
        credentials(env, registry.host, "alice", "pw-of-A")
        pull(f"{registry.host}/team/app:v1")
        assert set(realm.authorizations()) == {basic("alice", "pw-of-A")}  # as docker does: the challenge's realm
        assert set(registry.authorizations()) == {f"Bearer {realm.token}"}
        assert storage.count("GET", "/blobs/") == 2 and storage.authorizations() == []


# ---- 2. a plain-HTTP realm of an HTTPS registry


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """``*.test`` resolves to 127.0.0.1: names that are not loopback, served on loopback."""
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if str(host).endswith(".test") else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


def test_plain_http_realm_of_an_https_registry_is_refused(env: pytest.MonkeyPatch, dns: None, test_ca: Any,
                                                         tmp_path: Path) -> None:
    cert, key = cert_for(test_ca.ca_pem, "registry.test", tmp_path / "certs")
    with TokenService() as realm, FakeRegistry(bearer=realm, tls=(cert, key)) as registry:
        realm.url = f"http://realm.test:{realm.port}"
        registry.add_image()
        host = f"registry.test:{registry.port}"
        options = Options(ca_file=str(test_ca.ca_pem))
        refusal = f"{host}: refusing the plain-HTTP token service http://realm.test:{realm.port}/token of an HTTPS registry"
        with pytest.raises(AuthError) as login:
            api.login(host, "alice", "pw-of-A", options)
        assert str(login.value).startswith(refusal) and "\n" not in str(login.value)
        with pytest.raises(AuthError, match="refusing the plain-HTTP token service"):
            pull(f"{host}/team/app:v1", ca_file=str(test_ca.ca_pem))
        with pytest.raises(AuthError, match="refusing the plain-HTTP token service"):
            push(host, plan(), ca_file=str(test_ca.ca_pem))
        assert realm.requests == [] and registry.count("GET", "/v2/") >= 1
        # Named --insecure-registry, the same registry may use it.
        assert api.login(host, "alice", "pw-of-A", Options(insecure=(host,), ca_file=str(test_ca.ca_pem)))
        assert len(realm.requests) == 1


def test_plain_http_realm_of_a_loopback_https_registry_is_allowed(env: pytest.MonkeyPatch, test_ca: Any) -> None:
    with TokenService() as realm, FakeRegistry(bearer=realm, tls=(test_ca.cert, test_ca.key)) as registry:
        registry.add_image()
        pull(f"{registry.host}/team/app:v1", ca_file=str(test_ca.ca_pem))
        assert realm.requests and realm.authorizations() == []


@pytest.mark.parametrize("realm", ["file:///etc/passwd", "ftp://127.0.0.1/token", "not a url"])
def test_a_realm_that_is_not_http_is_refused(env: pytest.MonkeyPatch, realm: str) -> None:
    with FakeRegistry() as registry:
        registry.add_image()
        registry.override = lambda seen: Reply(401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="x"'})
        with pytest.raises(AuthError, match="is not an http"):
            pull(f"{registry.host}/team/app:v1")


def test_redirect_from_https_down_to_plain_http_is_refused(env: pytest.MonkeyPatch, dns: None, test_ca: Any,
                                                           tmp_path: Path) -> None:
    cert, key = cert_for(test_ca.ca_pem, "registry.test", tmp_path / "certs")
    with FakeRegistry() as storage, FakeRegistry(tls=(cert, key)) as registry:
        registry.add_image()
        storage.blobs.update(registry.blobs)
        registry.override = lambda seen: (Reply(302, {"Location": f"http://storage.test:{storage.port}{seen.route}"})
                                          if "/blobs/" in seen.route else None)
        with pytest.raises(RegistryError, match=r"redirected from HTTPS to plain HTTP \(storage.test:\d+\); refused"):
            pull(f"registry.test:{registry.port}/team/app:v1", ca_file=str(test_ca.ca_pem))
        assert storage.requests == []


def test_redirect_loop_ends(env: pytest.MonkeyPatch) -> None:
    with FakeRegistry() as registry:
        registry.override = lambda seen: Reply(307, {"Location": seen.path}) if "/manifests/" in seen.route else None
        with pytest.raises(RegistryError, match="more than 5 redirects"):
            pull(f"{registry.host}/team/app:v1")
        assert registry.count("GET", "/manifests/") == 6


def test_upload_location_that_is_not_http_is_refused(env: pytest.MonkeyPatch) -> None:
    with FakeRegistry(upload_base="ftp://127.0.0.1:1") as registry:
        with pytest.raises(RegistryError, match="the upload Location is not an http"):
            push(registry.host, plan())


@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf"])
def test_bad_timeouts_are_usage_errors(env: pytest.MonkeyPatch, value: str) -> None:
    from lamina.errors import UsageError

    env.setenv("LAMINA_REGISTRY_DEADLINE", value)
    with pytest.raises(UsageError, match="LAMINA_REGISTRY_DEADLINE"):
        Registry("registry.test")


# ---- 3. environment credentials are for LAMINA_REGISTRY_HOST only


def test_credential_sources_in_order_and_env_scoped_to_its_host(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, user in (("helper", "from-helper"), ("store", "from-store")):
        script = bin_dir / f"docker-credential-{name}"
        script.write_text(f'#!/bin/sh\nread host\necho \'{{"Username":"{user}","Secret":"s-\'$host\'"}}\'\n')
        script.chmod(0o755)
    env.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    config.parent.mkdir()

    def entry(user: str) -> dict[str, str]:
        return {"auth": base64.b64encode(f"{user}:pw".encode()).decode()}

    config.write_text(json.dumps({
        "credHelpers": {"helped.test": "helper", "env.test:5000": "helper"},
        "auths": {"helped.test": entry("from-auths-shadowed"), "auths.test": entry("from-auths"),
                  "env.test:5000": entry("from-auths-shadowed")},
        "credsStore": "store"}))
    credentials(env, "env.test:5000", "from-env", "pw")

    def who(host: str) -> str:
        found = auth.lookup(host)
        return found.username if found else ""

    assert who("env.test:5000") == "from-env"  # the environment, for its own registry, first
    assert who("helped.test") == "from-helper"  # then credHelpers, before auths
    assert who("auths.test") == "from-auths"
    assert who("env.test:5001") == "from-store"  # another port is another registry: credsStore
    assert who("elsewhere.test") == "from-store"
    env.delenv("LAMINA_REGISTRY_HOST")
    with pytest.raises(AuthError, match="LAMINA_REGISTRY_HOST is not"):
        auth.lookup("env.test:5000")


def test_env_credentials_never_reach_another_registry(env: pytest.MonkeyPatch) -> None:
    with FakeRegistry(basic_auth=("alice", "pw-of-A")) as mine, FakeRegistry(basic_auth=("bob", "pw-of-B")) as theirs:
        theirs.add_image()
        credentials(env, mine.host, "alice", "pw-of-A")
        with pytest.raises(AuthError, match=f"{theirs.host}: authentication required and no credentials found"):
            pull(f"{theirs.host}/team/app:v1")
        assert theirs.requests and theirs.authorizations() == []


# ---- 4. a base spelled like a file is a file


@pytest.mark.parametrize("text", ["base.tar", "base.tar.gz", "base.tgz", "./base", "/nowhere/base",
                                  "registry.test:5000/base.tar", "dir/img.tar:name:tag", "img.tgz@0"])
def test_file_spellings_are_not_registry_references(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert not is_registry_ref(text)


def test_registry_spellings_still_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert all(is_registry_ref(t) for t in ("alpine", "alpine:3.20", "registry.test:5000/team/app:v1", "docker://x.tar"))


def test_missing_tarball_base_is_no_such_file_not_a_registry_lookup(tmp_path: Path) -> None:
    with FakeRegistry() as registry:
        registry.add_image("latest")
        text = f"{registry.host}/team/app.tar"
        res = lamina("build", "--from", text, "-o", str(tmp_path / "out.tar"), env=cli_env(tmp_path))
        assert res.returncode == 1 and "no such file" in res.stderr, res.stderr
        assert registry.requests == []


# ---- 5. caps and deadlines


def test_blob_longer_than_its_descriptor_is_cut_and_refused(env: pytest.MonkeyPatch) -> None:
    with FakeRegistry() as registry:
        _, manifest = registry.add_image()
        layer = manifest["layers"][0]["digest"]
        good = registry.blobs[layer]
        registry.override = lambda seen: (Reply(200, {}, itertools.chain([good], endless()))
                                          if seen.route.endswith(layer) and seen.method == "GET" else None)
        with pytest.raises(RegistryError, match=f"sent more than the blob's {len(good)} bytes"):
            pull(f"{registry.host}/team/app:v1")
        assert registry.sent < 64 << 20  # the client hung up; the endless body is 256 MiB
        store = BlobStore(Path(os.environ["XDG_CACHE_HOME"]) / "lamina" / "images")
        assert not store.has(Digest.parse(layer))


def test_blob_with_a_content_length_over_its_size_is_refused_unread(env: pytest.MonkeyPatch) -> None:
    with FakeRegistry() as registry:
        _, manifest = registry.add_image()
        layer = manifest["layers"][0]["digest"]
        registry.override = lambda seen: (Reply(200, {}, endless(), length=1 << 30)
                                          if seen.route.endswith(layer) and seen.method == "GET" else None)
        with pytest.raises(RegistryError, match=f"sends {1 << 30} bytes for a blob of"):
            pull(f"{registry.host}/team/app:v1")
        assert registry.sent < 64 << 20


@pytest.mark.parametrize("declared", [True, False])
def test_manifest_over_4_mib_is_refused_whatever_it_claims(env: pytest.MonkeyPatch, declared: bool) -> None:
    with FakeRegistry() as registry:
        data, _ = registry.add_image()
        huge = data[:-1] + b" " * (5 << 20) + b"}"  # still a valid manifest, only too big
        if declared:
            registry.manifests["v1"] = (OCI_MANIFEST, huge)
        else:  # no Content-Length: the body ends only when the connection does
            registry.override = lambda seen: (Reply(200, {"Content-Type": OCI_MANIFEST}, endless())
                                              if "/manifests/" in seen.route else None)
        with pytest.raises(RegistryError, match="over the 4 MiB limit"):
            pull(f"{registry.host}/team/app:v1")
        assert registry.sent < 64 << 20


@pytest.mark.parametrize("where", ["body", "headers"])
def test_slow_loris_ends_at_the_deadline(env: pytest.MonkeyPatch, where: str) -> None:
    env.setenv("LAMINA_REGISTRY_TIMEOUT", "1")
    env.setenv("LAMINA_REGISTRY_DEADLINE", "2")
    with FakeRegistry() as registry:
        registry.add_image()

        def slow(seen: Seen) -> Reply | None:
            if "/manifests/" not in seen.route:
                return None
            if where == "body":  # one byte every 0.2 s: each read is quick, the whole never ends
                return Reply(200, {"Content-Type": OCI_MANIFEST}, trickle(b" ", 0.2, registry.stopping))
            return Reply(raw=itertools.chain([b"HTTP/1.1 200 OK\r\n"], trickle(b"X-Slow: 1\r\n", 0.2, registry.stopping)))

        registry.override = slow
        start = time.monotonic()
        finished, outcome = in_thread(lambda: pull(f"{registry.host}/team/app:v1"), 20)
        elapsed = time.monotonic() - start
    assert finished, "a server trickling one byte at a time held the pull for 20 s"
    assert isinstance(outcome, RegistryError) and "no complete answer within 2 s (LAMINA_REGISTRY_DEADLINE)" in str(outcome)
    assert elapsed < 8


# ---- 6. garbage is one error line, never an internal error


GARBAGE = {
    "no config": (OCI_MANIFEST, b"{}"),
    "not json": (OCI_MANIFEST, b"<html>not a manifest</html>"),
    "wrong types": (OCI_MANIFEST, b'{"config": 5, "layers": "x"}'),
    "a list": (OCI_MANIFEST, b"[]"),
    "bad descriptor": (OCI_MANIFEST, b'{"config": {"mediaType": 1, "digest": 7, "size": "x"}, "layers": []}'),
    "bad index": ("application/vnd.oci.image.index.v1+json", b'{"manifests": [{"digest": null}]}'),
    # Python's json gives up at ~1,000 levels (RecursionError); Go's, which registries run, at 10,000.
    "deeply nested": (OCI_MANIFEST, b"[" * 1100 + b"]" * 1100),
    "a size past int64": (OCI_MANIFEST, b'{"config": {"mediaType": "x", "digest": "sha256:' + b"a" * 64 + b'", "size": 1'
                          + b"0" * 400 + b'}, "layers": []}'),
}


@pytest.mark.parametrize("case", GARBAGE)
def test_garbage_manifest_is_one_error_line(tmp_path: Path, case: str) -> None:
    with FakeRegistry() as registry:
        registry.manifests["v1"] = GARBAGE[case]
        res = lamina("build", "--from", f"{registry.host}/team/app:v1", "-o", str(tmp_path / "out.tar"),
                     env=cli_env(tmp_path))
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lamina: error: ") and "internal error" not in lines[0], res.stderr


def test_registry_error_text_cannot_forge_output_lines(tmp_path: Path) -> None:
    forged = json.dumps({"errors": [{"code": "DENIED", "message": "no\nlamina: pushed evil@sha256:0\r"}]}).encode()
    with FakeRegistry() as registry:
        registry.override = lambda seen: Reply(403, {"Content-Type": "application/json"}, forged) if "/manifests/" in seen.route else None
        res = lamina("build", "--from", f"{registry.host}/team/app:v1", "-o", str(tmp_path / "out.tar"), env=cli_env(tmp_path))
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "\r" not in res.stderr and "DENIED: no?lamina: pushed" in res.stderr, res.stderr


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("layout")
    (work / "data").write_bytes(hashlib.sha256(b"seed").digest() * 20000)  # 640 KB
    build_ok("--add", f"{work / 'data'}:/data", "--compression", "none", "--oci-dir", str(work / "layout"))
    return work / "layout"


def test_307_on_an_upload_put_is_followed_without_credentials(tmp_path: Path, layout: Path) -> None:
    with FakeServer(lambda seen: Reply(201) if seen.method == "PUT" else None) as elsewhere, \
            FakeRegistry(basic_auth=("alice", "pw-of-A")) as registry:
        registry.override = lambda seen: (Reply(307, {"Location": f"{elsewhere.url}/landing{seen.route}"})
                                          if seen.method == "PUT" and seen.route.startswith("/upload/") else None)
        env = cli_env(tmp_path, LAMINA_REGISTRY_HOST=registry.host, LAMINA_REGISTRY_USERNAME="alice",
                      LAMINA_REGISTRY_PASSWORD="pw-of-A")
        res = lamina("push", str(layout), f"{registry.host}/team/app:v1", env=env)
        assert res.returncode == 0, res.stderr
        assert elsewhere.count("PUT", "/landing/upload/") == 2
        assert all(r.complete for r in elsewhere.requests) and elsewhere.authorizations() == []


def test_303_on_an_upload_put_is_one_error_line(tmp_path: Path, layout: Path) -> None:
    with FakeRegistry() as registry:
        registry.override = lambda seen: (Reply(303, {"Location": "/elsewhere"})
                                          if seen.method == "PUT" and seen.route.startswith("/upload/") else None)
        res = lamina("push", str(layout), f"{registry.host}/team/app:v1", env=cli_env(tmp_path))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "answered PUT with a 303 redirect (only 307 and 308 keep the request)" in lines[0]


# ---- 7. digests: of what is uploaded, and of a manifest pulled by tag


def test_corrupt_layout_blob_is_never_completely_uploaded(tmp_path: Path, layout: Path) -> None:
    corrupt = tmp_path / "layout"
    import shutil

    shutil.copytree(layout, corrupt)
    blobs = sorted((corrupt / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    layer = blobs[-1]
    data = bytearray(layer.read_bytes())
    data[-1] ^= 0xFF  # same size, wrong bytes
    layer.chmod(0o644)
    layer.write_bytes(bytes(data))
    with FakeRegistry() as registry:
        res = lamina("push", str(corrupt), f"{registry.host}/team/app:v1", env=cli_env(tmp_path))
        assert res.returncode == 1, res.stderr
        # Caught by the layout reader or the uploader's own hash, whichever reads the end first.
        assert f"blob sha256:{layer.name}" in res.stderr and "not match its digest" in res.stderr
        assert f"sha256:{layer.name}" not in registry.finished
        assert registry.count("PUT", "/manifests/") == 0
        assert all(len(body) < len(data) for body in registry.uploads.values())


def test_corrupt_blob_in_chunks_stops_before_the_last_chunk_lands(env: pytest.MonkeyPatch) -> None:
    layer = os.urandom(200_000)
    with FakeRegistry() as registry:
        with pytest.raises(DigestMismatch, match="do not match its digest"):
            push(registry.host, plan(layer, corrupt=True), chunk_size=64 << 10)
        assert str(Digest.of_bytes(layer)) not in registry.finished
        received = max(len(body) for body in registry.uploads.values())
        assert received < len(layer) and registry.count("PUT", "/manifests/") == 0


def test_pull_by_tag_checks_the_digest_the_registry_names(env: pytest.MonkeyPatch) -> None:
    with FakeRegistry() as registry:
        data, _ = registry.add_image()
        liar = "sha256:" + "0" * 64
        registry.override = lambda seen: (Reply(200, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": liar}, data)
                                          if seen.route.endswith("/manifests/v1") else None)
        with pytest.raises(DigestMismatch, match=f"announced as {liar}"):
            pull(f"{registry.host}/team/app:v1")


# ---- 8. one exception tree


def test_registry_errors_live_in_the_one_exception_tree() -> None:
    import lamina.errors

    assert issubclass(lamina.errors.RegistryError, LaminaError) and issubclass(lamina.errors.AuthError, LaminaError)
    assert client.RegistryError is lamina.errors.RegistryError and auth.AuthError is lamina.errors.AuthError
    assert ImageError is lamina.errors.ImageError


def test_a_plain_http_loopback_registry_never_loads_the_trust_store(env: pytest.MonkeyPatch) -> None:
    """The scheme probe asks only whether the host speaks TLS; the system store is loaded before
    a first handshake, and a plain-HTTP registry has none."""
    import ssl

    loaded: list[bool] = []
    real = ssl.SSLContext.load_default_certs
    env.setattr(ssl.SSLContext, "load_default_certs", lambda self, *a: loaded.append(True) or real(self, *a))
    with FakeRegistry() as registry:
        registry.add_image()
        pull(f"{registry.host}/team/app:v1")
    assert loaded == []


def test_a_loopback_tls_registry_is_checked_against_the_store_loaded_before_its_handshake(
        env: pytest.MonkeyPatch, test_ca: Any) -> None:
    """Found to speak TLS by a probe that checks no certificate; then trusted through SSL_CERT_FILE
    (the default store, loaded lazily), and refused without it."""
    with FakeRegistry(tls=(test_ca.cert, test_ca.key)) as registry:
        registry.add_image()
        env.delenv("SSL_CERT_DIR", raising=False)
        env.setenv("SSL_CERT_FILE", str(test_ca.ca_pem))
        pull(f"{registry.host}/team/app:v1")
        assert registry.count("GET", "/manifests/") == 1
        env.setenv("SSL_CERT_FILE", "/nonexistent")
        env.setenv("SSL_CERT_DIR", "/nonexistent")
        with pytest.raises(RegistryError, match="TLS certificate not trusted"):
            pull(f"{registry.host}/team/app:v2")


# ---- 7. what a stranger's JSON and sizes cannot do (review findings)


@pytest.mark.parametrize("where", ["error body", "token"])
def test_deeply_nested_json_anywhere_is_one_error_line(tmp_path: Path, where: str) -> None:
    deep = b"[" * 1100 + b"]" * 1100
    with FakeRegistry() as registry:
        registry.add_image()
        if where == "error body":
            registry.override = lambda seen: Reply(404, {"Content-Type": "application/json"}, deep) \
                if "/manifests/" in seen.route else None
        else:
            registry.override = lambda seen: (
                Reply(401, {"WWW-Authenticate": f'Bearer realm="http://{registry.host}/token",service="x"'})
                if seen.route.startswith("/v2/") and "authorization" not in seen.headers
                else Reply(200, {"Content-Type": "application/json"}, deep) if seen.route == "/token" else None)
        res = lamina("build", "--from", f"{registry.host}/team/app:v1", "-o", str(tmp_path / "out.tar"), env=cli_env(tmp_path))
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lamina: error: ") and "internal error" not in lines[0], res.stderr


@pytest.mark.parametrize("expires", ["1" + "0" * 400, "-5", "1e999"])
def test_a_token_with_an_absurd_lifetime_still_works(env: pytest.MonkeyPatch, expires: str) -> None:
    with FakeRegistry() as registry:
        registry.add_image()
        registry.override = lambda seen: (
            Reply(401, {"WWW-Authenticate": f'Bearer realm="http://{registry.host}/token",service="x"'})
            if seen.route.startswith("/v2/") and seen.headers.get("authorization") != "Bearer t0k"
            else Reply(200, {"Content-Type": "application/json"}, b'{"token": "t0k", "expires_in": ' + expires.encode() + b"}")
            if seen.route == "/token" else None)
        assert pull(f"{registry.host}/team/app:v1").size > 0


def test_a_huge_claimed_blob_size_does_not_stretch_the_deadline(env: pytest.MonkeyPatch) -> None:
    """The deadline grows with the bytes that arrive, not with the size a manifest claims."""
    env.setenv("LAMINA_REGISTRY_TIMEOUT", "1")
    env.setenv("LAMINA_REGISTRY_DEADLINE", "2")
    with FakeRegistry() as registry:
        _, manifest = registry.add_image()
        manifest["layers"][0]["size"] = 1 << 40
        data = json.dumps(manifest).encode()
        registry.manifests["v1"] = (OCI_MANIFEST, data)
        layer = manifest["layers"][0]["digest"]
        registry.override = lambda seen: Reply(200, {}, trickle(b"x", 0.2, registry.stopping)) \
            if seen.route.endswith(layer) else None
        start = time.monotonic()
        finished, outcome = in_thread(lambda: pull(f"{registry.host}/team/app:v1"), 20)
    assert finished, "a blob claimed to be 1 TiB, trickled, held the pull for 20 s"
    assert isinstance(outcome, RegistryError) and "deadline" in str(outcome), outcome
    assert time.monotonic() - start < 10


def test_a_registry_that_keeps_losing_chunks_ends_the_push(env: pytest.MonkeyPatch) -> None:
    """It takes the first chunk, fails the next, and on every resume says it holds one byte:
    the upload never gets further, so the retries run out (they reset only on new progress)."""
    env.setattr(client, "RETRIES", 2)
    with FakeRegistry() as registry:
        def lossy(seen: Seen) -> Reply | None:
            if seen.method == "PATCH" and seen.route.startswith("/upload/"):
                start = int(seen.headers["content-range"].split("-")[0])
                return Reply(202, {"Location": seen.route, "Range": f"0-{start}"}) if start <= 1 else Reply(500)
            if seen.method == "GET" and seen.route.startswith("/upload/"):
                return Reply(204, {"Location": seen.route, "Range": "0-0"})
            return None
        registry.override = lossy
        finished, outcome = in_thread(lambda: push(registry.host, plan(os.urandom(100_000)), chunk_size=16 << 10), 30)
        patches = registry.count("PATCH")
    assert finished, f"the push was still sending chunks after 30 s ({patches} PATCHes)"
    assert isinstance(outcome, RegistryError) and patches < 100, (outcome, patches)  # unbounded before


ENTRY = "lamina-layer-" + "a" * 64


def prune_against(registry: FakeRegistry, tmp_path: Path) -> Any:
    return lamina("cache", "prune", "--remote", f"{registry.host}/team/cache", "--older-than", "1", env=cli_env(tmp_path))


@pytest.mark.parametrize("case", ["tags not a list", "next page elsewhere", "next page not http"])
def test_prune_refuses_a_bad_tag_list_in_one_line(tmp_path: Path, case: str) -> None:
    with FakeRegistry() as registry:
        def tags(seen: Seen) -> Reply | None:
            if "/tags/list" not in seen.route:
                return None
            if case == "tags not a list":
                return Reply(200, {"Content-Type": "application/json"}, b'{"tags": 5}')
            link = '<file:///etc/passwd>; rel="next"' if case == "next page not http" else \
                f'<http://127.0.0.1:1/v2/team/cache/tags/list?n=1>; rel="next"'
            return Reply(200, {"Content-Type": "application/json", "Link": link}, b'{"tags": []}')
        registry.override = tags
        res = prune_against(registry, tmp_path)
        asked = [r.route for r in registry.requests]
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "internal error" not in res.stderr, res.stderr
    assert not any(r.method == "DELETE" for r in registry.requests) and len(asked) <= 2


def test_prune_reads_a_repeated_tag_once_and_deletes_only_lamina_entries(tmp_path: Path) -> None:
    """Pages that repeat one tag are read as one entry (bounded memory and requests);
    a manifest that is not a lamina cache entry (a release image someone tagged with an
    entry's name) is never deleted: a delete by digest would take every tag on it."""
    old = "2000-01-01T00:00:00Z"
    image = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "annotations": {"org.opencontainers.image.created": old},
                        "config": {}, "layers": []}).encode()
    with FakeRegistry() as registry:
        def answer(seen: Seen) -> Reply | None:
            if "/tags/list" in seen.route:  # 20 pages of the one tag, 500 times each
                more = {"Link": '</v2/team/cache/tags/list?n=1&last=x>; rel="next"'} if registry.count("GET", "/tags/list") < 20 else {}
                return Reply(200, {"Content-Type": "application/json", **more}, json.dumps({"tags": [ENTRY] * 500}).encode())
            if seen.method == "GET" and seen.route.endswith("/manifests/" + ENTRY):
                return Reply(200, {"Content-Type": OCI_MANIFEST}, image)
            if seen.method == "DELETE":
                return Reply(202)
            return None
        registry.override = answer
        res = prune_against(registry, tmp_path)
        deletes, reads = registry.count("DELETE"), registry.count("GET", "/manifests/")
    assert res.returncode == 0, res.stderr
    assert deletes == 0 and reads == 1 and "deleted 0 cache entries" in res.stdout and "1 remain" in res.stdout


def test_prune_follows_a_next_page_given_as_an_absolute_url_on_the_same_registry(tmp_path: Path) -> None:
    entries = ["lamina-layer-" + c * 64 for c in "ab"]
    with FakeRegistry() as registry:
        def answer(seen: Seen) -> Reply | None:
            if "/tags/list" in seen.route:
                page = 1 if "last=" in seen.path else 0
                link = {"Link": f'<http://{registry.host}/v2/team/cache/tags/list?n=1&last=x>; rel="next"'} if not page else {}
                return Reply(200, {"Content-Type": "application/json", **link}, json.dumps({"tags": [entries[page]]}).encode())
            if seen.method == "GET" and "/manifests/" in seen.route:
                return Reply(404)
            return None
        registry.override = answer
        res = prune_against(registry, tmp_path)
        read = [r.route.rsplit("/", 1)[1] for r in registry.requests if "/manifests/" in r.route]
    assert res.returncode == 0, res.stderr
    assert read == entries
