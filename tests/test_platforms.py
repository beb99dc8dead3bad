"""Several platforms in one build: placeholders, per-platform tables, bases, the docker view."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from support.cli import build_ok, lamina
from support.oci import validate_image

from lamina.elf import identify, mismatch
from lamina.model import Platform


def _elf(machine: int, cls: int = 2, data: int = 1) -> bytes:
    return b"\x7fELF" + bytes([cls, data, 1]) + b"\0" * 11 + machine.to_bytes(2, "little" if data == 1 else "big") + b"\0" * 100


def test_elf_identity() -> None:
    assert identify(_elf(62)) == (62, 2, 1)
    assert identify(b"#!/bin/sh\n" * 3) is None
    assert mismatch(_elf(62), Platform.parse("linux/amd64")) is None
    assert mismatch(_elf(183), Platform.parse("linux/amd64")) == "an ELF aarch64 executable, but the image platform is linux/amd64"
    assert mismatch(_elf(40, cls=1), Platform.parse("linux/arm/v7")) is None
    assert "s390x" in mismatch(_elf(22, data=2), Platform.parse("linux/arm64"))


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    for arch, machine in (("amd64", 62), ("arm64", 183)):
        path = tmp_path / f"app-{arch}"
        path.write_bytes(_elf(machine) + arch.encode())
        os.chmod(path, 0o755)
    (tmp_path / "conf").write_text("shared\n")
    return tmp_path


def test_spec_platforms_with_a_per_platform_table_and_reproducible_index(dist: Path) -> None:
    (dist / "lamina.toml").write_text(
        """
platforms = ["linux/amd64", "linux/arm64/v8"]
docker_platform = "linux/arm64"
output = "img.tar"
cmd = ["/app"]

[[layer]]
entries = [{ src = { "linux/amd64" = "app-amd64", "linux/arm64" = "app-arm64" }, dst = "/app" }]

[[layer]]
entries = [{ src = "conf", dst = "/etc/conf" }]
"""
    )
    first = build_ok(cwd=dist)
    result = validate_image(dist / "img.tar")
    amd, arm = result["manifests"]
    assert amd["layers"][1] == arm["layers"][1]
    with tarfile.open(dist / "img.tar") as tf:
        docker = json.load(tf.extractfile("manifest.json"))[0]
    assert docker["Config"] == "blobs/sha256/" + arm["config"]["digest"][7:]
    (dist / "img.tar").rename(dist / "first.tar")
    assert build_ok(cwd=dist) == first
    assert (dist / "img.tar").read_bytes() == (dist / "first.tar").read_bytes()


def test_per_platform_table_missing_a_platform(dist: Path) -> None:
    (dist / "lamina.toml").write_text(
        'platforms = ["linux/amd64", "linux/riscv64"]\noutput = "x.tar"\n'
        '[[layer]]\nentries = [{ src = { "linux/amd64" = "app-amd64" }, dst = "/app" }]\n'
    )
    res = lamina("build", cwd=dist)
    assert res.returncode == 1
    assert res.stderr.strip() == (
        "lamina: error: platform linux/riscv64: add {platform} -> /app: no source for platform linux/riscv64 "
        "(the entry lists linux/amd64)"
    )


def test_multi_platform_base_each_platform_on_its_own_manifest(dist: Path) -> None:
    build_ok("--platform", "linux/amd64,linux/arm64", "--add", f"{dist}/app-{{arch}}:/app", "--oci-dir", str(dist / "base"))
    base = validate_image(dist / "base")
    build_ok("--from", f"oci:{dist / 'base'}", "--platform", "linux/arm64,linux/amd64", "--add", f"{dist / 'conf'}:/etc/conf",
             "--oci-dir", str(dist / "out"))
    out = validate_image(dist / "out")
    by_arch = {c["architecture"]: m for c, m in zip(out["configs"], out["manifests"])}
    base_by_arch = {c["architecture"]: m for c, m in zip(base["configs"], base["manifests"])}
    for arch in ("amd64", "arm64"):
        assert by_arch[arch]["layers"][0] == base_by_arch[arch]["layers"][0]
    assert [c["architecture"] for c in out["configs"]] == ["arm64", "amd64"]
    res = lamina("build", "--from", f"oci:{dist / 'base'}", "--platform", "linux/amd64,linux/s390x",
                 "--add", f"{dist / 'conf'}:/c", "-o", str(dist / "z.tar"))
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"lamina: error: oci:{dist / 'base'}: no image for platform linux/s390x (available: linux/amd64, linux/arm64)"
    )


def test_bad_platform_lists_and_docker_platform(dist: Path) -> None:
    res = lamina("build", "--platform", "linux/amd64,linux/amd64", "--add", f"{dist / 'conf'}:/c", "-o", str(dist / "a.tar"))
    assert (res.returncode, res.stderr.strip()) == (2, "lamina: error: bad platform list 'linux/amd64,linux/amd64': a platform is listed twice")
    res = lamina("build", "--platform", "linux/amd64", "--docker-platform", "linux/arm64", "--add", f"{dist / 'conf'}:/c",
                 "-o", str(dist / "a.tar"))
    assert res.returncode == 2 and "--docker-platform linux/arm64 is not one of the platforms built (linux/amd64)" in res.stderr
