"""lamina index: single-platform images built apart join into the one index a multi-platform
build gives, byte for byte; clashes and mislabelled executables are refused."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from support.cli import build_ok, lamina
from support.oci import validate_image


def _index(tarball: Path) -> dict:
    with tarfile.open(tarball) as t:
        top = json.load(t.extractfile("index.json"))  # type: ignore[arg-type]
        digest = top["manifests"][0]["digest"]
        return json.load(t.extractfile(f"blobs/sha256/{digest[7:]}"))  # type: ignore[arg-type]


@pytest.fixture
def hellos(testdata_out: Path, tmp_path: Path) -> dict[str, str]:
    """One image per architecture, built as two CI runners would."""
    digests = {}
    for arch in ("amd64", "arm64"):
        digests[arch] = build_ok("--add", f"{testdata_out / f'hello-{arch}'}:/hello:0755", "--cmd", '["/hello"]',
                                 "--platform", f"linux/{arch}", "-o", str(tmp_path / f"{arch}.tar"))
    return digests


def test_joined_index_is_the_one_a_multi_platform_build_gives(hellos: dict[str, str], testdata_out: Path,
                                                              tmp_path: Path) -> None:
    joined = lamina("index", str(tmp_path / "amd64.tar"), str(tmp_path / "arm64.tar"), "-t", "hello:multi",
                    "-o", str(tmp_path / "multi.tar"), "--oci-dir", str(tmp_path / "layout"))
    assert joined.returncode == 0, joined.stderr
    index = _index(tmp_path / "multi.tar")
    assert [(m["digest"], m["platform"]["architecture"]) for m in index["manifests"]] == [
        (hellos["amd64"], "amd64"), (hellos["arm64"], "arm64")]  # the inputs' manifests, byte for byte
    validate_image(tmp_path / "multi.tar")
    validate_image(tmp_path / "layout")
    one_build = build_ok("--add", f"{testdata_out / 'hello-{arch}'}:/hello:0755", "--cmd", '["/hello"]',
                         "--platform", "linux/amd64,linux/arm64", "-t", "hello:multi", "-o", str(tmp_path / "built.tar"))
    assert joined.stdout.strip() == one_build
    assert (tmp_path / "multi.tar").read_bytes() == (tmp_path / "built.tar").read_bytes()
    again = lamina("index", str(tmp_path / "amd64.tar"), str(tmp_path / "arm64.tar"), "-t", "hello:multi",
                   "-o", str(tmp_path / "again.tar"))
    assert again.stdout == joined.stdout


def test_an_index_joins_with_more_platforms_and_the_docker_face_follows(hellos: dict[str, str], tmp_path: Path) -> None:
    assert lamina("index", str(tmp_path / "amd64.tar"), "--oci-dir", str(tmp_path / "one")).returncode == 0
    res = lamina("index", f"oci:{tmp_path / 'one'}", str(tmp_path / "arm64.tar"), "--docker-platform", "linux/arm64",
                 "-o", str(tmp_path / "multi.tar"))
    assert res.returncode == 0, res.stderr
    with tarfile.open(tmp_path / "multi.tar") as t:
        docker = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(t.extractfile(docker[0]["Config"]))  # type: ignore[arg-type]
    assert config["architecture"] == "arm64"


def test_platforms_must_not_clash(hellos: dict[str, str], tmp_path: Path) -> None:
    res = lamina("index", str(tmp_path / "amd64.tar"), str(tmp_path / "amd64.tar"), "-o", str(tmp_path / "x.tar"))
    assert res.returncode == 1 and "platform linux/amd64 is already given by" in res.stderr, res.stderr
    assert not (tmp_path / "x.tar").exists()


def test_a_mislabelled_executable_is_refused(testdata_out: Path, tmp_path: Path) -> None:
    build_ok("--add", f"{testdata_out / 'hello-arm64'}:/hello:0755", "--platform", "linux/amd64", "--no-arch-check",
             "--no-lint", "-o", str(tmp_path / "wrong.tar"))
    res = lamina("index", str(tmp_path / "wrong.tar"), "-o", str(tmp_path / "x.tar"))
    assert res.returncode == 1 and "/hello: an ELF aarch64 executable" in res.stderr, res.stderr
    assert lamina("index", str(tmp_path / "wrong.tar"), "--no-arch-check", "-o", str(tmp_path / "x.tar")).returncode == 0


def test_nothing_to_write_is_a_usage_error(tmp_path: Path) -> None:
    res = lamina("index", str(tmp_path / "a.tar"))
    assert res.returncode == 2 and "nothing to write" in res.stderr
