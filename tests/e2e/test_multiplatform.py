"""One image, two platforms, from cross-compiled artifacts: an OCI index every tool reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import build_ok, lamina
from support.oci import validate_image
from support.tools import require, run_ok as run

pytestmark = pytest.mark.e2e



@pytest.fixture(scope="module")
def multi(testdata_out: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("multi")
    digest = build_ok(
        "--platform", "linux/amd64,linux/arm64", "--add", f"{testdata_out}/hello-{{arch}}:/hello",
        "--add", f"{testdata_out / 'cacert.pem'}:/etc/ssl/certs/", "--cmd", '["/hello"]', "-t", "lamina-e2e/multi:v1",
        "-o", str(out / "multi.tar"), "--oci-dir", str(out / "layout"), "--metadata-file", str(out / "meta.json"),
    )
    return {"digest": digest, "dir": out, "tar": out / "multi.tar", "layout": out / "layout",
            "check": validate_image(out / "multi.tar")}


def test_index_with_one_manifest_per_platform_and_a_shared_layer(multi) -> None:
    top = multi["check"]["index"]["manifests"][0]
    assert top["mediaType"] == "application/vnd.oci.image.index.v1+json" and top["digest"] == multi["digest"]
    configs = multi["check"]["configs"]
    assert [(c["os"], c["architecture"]) for c in configs] == [("linux", "amd64"), ("linux", "arm64")]
    amd, arm = multi["check"]["manifests"]
    assert amd["layers"][1] == arm["layers"][1]  # the certificate layer: built once, one digest
    assert amd["layers"][0]["digest"] != arm["layers"][0]["digest"]
    blobs = sorted(p.name for p in (multi["layout"] / "blobs" / "sha256").iterdir())
    assert len(blobs) == 8  # index, 2 manifests, 2 configs, 2 binaries, 1 shared certificate layer
    meta = json.loads((multi["dir"] / "meta.json").read_text())
    assert meta["digest"] == multi["digest"] and meta["media_type"] == top["mediaType"]
    assert [p["platform"] for p in meta["platforms"]] == ["linux/amd64", "linux/arm64"]


def test_docker_loads_and_runs_the_amd64_image(multi, dockerd) -> None:
    dockerd.docker("load", "-i", str(multi["tar"]))
    assert dockerd.docker("run", "--pull", "never", "--rm", "--network", "none", "lamina-e2e/multi:v1").stdout == "hello, scratch!\n"


def test_skopeo_keeps_the_index_and_selects_each_platform(multi, tmp_path: Path) -> None:
    require("skopeo")
    copy = tmp_path / "all"
    run("skopeo", "copy", "--quiet", "--all", f"oci-archive:{multi['tar']}:v1", f"oci:{copy}:v1")
    raw = json.loads(run("skopeo", "inspect", "--raw", f"oci:{copy}:v1"))
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["amd64", "arm64"]
    for arch in ("amd64", "arm64"):
        one = tmp_path / arch
        run("skopeo", "--override-arch", arch, "copy", "--quiet", f"oci-archive:{multi['tar']}:v1", f"oci:{one}:x")
        config = json.loads(run("skopeo", "inspect", "--config", f"oci:{one}:x"))
        assert config["architecture"] == arch


def test_arm64_image_runs_under_qemu(multi, tmp_path: Path) -> None:
    require("umoci")
    qemu = require("qemu-aarch64-static")
    arm = tmp_path / "arm"
    run("skopeo", "--override-arch", "arm64", "copy", "--quiet", f"oci-archive:{multi['tar']}:v1", f"oci:{arm}:arm")
    run("umoci", "unpack", "--image", f"{arm}:arm", str(tmp_path / "bundle"))
    hello = tmp_path / "bundle" / "rootfs" / "hello"
    assert run(qemu, str(hello)) == "hello, scratch!\n"


def test_mislabelled_artifact_and_missing_platform_input(testdata_out: Path, tmp_path: Path) -> None:
    res = lamina("build", "--platform", "linux/arm64", "--add", f"{testdata_out / 'hello-amd64'}:/hello",
                 "-o", str(tmp_path / "x.tar"))
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"lamina: error: /hello (from {testdata_out / 'hello-amd64'}) is an ELF x86-64 executable, "
        "but the image platform is linux/arm64; --no-arch-check allows it"
    )
    assert lamina("build", "--platform", "linux/arm64", "--no-arch-check", "--add", f"{testdata_out / 'hello-amd64'}:/hello",
                  "-o", str(tmp_path / "x.tar")).returncode == 0
    res = lamina("build", "--platform", "linux/amd64,linux/arm/v7", "--add", f"{testdata_out}/hello-{{arch}}:/hello",
                 "-o", str(tmp_path / "y.tar"))
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"lamina: error: platform linux/arm/v7: add {testdata_out}/hello-arm:/hello: "
        f"cannot read '{testdata_out}/hello-arm': No such file or directory"
    )
    assert not (tmp_path / "y.tar").exists()
