"""The real thing: lamina's tarballs loaded and run by a private Docker 20.10 daemon."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cli import build_ok
from support.oci import validate_image

pytestmark = pytest.mark.e2e


def _load(dockerd, tarball: Path) -> None:
    res = dockerd.docker("load", "-i", str(tarball))
    assert "Loaded image" in res.stdout, res.stdout


def test_scratch_go_hello_runs(dockerd, testdata_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "hello.tar"
    digest = build_ok(
        "--add", f"{testdata_out / 'hello-amd64'}:/hello", "--add", f"{testdata_out / 'cacert.pem'}:/etc/ssl/certs/",
        "--cmd", '["/hello"]', "-t", "lamina-e2e/hello:v1", "-o", str(out),
    )
    validate_image(out)
    _load(dockerd, out)
    res = dockerd.docker("run", "--pull", "never", "--rm", "--network", "none", "lamina-e2e/hello:v1")
    assert res.stdout == "hello, scratch!\n"
    # The image ID docker shows is lamina's config digest.
    config_digest = validate_image(out)["manifests"][0]["config"]["digest"]
    assert dockerd.docker("image", "inspect", "-f", "{{.Id}}", "lamina-e2e/hello:v1").stdout.strip() == config_digest
    assert digest.startswith("sha256:")


def test_root_certificates_decide_tls(dockerd, testdata_out: Path, test_ca, https_server, tmp_path: Path) -> None:
    """The seed's lesson, proven: scratch has no CAs; with ours in /etc/ssl/certs/ TLS works."""
    hello = f"{testdata_out / 'hello-amd64'}:/hello"
    with_ca, without_ca = tmp_path / "with.tar", tmp_path / "without.tar"
    build_ok("--add", hello, "--add", f"{test_ca.ca_pem}:/etc/ssl/certs/", "--entrypoint", "/hello",
             "-t", "lamina-e2e/tls:with", "-o", str(with_ca))
    build_ok("--add", hello, "--entrypoint", "/hello", "-t", "lamina-e2e/tls:without", "-o", str(without_ca))
    _load(dockerd, with_ca)
    _load(dockerd, without_ca)
    ok = dockerd.docker("run", "--pull", "never", "--rm", "--network", "host", "lamina-e2e/tls:with", https_server.url)
    assert ok.stdout.rstrip("\n") == "hello, scratch!\nhello over tls"
    bad = dockerd.docker("run", "--pull", "never", "--rm", "--network", "host", "lamina-e2e/tls:without", https_server.url, check=False)
    assert bad.returncode != 0
    assert "certificate signed by unknown authority" in bad.stderr


def test_busybox_rootfs_tarball_with_shell_cmd(dockerd, testdata_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "busybox.tar"
    build_ok(
        "--tarball", str(testdata_out / "busybox-rootfs.tar.gz"), "--add", f"{testdata_out / 'hello-c'}:/usr/local/bin/hello",
        "--cmd", '["sh", "-c", "echo shell works; ls /bin/busybox; printf %s/%s a b | tr a-z A-Z; echo; hello"]',
        "-t", "lamina-e2e/busybox", "-o", str(out),
    )
    validate_image(out)
    _load(dockerd, out)
    res = dockerd.docker("run", "--pull", "never", "--rm", "--network", "none", "lamina-e2e/busybox")
    assert res.stdout == "shell works\n/bin/busybox\nA/B\nhello, scratch!\n"


def test_static_c_binary_on_scratch(dockerd, testdata_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.tar"
    build_ok("--add", f"{testdata_out / 'hello-c'}:/hello:0755", "--entrypoint", '["/hello"]',
             "--compression", "gzip", "-t", "lamina-e2e/c", "-o", str(out))
    _load(dockerd, out)
    assert dockerd.docker("run", "--pull", "never", "--rm", "--network", "none", "lamina-e2e/c").stdout == "hello, scratch!\n"


def test_uncompressed_layers_load_too(dockerd, testdata_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "plain.tar"
    build_ok("--add", f"{testdata_out / 'hello-c'}:/hello", "--cmd", "/hello", "--compression", "none",
             "-t", "lamina-e2e/plain", "-o", str(out))
    _load(dockerd, out)
    assert dockerd.docker("run", "--pull", "never", "--rm", "--network", "none", "lamina-e2e/plain").stdout == "hello, scratch!\n"


def test_ca_certs_flag_makes_tls_work(dockerd, testdata_out: Path, test_ca, https_server, tmp_path: Path) -> None:
    out = tmp_path / "ca.tar"
    build_ok("--add", f"{testdata_out / 'hello-amd64'}:/hello", "--ca-certs", str(test_ca.ca_pem),
             "--entrypoint", "/hello", "-t", "lamina-e2e/ca-certs", "-o", str(out))
    _load(dockerd, out)
    ok = dockerd.docker("run", "--pull", "never", "--rm", "--network", "host", "lamina-e2e/ca-certs", https_server.url)
    assert ok.stdout.rstrip("\n") == "hello, scratch!\nhello over tls"


def test_accounts_let_nonroot_resolve(dockerd, testdata_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "accounts.tar"
    build_ok("--tarball", str(testdata_out / "busybox-rootfs.tar.gz"), "--accounts", "--tmp", "--user", "nonroot",
             "--cmd", '["sh", "-c", "id -u; id -un; ls -ld /tmp | cut -c1-10"]', "-t", "lamina-e2e/accounts", "-o", str(out))
    _load(dockerd, out)
    res = dockerd.docker("run", "--pull", "never", "--rm", "--network", "none", "lamina-e2e/accounts")
    assert res.stdout.split() == ["65532", "nonroot", "drwxrwxrwt"]


def test_dash_pipes_into_docker_load(dockerd, testdata_out: Path) -> None:
    """lamina build -o - | docker load, as docker save | docker load."""
    import os
    import subprocess
    import sys

    from support.cli import SRC

    build = subprocess.Popen(
        [sys.executable, "-m", "lamina", "build", "--add", f"{testdata_out / 'hello-amd64'}:/hello", "--cmd", '["/hello"]',
         "-t", "lamina-e2e/piped:v1", "-o", "-"],
        env={**os.environ, "PYTHONPATH": str(SRC)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert build.stdout is not None
    loaded = dockerd.docker("load", stdin=build.stdout)
    build.stdout.close()
    _, err = build.communicate(timeout=300)
    assert build.returncode == 0, err
    assert "Loaded image: lamina-e2e/piped:v1" in loaded.stdout, loaded.stdout
    assert err.decode().splitlines()[-1].startswith("sha256:")  # the digest, on stderr: stdout was the tarball
    assert dockerd.docker("run", "--rm", "--pull", "never", "--network", "none", "lamina-e2e/piped:v1").stdout == "hello, scratch!\n"
