"""Sanity checks of the test fixtures themselves, so that an e2e failure
points at lamina rather than at a broken payload, CA or daemon."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from support.dockerd import DockerDaemon
from support.tls import CertBundle, HttpsServer
from support.tools import require, unavailable

EM_X86_64 = 62
EM_AARCH64 = 183
PT_INTERP = 3


def elf_info(path: Path) -> tuple[int, bool]:
    """Return (e_machine, has PT_INTERP) of a little-endian ELF64 file.

    No PT_INTERP means the kernel runs it directly: it needs no libc in the
    image, which is what FROM scratch requires.
    """
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF", f"{path} is not ELF"
    assert data[4] == 2 and data[5] == 1, f"{path} is not little-endian ELF64"
    (machine,) = struct.unpack_from("<H", data, 18)
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return machine, PT_INTERP in types


def clean_env(**extra: str) -> dict[str, str]:
    """Environment without CA or proxy overrides that would skew TLS tests."""
    drop = {"SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "https_proxy",
            "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


def test_hello_amd64_is_static_and_runs(testdata_out: Path) -> None:
    binary = testdata_out / "hello-amd64"
    assert elf_info(binary) == (EM_X86_64, False)
    r = subprocess.run([binary], capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout) == (0, "hello, scratch!\n")


def test_hello_arm64_is_static_aarch64(testdata_out: Path) -> None:
    assert elf_info(testdata_out / "hello-arm64") == (EM_AARCH64, False)


def test_hello_c_static_and_dynamic(testdata_out: Path) -> None:
    assert elf_info(testdata_out / "hello-c") == (EM_X86_64, False)
    assert elf_info(testdata_out / "hello-c-dynamic") == (EM_X86_64, True)
    for name in ("hello-c", "hello-c-dynamic"):
        r = subprocess.run([testdata_out / name], capture_output=True, text=True, timeout=30)
        assert (r.returncode, r.stdout) == (0, "hello, scratch!\n"), name


def test_busybox_rootfs(testdata_out: Path) -> None:
    with tarfile.open(testdata_out / "busybox-rootfs.tar.gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode & 0o111
    sh = members["bin/sh"]
    assert sh.issym() and os.path.normpath(os.path.join("bin", sh.linkname)) == "bin/busybox"
    assert "usr/bin/env" in members
    assert all(m.uid == m.gid == 0 and m.mtime == 0 for m in members.values())


def test_cacert_bundle(testdata_out: Path) -> None:
    assert (testdata_out / "cacert.pem").read_text().count("BEGIN CERTIFICATE") > 10


def test_https_trusted_only_with_test_ca(
    testdata_out: Path, test_ca: CertBundle, https_server: HttpsServer
) -> None:
    hello = testdata_out / "hello-amd64"
    ok = subprocess.run([hello, https_server.url], capture_output=True, text=True, timeout=30,
                        env=clean_env(SSL_CERT_FILE=str(test_ca.ca_pem)))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "hello, scratch!\nhello over tls"

    bad = subprocess.run([hello, https_server.url], capture_output=True, text=True, timeout=30,
                         env=clean_env())
    assert bad.returncode == 1
    assert "certificate signed by unknown authority" in bad.stderr


@pytest.mark.e2e
def test_dockerd_reports_server_version(dockerd: DockerDaemon) -> None:
    r = dockerd.docker("version", "--format", "{{.Server.Version}}")
    assert r.stdout.strip()[:1].isdigit(), r.stdout


@pytest.mark.e2e
def test_dockerd_runs_busybox_rootfs(dockerd: DockerDaemon, testdata_out: Path) -> None:
    """The e2e tests need a daemon that can really run containers here."""
    dockerd.docker("import", str(testdata_out / "busybox-rootfs.tar.gz"), "lamina-test/bb:1")
    r = dockerd.docker("run", "--pull", "never", "--rm", "--network=none", "lamina-test/bb:1",
                       "sh", "-c", "echo ok; env | grep -c ^PATH=")
    assert r.stdout == "ok\n1\n"


@pytest.mark.e2e
def test_dockerd_stop_leaves_nothing() -> None:
    """stop() must take containerd and the state dir with it (checked on a
    second daemon, as the session one lives until the end)."""
    daemon_bin, cli = require("dockerd"), require("docker")
    if os.geteuid() != 0:
        unavailable("a private dockerd needs root")
    daemon = DockerDaemon(daemon_bin, cli)
    state = daemon.dir
    daemon.stop()
    assert not state.exists()
    leftovers = [p for p in Path("/proc").glob("[0-9]*/cmdline")
                 if f"{state}/".encode() in _read(p)]
    assert leftovers == []


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError:
        return b""


# ---- support.oci: the schemas come from an installed package, and the 1.1.0 fields rc2 lacks


def _descriptor(blob: bytes, **extra: object) -> dict[str, object]:
    import hashlib

    return {"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": len(blob),
            "digest": "sha256:" + hashlib.sha256(blob).hexdigest(), **extra}


def test_schemas_come_from_the_installed_package_not_shared() -> None:
    from support import oci

    directory = oci.schema_dir()
    if directory is None:
        unavailable(f"{oci.SCHEMA_PACKAGE} is not installed")
    assert "shared" not in directory.parts
    assert (directory / "content-descriptor.json").is_file()


@pytest.mark.parametrize(("name", "document", "message"), [
    ("content-descriptor.json", _descriptor(b"x", data="eA=="), None),
    ("content-descriptor.json", _descriptor(b"x", data="eQ=="), "data does not match"),
    ("content-descriptor.json", _descriptor(b"x", data="not base64!"), "data is not base64"),
    ("content-descriptor.json", _descriptor(b"x", artifactType="application/spdx+json"), None),
    ("content-descriptor.json", _descriptor(b"x", artifactType="spdx"), "artifactType 'spdx'"),
    ("content-descriptor.json", {**_descriptor(b"x"), "size": -1}, "negative size"),
    ("image-manifest-schema.json", {"schemaVersion": 2, "config": _descriptor(b"{}"), "layers": [_descriptor(b"l")],
                                    "artifactType": "application/spdx+json", "subject": _descriptor(b"m")}, None),
    ("image-manifest-schema.json", {"schemaVersion": 2, "config": _descriptor(b"{}"), "layers": [_descriptor(b"l")],
                                    "subject": {"digest": "sha256:00"}}, "subject:"),
    ("image-manifest-schema.json", {"schemaVersion": 2, "config": _descriptor(b"{}"), "layers": [_descriptor(b"l")],
                                    "artifactType": 7}, "artifactType 7"),
    ("image-index-schema.json", {"schemaVersion": 2, "manifests": [_descriptor(b"m", artifactType="x")]},
     "manifests[0]: artifactType 'x'"),
    ("image-index-schema.json", {"schemaVersion": 2, "manifests": [], "subject": "sha256:00"},
     "subject is not a descriptor"),
])
def test_image_spec_1_1_fields_are_checked(name: str, document: dict[str, object], message: str | None) -> None:
    from support.oci import check_schema

    if message is None:
        check_schema(name, document)
    else:
        with pytest.raises(AssertionError, match=re.escape(message)):
            check_schema(name, document)


def test_blobs_are_rehashed_before_any_schema_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tampered blob fails validate_image even where the schema package is missing."""
    import hashlib
    import json

    from support import oci

    def no_schemas(reason: str) -> None:
        raise RuntimeError(f"schemas consulted before the blobs were hashed: {reason}")

    monkeypatch.setattr(oci, "schema_dir", lambda: None)
    monkeypatch.setattr(oci, "unavailable", no_schemas)
    monkeypatch.setattr(oci, "_validator", oci._validator.__wrapped__)  # no cached validator
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    manifest = json.dumps({"schemaVersion": 2, "config": {**_descriptor(config),
                           "mediaType": "application/vnd.oci.image.config.v1+json"}, "layers": []}).encode()
    blobs = tmp_path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / hashlib.sha256(config).hexdigest()).write_bytes(config.replace(b"amd64", b"arm64"))
    (blobs / hashlib.sha256(manifest).hexdigest()).write_bytes(manifest)
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [{**_descriptor(manifest),
                                                "mediaType": "application/vnd.oci.image.manifest.v1+json"}]}
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(AssertionError, match="does not match its digest"):
        oci.validate_image(tmp_path)


