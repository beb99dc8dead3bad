"""lamina's outputs read by the other tools users run: skopeo, umoci, podman."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from support.cli import build_ok
from support.oci import validate_image
from support.tools import require, run_ok as run

pytestmark = pytest.mark.e2e



@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An input tree with the awkward cases: modes, nesting, symlinks, hardlinks, long names."""
    root = tmp_path_factory.mktemp("input") / "tree"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "bin" / "tool", 0o755)
    (root / "secret").write_text("s")
    os.chmod(root / "secret", 0o600)
    (root / "sub" / "deeper" / ("long-name-" * 15)).write_text("long")
    (root / "sub" / "data.bin").write_bytes(os.urandom(200_000))
    os.symlink("../bin/tool", root / "sub" / "rel-link")
    os.symlink("/etc/hostname", root / "abs-link")
    os.link(root / "sub" / "data.bin", root / "data-hardlink")
    return root


@pytest.fixture(scope="module")
def image(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("image")
    digest = build_ok("--add", f"{tree}:/app", "--entrypoint", '["/app/bin/tool"]', "-t", "lamina-interop:v1",
                      "-o", str(out / "img.tar"), "--oci-dir", str(out / "layout"))
    return {"digest": digest, "tarball": out / "img.tar", "layout": out / "layout", "dir": out,
            "check": validate_image(out / "img.tar")}


def test_skopeo_reads_both_views_of_the_tarball(image) -> None:
    require("skopeo")
    config = image["check"]["configs"][0]
    oci = json.loads(run("skopeo", "inspect", f"oci-archive:{image['tarball']}"))
    assert oci["Digest"] == image["digest"]
    assert oci["Architecture"] == "amd64" and oci["Os"] == "linux"
    docker = json.loads(run("skopeo", "inspect", f"docker-archive:{image['tarball']}"))
    assert docker["Layers"] == config["rootfs"]["diff_ids"]  # docker-archive names layers by diff_id
    raw = json.loads(run("skopeo", "inspect", "--raw", f"oci:{image['layout']}:v1"))
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert raw["layers"] == image["check"]["manifests"][0]["layers"]


def test_skopeo_copies_every_way(image, tmp_path: Path) -> None:
    require("skopeo")
    for i, source in enumerate([f"docker-archive:{image['tarball']}", f"oci-archive:{image['tarball']}",
                                f"oci:{image['layout']}:v1"]):
        dest = tmp_path / f"copy{i}"
        run("skopeo", "copy", "--quiet", source, f"oci:{dest}:x")
        validate_image(dest)
    # An OCI-to-OCI copy keeps the bytes, so the digest is unchanged.
    assert json.loads((tmp_path / "copy1" / "index.json").read_text())["manifests"][0]["digest"] == image["digest"]


def _walk(root: Path) -> dict[str, tuple]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            out[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return out


def test_umoci_unpacks_the_inputs_exactly(image, tree: Path, tmp_path: Path) -> None:
    require("umoci")
    bundle = tmp_path / "bundle"
    run("umoci", "unpack", "--image", f"{image['layout']}:v1", str(bundle))
    app = bundle / "rootfs" / "app"
    assert _walk(app) == _walk(tree)
    assert (app / "data-hardlink").stat().st_ino == (app / "sub" / "data.bin").stat().st_ino
    assert (app / "data-hardlink").stat().st_nlink == 2
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["/app/bin/tool"]


def test_umoci_unpacks_the_tarball_layout_too(image, tmp_path: Path) -> None:
    """The tarball is a layout plus manifest.json: extract it and umoci takes it as is."""
    require("umoci")
    extracted = tmp_path / "x"
    extracted.mkdir()
    run("tar", "-xf", str(image["tarball"]), "-C", str(extracted))
    run("umoci", "unpack", "--image", f"{extracted}:v1", str(tmp_path / "bundle"))
    assert (tmp_path / "bundle" / "rootfs" / "app" / "bin" / "tool").read_bytes() == b"#!/bin/sh\necho tool\n"


def test_podman_loads_the_tarball(image, tmp_path: Path) -> None:
    """podman load (podman run needs rlimits this sandbox refuses, so the image is inspected)."""
    require("podman")
    import tempfile

    runroot = tempfile.mkdtemp(prefix="pr", dir="/tmp")  # podman wants a runroot under 50 characters
    storage = ["--root", str(tmp_path / "root"), "--runroot", runroot, "--storage-driver", "vfs",
               "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    out = run("podman", *storage, "load", "-i", str(image["tarball"]))
    assert "Loaded image" in out and "lamina-interop:v1" in out
    inspected = json.loads(run("podman", *storage, "image", "inspect", "lamina-interop:v1"))
    assert inspected[0]["Id"] == image["check"]["manifests"][0]["config"]["digest"].removeprefix("sha256:")
    assert inspected[0]["Config"]["Entrypoint"] == ["/app/bin/tool"]
    subprocess.run(["podman", *storage, "rmi", "-a", "-f"], capture_output=True, timeout=120)
    subprocess.run(["rm", "-rf", runroot], timeout=60)


def test_a_layout_shared_with_skopeo_keeps_its_images(image, tmp_path: Path) -> None:
    """skopeo puts two tags in a layout; lamina adds a third; skopeo and umoci still see all three."""
    require("skopeo")
    require("umoci")
    layout = tmp_path / "shared"
    for tag in ("one", "two"):
        run("skopeo", "copy", "--quiet", f"oci:{image['layout']}:v1", f"oci:{layout}:{tag}")
    (layout / "NOTES.txt").write_text("kept")
    digest = build_ok("--add", f"{image['dir'] / 'img.tar'}:/img.tar", "-t", "x:three", "--oci-dir", str(layout))
    assert (layout / "NOTES.txt").read_text() == "kept"
    for tag, expected in (("one", image["digest"]), ("two", image["digest"]), ("three", digest)):
        raw = run("skopeo", "inspect", "--raw", f"oci:{layout}:{tag}")
        assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == expected
    assert sorted(run("umoci", "ls", "--layout", str(layout)).split()) == ["one", "three", "two"]
    validate_image(layout)
