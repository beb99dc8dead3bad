"""Reading bases: every bad input is one line naming the culprit, and nothing is written."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from support.cli import build_ok, lamina

from lamina.model import Platform
from lamina.sources.base import BaseRef, platform_matches


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("oci:dir:tag", ("oci", "dir", "tag", None)),
        ("oci-archive:/a/b.tar", ("oci-archive", "/a/b.tar", "", None)),
        ("docker-archive:img.tar@2", ("docker-archive", "img.tar", "", 2)),
        ("docker-archive:img.tar:busybox:latest", ("docker-archive", "img.tar:busybox", "latest", None)),
        ("plain.tar", ("", "plain.tar", "", None)),
    ],
)
def test_base_ref_parse(text: str, expected: tuple) -> None:
    ref = BaseRef.parse(text)
    assert (ref.transport, ref.path, ref.ref, ref.index) == expected


def test_platform_matching_normalises_like_containerd() -> None:
    assert platform_matches(Platform("linux", "arm64", "v8"), Platform("linux", "arm64"))
    assert platform_matches(Platform("linux", "arm64"), Platform.parse("linux/arm64/v8"))
    assert not platform_matches(Platform("linux", "arm", "v6"), Platform.parse("linux/arm/v7"))
    assert not platform_matches(Platform("linux", "amd64"), Platform.parse("linux/arm64"))


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    (tmp_path / "f").write_text("data")
    (tmp_path / "links").mkdir()
    os.symlink("loop-b", tmp_path / "links" / "loop-a")
    os.symlink("loop-a", tmp_path / "links" / "loop-b")
    (tmp_path / "esc").mkdir()
    os.symlink("../../../etc", tmp_path / "esc" / "escape")
    (tmp_path / "out").mkdir()
    build_ok("--add", f"{tmp_path / 'f'}:/f", "--add", f"{tmp_path}/links:/l", "--compression", "none",
             "-t", "base:v1", "--oci-dir", str(tmp_path / "base"))
    return tmp_path / "base"


def _manifest(layout: Path) -> tuple[dict, Path]:
    index = json.loads((layout / "index.json").read_text())
    path = layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    return json.loads(path.read_bytes()), path


def _rewrite_manifest(layout: Path, manifest: dict) -> None:
    blob = json.dumps(manifest).encode()
    digest = hashlib.sha256(blob).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(blob)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0].update(digest=f"sha256:{digest}", size=len(blob))
    (layout / "index.json").write_text(json.dumps(index))


def _fails(tmp_path: Path, *args: str) -> str:
    res = lamina("build", *args, "-o", str(tmp_path / "out" / "img.tar"))
    assert res.returncode == 1, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
    assert os.listdir(tmp_path / "out") == []
    return res.stderr.strip().removeprefix("lamina: error: ")


def test_not_an_image(tmp_path: Path, layout: Path) -> None:
    message = _fails(tmp_path, "--from", str(tmp_path / "f"))
    assert message.startswith(f"'{tmp_path / 'f'}': not an image tarball or layout directory")
    assert _fails(tmp_path, "--from", f"oci:{tmp_path}") == f"oci:{tmp_path}: not an OCI layout (no index.json)"
    assert _fails(tmp_path, "--from", str(tmp_path / "missing.tar")) == f"{tmp_path / 'missing.tar'}: '{tmp_path / 'missing.tar'}': no such file or directory"


def test_absent_ref_lists_what_there_is(tmp_path: Path, layout: Path) -> None:
    assert _fails(tmp_path, "--from", f"oci:{layout}:nope") == (
        f"oci:{layout}:nope: no image named 'nope' (the archive has: docker.io/library/base:v1, v1)"
    )


def test_missing_blob(tmp_path: Path, layout: Path) -> None:
    manifest, _ = _manifest(layout)
    (layout / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]).unlink()
    assert _fails(tmp_path, "--from", f"oci:{layout}").endswith(f"points at missing blob {manifest['layers'][0]['digest']}")


def test_corrupted_blob_is_named(tmp_path: Path, layout: Path) -> None:
    manifest, _ = _manifest(layout)
    blob = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]
    data = bytearray(blob.read_bytes())
    data[700] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert _fails(tmp_path, "--from", f"oci:{layout}") == (
        f"blob {manifest['layers'][0]['digest']} in {layout}: content does not match its digest"
    )


def test_schema1_and_foreign_layers_are_refused(tmp_path: Path, layout: Path) -> None:
    manifest, _ = _manifest(layout)
    manifest["layers"][0]["mediaType"] = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    _rewrite_manifest(layout, manifest)
    assert "is a foreign layer" in _fails(tmp_path, "--from", f"oci:{layout}")
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["mediaType"] = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    (layout / "index.json").write_text(json.dumps(index))
    assert "is Docker schema 1" in _fails(tmp_path, "--from", f"oci:{layout}")


def test_truncated_archive(tmp_path: Path, layout: Path) -> None:
    build_ok("--add", f"{tmp_path / 'f'}:/f", "-o", str(tmp_path / "whole.tar"))
    data = (tmp_path / "whole.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    message = _fails(tmp_path, "--from", str(tmp_path / "cut.tar"))
    assert message.startswith(str(tmp_path / "cut.tar"))


def test_copy_from_missing_looping_and_escaping_paths(tmp_path: Path, layout: Path) -> None:
    ref = f"oci:{layout}"
    assert _fails(tmp_path, "--copy-from", f"{ref}:/nope:/x") == f"copy-from {ref}:/nope: '/nope' does not exist in the image"
    assert _fails(tmp_path, "--copy-from", f"{ref}:/l/loop-a/x:/x") == (
        f"{ref}: too many levels of symbolic links resolving 'l/loop-a/x' (a loop?)"
    )
    build_ok("--add", f"{tmp_path}/esc:/a/b", "--oci-dir", str(tmp_path / "esc-image"))
    assert _fails(tmp_path, "--copy-from", f"oci:{tmp_path / 'esc-image'}:/a/b/escape/passwd:/x") == (
        f"oci:{tmp_path / 'esc-image'}: path 'a/b/escape/passwd' climbs above the image root"
    )


def test_remove_needs_a_base_and_an_existing_path(tmp_path: Path, layout: Path) -> None:
    assert _fails(tmp_path, "--remove", "/f", "--add", f"{tmp_path / 'f'}:/g").startswith("--remove: there is no base image")
    assert _fails(tmp_path, "--from", f"oci:{layout}", "--remove", "/nope") == "--remove /nope: not in the base image"


def test_glob_copy_from(tmp_path: Path, layout: Path) -> None:
    out = tmp_path / "out" / "g"
    build_ok("--copy-from", f"oci:{layout}:/l/loop-*:/links/", "--oci-dir", str(out))
    res = lamina("inspect", "--files", "--json", str(out))
    entries = json.loads(res.stdout)[0]["layers"][0]["entries"]
    assert [(e["path"], e.get("link")) for e in entries] == [("links", None), ("links/loop-a", "loop-b"), ("links/loop-b", "loop-a")]


def test_zstd_base_layer_is_converted_for_gzip_output_and_passed_through_otherwise(tmp_path: Path, layout: Path) -> None:
    build_ok("--add", f"{tmp_path / 'f'}:/f", "--compression", "zstd", "--oci-dir", str(tmp_path / "z"))
    zstd_layer = _manifest(tmp_path / "z")[0]["layers"][0]
    res = lamina("build", "--from", f"oci:{tmp_path / 'z'}", "--oci-dir", str(tmp_path / "out" / "g"))
    assert res.returncode == 0, res.stderr
    assert f"lamina: note: oci:{tmp_path / 'z'}: layer {zstd_layer['digest']} is zstd; converted to gzip" in res.stderr
    converted = _manifest(tmp_path / "out" / "g")[0]["layers"][0]
    assert converted["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    build_ok("--from", f"oci:{tmp_path / 'z'}", "--compression", "zstd", "--oci-dir", str(tmp_path / "out" / "z2"))
    assert _manifest(tmp_path / "out" / "z2")[0]["layers"][0] == zstd_layer
    # An uncompressed base layer is compressed once, and its diff_id is kept.
    plain = _manifest(layout)[0]["layers"][0]
    build_ok("--from", f"oci:{layout}", "--oci-dir", str(tmp_path / "out" / "p"))
    gz = _manifest(tmp_path / "out" / "p")[0]["layers"][0]
    assert gz["mediaType"].endswith("+gzip") and gz["digest"] != plain["digest"]
    config = json.loads((tmp_path / "out" / "p" / "blobs" / "sha256" / _manifest(tmp_path / "out" / "p")[0]["config"]["digest"][7:]).read_text())
    assert config["rootfs"]["diff_ids"][0] == plain["digest"]
