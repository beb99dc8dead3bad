"""Bases and COPY --from with real tools: docker save output, skopeo and umoci layouts."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from support.cli import build_ok, lamina
from support.oci import validate_image
from support.tools import require, run_ok as run

pytestmark = pytest.mark.e2e



def layers_of(image: Path) -> list[dict]:
    return validate_image(image)["manifests"][0]["layers"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bases")


@pytest.fixture(scope="module")
def busybox(work: Path, testdata_out: Path) -> Path:
    """lamina's busybox image (the busybox rootfs tarball as one layer)."""
    out = work / "busybox.tar"
    build_ok("--tarball", str(testdata_out / "busybox-rootfs.tar.gz"), "--cmd", '["sh"]',
             "--env", "FROM_BASE=1", "--workdir", "/root", "-t", "lamina-e2e/busybox:base", "-o", str(out))
    return out


@pytest.fixture(scope="module")
def saved(busybox: Path, dockerd, work: Path) -> Path:
    """The same image after a round trip through Docker 20.10: `docker save` (<id>/layer.tar)."""
    dockerd.docker("load", "-i", str(busybox))
    out = work / "saved.tar"
    dockerd.docker("save", "-o", str(out), "lamina-e2e/busybox:base")
    with tarfile.open(out) as tf:
        assert any(n.endswith("/layer.tar") for n in tf.getnames()), "expected the docker 20.10 save format"
    return out


def test_docker_saved_busybox_as_base(saved: Path, busybox: Path, dockerd, testdata_out: Path, work: Path) -> None:
    out = work / "on-saved.tar"
    build_ok("--from", f"docker-archive:{saved}", "--add", f"{testdata_out / 'hello-amd64'}:/hello",
             "--cmd", '["sh", "-c", "/hello && busybox ls / && echo $FROM_BASE && pwd"]', "-t", "lamina-e2e/on-saved",
             "-o", str(out))
    layers = layers_of(out)
    # docker save gives the uncompressed tar back; lamina compresses it once, deterministically,
    # so the base layer's digest is the one lamina's own busybox image has.
    assert layers[0]["digest"] == layers_of(busybox)[0]["digest"]
    assert len(layers) == 2
    config = validate_image(out)["configs"][0]
    assert [h["created_by"] for h in config["history"]] == [
        "lamina: add tarball busybox-rootfs.tar.gz -> /", "lamina: add hello-amd64 -> /hello"]
    assert "FROM_BASE=1" in config["config"]["Env"] and config["config"]["WorkingDir"] == "/root"
    dockerd.docker("load", "-i", str(out))
    res = dockerd.docker("run", "--pull", "never", "--rm", "--network", "none", "lamina-e2e/on-saved")
    lines = res.stdout.splitlines()
    assert lines[0] == "hello, scratch!"
    assert {"bin", "hello", "usr"} <= set(lines[1:-2])
    assert lines[-2:] == ["1", "/root"]


def test_bare_path_and_lamina_tarball_pass_through(busybox: Path, saved: Path, testdata_out: Path, work: Path) -> None:
    for base in (str(busybox), f"docker-archive:{busybox}", str(saved)):
        out = work / "bare.tar"
        build_ok("--from", base, "--add", f"{testdata_out / 'hello-c'}:/hello", "-o", str(out))
        assert layers_of(out)[0] == layers_of(busybox)[0]  # same digest, size, media type, annotations


def test_entrypoint_without_cmd_clears_base_cmd(busybox: Path, work: Path) -> None:
    out = work / "ep.tar"
    build_ok("--from", str(busybox), "--entrypoint", '["/bin/echo"]', "-o", str(out))
    config = validate_image(out)["configs"][0]["config"]
    assert config["Entrypoint"] == ["/bin/echo"] and "Cmd" not in config


