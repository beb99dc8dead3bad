"""Sanity checks of the test fixtures themselves, so that an e2e failure
points at lamina rather than at a broken payload, CA or daemon."""

from __future__ import annotations

import os
import struct
import subprocess
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
    r = dockerd.docker("run", "--rm", "--network=none", "lamina-test/bb:1",
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
