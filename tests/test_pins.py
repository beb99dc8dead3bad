"""Hermetic builds and lamina lock, through the CLI."""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path

import pytest
from support.cli import build_ok, lamina


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "hello").write_bytes(b"binary")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.toml").write_text("x = 1\n")
    os.symlink("app.toml", tmp_path / "conf" / "link")
    build_ok("--add", f"{tmp_path / 'hello'}:/base-file", "--oci-dir", str(tmp_path / "base"))
    (tmp_path / "rootfs.tar").write_bytes(b"\0" * 1024)  # an empty tar archive
    (tmp_path / "lamina.toml").write_text(
        """
hermetic = true
base = "oci:base"
output = "img.tar"

[[layer]]
entries = [{ src = "hello", dst = "/hello" }, { src = "conf", dst = "/etc/app" }]

[[layer]]
tarball = "rootfs.tar"
"""
    )
    return tmp_path


def test_unpinned_inputs_are_all_listed(project: Path) -> None:
    res = lamina("build", cwd=project)
    assert res.returncode == 1
    message = res.stderr.strip()
    assert message.startswith("lamina: error: hermetic build refused: 4 input(s) unpinned or changed: ")
    for key in ("oci:base", "hello", "conf", "rootfs.tar"):
        assert f"{key}: not pinned" in message
    assert not (project / "img.tar").exists()


@pytest.mark.slow  # eleven lamina runs: ~10 s
def test_lock_round_trip_then_one_changed_byte_is_refused(project: Path) -> None:
    res = lamina("lock", "lamina.toml", cwd=project)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "wrote lamina.lock (4 inputs pinned)"
    pins = tomllib.loads((project / "lamina.lock").read_text())["inputs"]
    assert pins["hello"] == "sha256:" + hashlib.sha256(b"binary").hexdigest()
    assert set(pins) == {"oci:base", "hello", "conf", "rootfs.tar"}
    first = build_ok(cwd=project)
    assert build_ok(cwd=project) == first
    for change in (
        lambda: (project / "hello").write_bytes(b"binarY"),
        lambda: (project / "conf" / "app.toml").write_text("x = 2\n"),
        lambda: os.chmod(project / "conf" / "app.toml", 0o600),
        lambda: (project / "rootfs.tar").write_bytes(b"\0" * 1023 + b"\1"),
    ):
        lamina("lock", cwd=project)
        change()
        res = lamina("build", cwd=project)
        assert res.returncode == 1, res.stderr
        assert "hermetic build refused: 1 input(s) unpinned or changed" in res.stderr
        assert "sha256 is" in res.stderr


def test_pins_in_the_spec_itself(project: Path) -> None:
    digest = hashlib.sha256(b"binary").hexdigest()
    (project / "lamina.toml").write_text(
        f'hermetic = true\noutput = "img.tar"\n[[layer]]\nentries = [{{ src = "hello", dst = "/h", sha256 = "{digest}" }}]\n'
    )
    assert lamina("build", cwd=project).returncode == 0
    (project / "hello").write_bytes(b"tampered")
    res = lamina("build", cwd=project)
    assert res.returncode == 1
    assert f"hello: sha256 is {hashlib.sha256(b'tampered').hexdigest()}, pinned {digest}" in res.stderr


def test_hermetic_flag_refuses_unpinned_flag_inputs(project: Path) -> None:
    res = lamina("build", "--hermetic", "--add", "hello:/hello", "-o", "x.tar", cwd=project)
    assert res.returncode == 1
    assert res.stderr.strip() == "lamina: error: hermetic build refused: 1 input(s) unpinned or changed: hello: not pinned (add sha256 = \"…\" or run 'lamina lock')"


def test_lock_does_not_open_fifos(project: Path) -> None:
    os.mkfifo(project / "conf" / "pipe")
    res = lamina("lock", cwd=project)
    assert res.returncode == 0, res.stderr