def test_skopeo_and_umoci_layouts_as_bases(busybox: Path, work: Path, testdata_out: Path, dockerd) -> None:
    require("skopeo")
    require("umoci")
    layout = work / "skopeo-layout"
    run("skopeo", "copy", "--quiet", f"oci-archive:{busybox}", f"oci:{layout}:bb")
    out = work / "on-skopeo.tar"
    build_ok("--from", f"oci:{layout}:bb", "--add", f"{testdata_out / 'hello-c'}:/hello", "-t", "lamina-e2e/on-skopeo",
             "--cmd", '["sh", "-c", "/hello; ls /bin/sh"]', "-o", str(out))
    dockerd.docker("load", "-i", str(out))
    assert dockerd.docker("run", "--pull", "never", "--rm", "--network", "none", "lamina-e2e/on-skopeo").stdout == "hello, scratch!\n/bin/sh\n"
    umoci_layout = work / "umoci-layout"
    run("umoci", "init", "--layout", str(umoci_layout))
    run("umoci", "new", "--image", f"{umoci_layout}:u")
    bundle_src = work / "umoci-src"
    bundle_src.mkdir()
    (bundle_src / "greeting").write_text("from umoci\n")
    run("umoci", "insert", "--image", f"{umoci_layout}:u", str(bundle_src / "greeting"), "/etc/greeting")
    out = work / "on-umoci.tar"
    build_ok("--from", f"oci:{umoci_layout}:u", "--copy-from", f"{busybox}:/bin/busybox:/bin/busybox",
             "--cmd", '["/bin/busybox", "cat", "/etc/greeting"]', "-t", "lamina-e2e/on-umoci", "-o", str(out))
    dockerd.docker("load", "-i", str(out))
    assert dockerd.docker("run", "--pull", "never", "--rm", "--network", "none", "lamina-e2e/on-umoci").stdout == "from umoci\n"


def _multi_platform_layout(work: Path, busybox: Path, testdata_out: Path) -> Path:
    """Two single-platform lamina images copied by skopeo into one layout, tied by an index."""
    arm = work / "arm.tar"
    build_ok("--platform", "linux/arm64", "--add", f"{testdata_out / 'hello-arm64'}:/hello", "-o", str(arm))
    layout = work / "multi"
    run("skopeo", "copy", "--quiet", f"oci-archive:{busybox}", f"oci:{layout}:amd")
    run("skopeo", "copy", "--quiet", f"oci-archive:{arm}", f"oci:{layout}:arm")
    index = json.loads((layout / "index.json").read_text())
    children = []
    for entry, platform in zip(index["manifests"], ({"architecture": "amd64", "os": "linux"},
                                                      {"architecture": "arm64", "os": "linux", "variant": "v8"})):
        children.append({"mediaType": entry["mediaType"], "digest": entry["digest"], "size": entry["size"], "platform": platform})
    blob = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children}).encode()
    digest = hashlib.sha256(blob).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(blob)
    index["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": f"sha256:{digest}",
                               "size": len(blob), "annotations": {"org.opencontainers.image.ref.name": "multi"}})
    (layout / "index.json").write_text(json.dumps(index))
    return layout


def test_multi_platform_base_selects_and_rejects(busybox: Path, work: Path, testdata_out: Path) -> None:
    require("skopeo")
    layout = _multi_platform_layout(work, busybox, testdata_out)
    out = work / "multi-arm.tar"
    build_ok("--from", f"oci:{layout}:multi", "--platform", "linux/arm64/v8", "--cmd", "/hello", "-o", str(out))
    config = validate_image(out)["configs"][0]
    assert (config["architecture"], config["os"]) == ("arm64", "linux")
    out = work / "multi-amd.tar"
    build_ok("--from", f"oci:{layout}:multi", "-o", str(out))  # default linux/amd64
    assert layers_of(out)[0]["digest"] == layers_of(busybox)[0]["digest"]
    res = lamina("build", "--from", f"oci:{layout}:multi", "--platform", "linux/s390x", "-o", str(work / "x.tar"))
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"lamina: error: oci:{layout}:multi: no image for platform linux/s390x (available: linux/amd64, linux/arm64/v8)"
    )