def test_docker_run_must_say_pull_never() -> None:
    """The guard in DockerDaemon.docker() refuses before any daemon is involved."""
    daemon = DockerDaemon.__new__(DockerDaemon)
    with pytest.raises(ValueError, match="--pull never"):
        daemon.docker("run", "--rm", "img")
    with pytest.raises(ValueError, match="--pull never"):
        daemon.docker("run", "--pull", "missing", "img")


def test_a_passing_session_leaves_nothing_in_the_temporary_directory(tmp_path: Path) -> None:
    """The session's layer cache and a passing test's tmp_path are removed: left behind, each
    run's gigabyte of layers filled the disk of the machine that CI runs on."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    probe = tmp_path / "test_probe.py"  # writes into its cache and its tmp_path, as a build test does
    probe.write_text("import os, pathlib\n"
                     "def test_writes(tmp_path):\n"
                     "    (tmp_path / 'big').write_bytes(b'x' * 4096)\n"
                     "    cache = pathlib.Path(os.environ['XDG_CACHE_HOME'])\n"
                     "    (cache / 'lamina').mkdir()\n"
                     "    (cache / 'lamina' / 'blob').write_bytes(b'y' * 4096)\n")
    tests = Path(__file__).resolve().parent
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tests.parent),
                        "-c", str(tests.parent / "pyproject.toml"), "--confcutdir", str(tests),
                        "-p", "conftest", str(probe)],
                       env={**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(tests)}, capture_output=True, text=True,
                       timeout=120, cwd=tests.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout
    left = [str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()]
    assert left == [], left
