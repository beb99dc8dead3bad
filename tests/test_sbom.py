"""SPDX 2.3 SBOMs: valid by the SPDX project's validator, complete, reproducible, attachable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from support.cli import build_ok, lamina


def _validate(path: Path) -> list[str]:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    return [m.validation_message for m in validate_full_spdx_document(parse_file(str(path)))]


def test_sbom_is_valid_lists_files_and_go_modules_and_is_reproducible(testdata_out: Path, tmp_path: Path) -> None:
    args = ["--add", f"{testdata_out / 'hello-amd64'}:/hello", "--ca-certs", str(testdata_out / "cacert.pem"),
            "--cmd", '["/hello"]', "--sbom", "spdx", "-t", "hello:v1"]
    digest = build_ok(*args, "-o", str(tmp_path / "a.tar"))
    sbom = tmp_path / "a.tar.spdx.json"
    assert _validate(sbom) == []
    doc = json.loads(sbom.read_text())
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["packages"][0]["versionInfo"] == digest
    files = {f["fileName"]: {c["algorithm"]: c["checksumValue"] for c in f["checksums"]} for f in doc["files"]}
    assert files["./hello"]["SHA256"] == hashlib.sha256((testdata_out / "hello-amd64").read_bytes()).hexdigest()
    assert set(files) == {"./hello", "./etc/ssl/certs/ca-certificates.crt"}
    modules = [(p["name"], p["versionInfo"]) for p in doc["packages"][1:]]
    assert modules == [("hello", "(devel)")]
    build_ok(*args, "-o", str(tmp_path / "b.tar"))
    assert (tmp_path / "b.tar.spdx.json").read_bytes() == sbom.read_bytes()


def test_sbom_honours_whiteouts_of_a_base(testdata_out: Path, tmp_path: Path) -> None:
    build_ok("--tarball", str(testdata_out / "busybox-rootfs.tar.gz"), "--oci-dir", str(tmp_path / "base"))
    build_ok("--from", f"oci:{tmp_path / 'base'}", "--remove", "/bin/busybox", "--no-lint", "--sbom", "spdx",
             "-o", str(tmp_path / "img.tar"))
    doc = json.loads((tmp_path / "img.tar.spdx.json").read_text())
    assert [f["fileName"] for f in doc["files"]] == []  # busybox was the only regular file
    assert _validate(tmp_path / "img.tar.spdx.json") == []


def test_attached_sbom_is_an_artifact_whose_subject_is_the_image(testdata_out: Path, tmp_path: Path) -> None:
    digest = build_ok("--add", f"{testdata_out / 'hello-c'}:/hello", "--cmd", '["/hello"]', "--sbom", "spdx",
                      "--sbom-attach", "-t", "x:v1", "--oci-dir", str(tmp_path / "layout"))
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    image, attached = index["manifests"]
    assert image["digest"] == digest
    assert attached["annotations"] == {"org.opencontainers.image.artifactType": "application/spdx+json"}
    manifest = json.loads((tmp_path / "layout" / "blobs" / "sha256" / attached["digest"][7:]).read_bytes())
    assert manifest["artifactType"] == "application/spdx+json"
    assert manifest["subject"]["digest"] == digest
    assert manifest["config"] == {"mediaType": "application/vnd.oci.empty.v1+json", "digest":
                                  "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2}
    blob = tmp_path / "layout" / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]
    assert json.loads(blob.read_bytes())["packages"][0]["versionInfo"] == digest
    res = lamina("inspect", "--json", f"{tmp_path / 'layout'}")  # lamina's readers skip the artifact
    assert res.returncode == 0, res.stderr
    assert [r["manifest_digest"] for r in json.loads(res.stdout)] == [digest]
    assert build_ok("--from", f"oci:{tmp_path / 'layout'}", "--oci-dir", str(tmp_path / "on-top")).startswith("sha256:")


def test_sbom_lists_exactly_the_regular_files_inspect_counts() -> None:
    """Same reading as inspect: ./ names, hardlinks, opaque directories, overwrites, whiteouts."""
    import io
    import tarfile

    from lamina.inspect import read_layers
    from lamina.sbom import _filesystem

    def layer(*members: tuple[str, str, bytes]) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tf:
            for name, kind, data in members:
                info = tarfile.TarInfo(name)
                info.type = {"f": tarfile.REGTYPE, "h": tarfile.LNKTYPE, "d": tarfile.DIRTYPE}[kind]
                if kind == "h":
                    info.linkname, data = data.decode(), b""
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        return out.getvalue()

    layers = [
        layer(("./", "d", b""), ("./bin/busybox", "f", b"BB"), ("./bin/sh", "h", b"./bin/busybox"),
              ("./etc/motd", "f", b"hi"), ("./etc/old/x", "f", b"x"), ("./gone", "f", b"g")),
        layer(("etc/", "d", b""), ("etc/.wh..wh..opq", "f", b""), ("etc/new", "f", b"n"), (".wh.gone", "f", b""),
              ("bin/busybox", "f", b"B2")),
    ]
    openers = [lambda data=data: io.BufferedReader(io.BytesIO(data)) for data in layers]
    files = _filesystem(openers)
    fs, _ = read_layers("test", openers)
    assert sorted(files) == sorted(fs.files()) == ["bin/busybox", "bin/sh", "etc/new"]
    assert files["bin/sh"].sha256 == hashlib.sha256(b"BB").hexdigest()  # the hardlink keeps the first bytes
    assert files["bin/busybox"].sha256 == hashlib.sha256(b"B2").hexdigest()