def test_copy_busybox_onto_scratch(saved: Path, dockerd, work: Path) -> None:
    out = work / "bb-only.tar"
    build_ok("--copy-from", f"docker-archive:{saved}:/bin/busybox:/bin/", "--copy-from", f"{saved}:/bin/sh:/bin/sh",
             "--entrypoint", '["/bin/sh", "-c"]', "--cmd", '["echo copied; busybox | head -1 | cut -c1-7"]',
             "-t", "lamina-e2e/bb-only", "-o", str(out))
    dockerd.docker("load", "-i", str(out))
    res = dockerd.docker("run", "--pull", "never", "--rm", "--network", "none", "lamina-e2e/bb-only")
    assert res.stdout == "copied\nBusyBox\n"


def test_copy_ca_bundle_out_of_a_ca_certificates_image(work: Path) -> None:
    """An image of Debian's ca-certificates contents; its bundle and a symlinked cert copied out."""
    certs = Path("/etc/ssl/certs")
    link = next(p for p in sorted(certs.glob("*.pem")) if p.is_symlink())
    ca_image = work / "ca-image.tar"
    build_ok("--add", "/usr/share/ca-certificates:/usr/share/ca-certificates", "--add", f"{certs}:/etc/ssl/certs",
             "-o", str(ca_image))
    out = work / "with-bundle.tar"
    build_ok("--copy-from", f"{ca_image}:/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/",
             "--copy-from", f"{ca_image}:/etc/ssl/certs/{link.name}:/etc/ssl/one.pem", "--oci-dir", str(out))
    bundle = tarfile.open(fileobj=_layer_blob(out, 0), mode="r|gz")
    members = {m.name: bundle.extractfile(m).read() for m in bundle if m.isfile()}
    assert members["etc/ssl/certs/ca-certificates.crt"] == (certs / "ca-certificates.crt").read_bytes()
    one = tarfile.open(fileobj=_layer_blob(out, 1), mode="r|gz")
    members = {m.name: one.extractfile(m).read() for m in one if m.isfile()}
    assert members["etc/ssl/one.pem"] == link.read_bytes()  # the symlink resolved inside the image


def _layer_blob(layout: Path, index: int):
    manifest = validate_image(layout)["manifests"][0]
    return open(layout / "blobs" / "sha256" / manifest["layers"][index]["digest"][7:], "rb")


def test_whiteouts_across_layers_are_honoured(busybox: Path, work: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep").write_text("kept")
    (data / "drop").write_text("dropped")
    two = work / "two-layers.tar"
    build_ok("--from", str(busybox), "--add", f"{data}:/data", "-o", str(two))
    three = work / "three-layers.tar"
    build_ok("--from", str(two), "--remove", "/data/drop", "--remove", "/bin/vi", "-o", str(three))
    removal = layers_of(three)[-1]
    with tarfile.open(fileobj=_open_blob_in_tar(three, removal["digest"]), mode="r|gz") as tf:
        assert sorted(m.name for m in tf) == ["bin", "bin/.wh.vi", "data", "data/.wh.drop"]
    res = lamina("build", "--copy-from", f"{three}:/data/drop:/x", "-o", str(work / "no.tar"))
    assert res.returncode == 1
    assert res.stderr.strip() == f"lamina: error: copy-from {three}:/data/drop: '/data/drop' does not exist in the image"
    out = work / "kept.tar"
    build_ok("--copy-from", f"{three}:/data/keep:/keep", "-o", str(out))
    inspect = json.loads(lamina("inspect", "--json", "--files", str(out)).stdout)
    assert [e["path"] for e in inspect[0]["layers"][0]["entries"]] == ["keep"]


def _open_blob_in_tar(tarball: Path, digest: str):
    tf = tarfile.open(tarball)
    return tf.extractfile(f"blobs/sha256/{digest[7:]}")


def test_docker_archives_from_skopeo_podman_and_multi_image_saves(busybox: Path, saved: Path, dockerd, work: Path,
                                                                  testdata_out: Path) -> None:
    require("skopeo")
    skopeo_archive = work / "skopeo-docker.tar"
    run("skopeo", "copy", "--quiet", f"oci-archive:{busybox}", f"docker-archive:{skopeo_archive}:sk/busybox:v1")
    out = work / "on-skopeo-docker.tar"
    build_ok("--from", f"docker-archive:{skopeo_archive}", "-o", str(out))
    assert validate_image(out)["configs"][0]["rootfs"] == validate_image(busybox)["configs"][0]["rootfs"]
    # Two images in one docker save: pick by name or by position; neither is an error listing both.
    build_ok("--add", f"{testdata_out / 'hello-c'}:/hello", "-t", "lamina-e2e/other:v2", "-o", str(work / "other.tar"))
    dockerd.docker("load", "-i", str(work / "other.tar"))
    both = work / "both.tar"
    dockerd.docker("save", "-o", str(both), "lamina-e2e/busybox:base", "lamina-e2e/other:v2")
    res = lamina("build", "--from", f"docker-archive:{both}", "-o", str(work / "x.tar"))
    assert res.returncode == 1 and "the archive holds 2 images; pick one with :REF or @N" in res.stderr
    other = validate_image(work / "other.tar")["configs"][0]["rootfs"]
    mine = validate_image(busybox)["configs"][0]["rootfs"]
    with tarfile.open(both) as tf:
        first = json.load(tf.extractfile("manifest.json"))[0]["RepoTags"][0]
    for pick, expected in ((":lamina-e2e/other:v2", other), (":lamina-e2e/busybox:base", mine),
                           ("@0", other if first.startswith("lamina-e2e/other") else mine)):
        out = work / "picked.tar"
        build_ok("--from", f"docker-archive:{both}{pick}", "-o", str(out))
        assert validate_image(out)["configs"][0]["rootfs"] == expected, pick


def test_podman_saved_docker_archive_as_base(busybox: Path, work: Path, tmp_path: Path) -> None:
    require("podman")
    import tempfile

    runroot = tempfile.mkdtemp(prefix="pr", dir="/tmp")
    storage = ["--root", str(tmp_path / "root"), "--runroot", runroot, "--storage-driver", "vfs",
               "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    try:
        run("podman", *storage, "load", "-i", str(busybox))
        archive = work / "podman-save.tar"
        run("podman", *storage, "save", "--format", "docker-archive", "-o", str(archive), "lamina-e2e/busybox:base")
    finally:
        subprocess.run(["podman", *storage, "rmi", "-a", "-f"], capture_output=True, timeout=120)
        subprocess.run(["rm", "-rf", runroot], timeout=60)
    out = work / "on-podman.tar"
    build_ok("--from", str(archive), "-o", str(out))
    assert layers_of(out)[0]["digest"] == layers_of(busybox)[0]["digest"]


def test_pinned_base_by_digest_and_remove_shrinks_the_filesystem(busybox: Path, work: Path) -> None:
    manifest_digest = validate_image(busybox)["index"]["manifests"][0]["digest"]
    out = work / "pinned.tar"
    res = lamina("build", "--hermetic", "--from", f"oci-archive:{busybox}@{manifest_digest}", "--remove", "/bin/busybox",
                 "-o", str(out))
    assert res.returncode == 1 and "L002 error: sh: the command's program is not on the image's PATH" in res.stderr
    build_ok("--hermetic", "--from", f"oci-archive:{busybox}@{manifest_digest}", "--remove", "/bin/busybox",
             "--no-lint", "-o", str(out))  # sh is gone with busybox, as lint said: on purpose here
    before = json.loads(lamina("inspect", "--json", str(busybox)).stdout)[0]["filesystem"]
    after = json.loads(lamina("inspect", "--json", str(out)).stdout)[0]["filesystem"]
    assert after["bytes"] < before["bytes"] - 500_000 and after["entries"] == before["entries"] - 1
    res = lamina("build", "--from", f"oci-archive:{busybox}@sha256:{'0' * 64}", "-o", str(work / "y.tar"))
    assert res.returncode == 1 and f"no manifest or index with digest sha256:{'0' * 64}" in res.stderr
