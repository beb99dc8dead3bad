"""SLSA provenance (in-toto Statement v1): its shape, checked by JSON schemas written from the
two specifications and by the in-toto project's own protobuf bindings; its dependencies,
equal to lamina.lock's pins; its determinism; its place as an artifact of the image."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from support.cli import lamina

from lamina import provenance

EPOCH = "1700000000"

# From https://github.com/in-toto/attestation spec/v1 (statement.md, resource_descriptor.md) and
# https://slsa.dev/spec/v1.0/provenance: required fields and their types.
DIGEST_SET = {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]+$"}}
RESOURCE = {"type": "object", "anyOf": [{"required": ["uri"]}, {"required": ["digest"]}, {"required": ["content"]}],
            "properties": {"name": {"type": "string"}, "uri": {"type": "string"}, "digest": DIGEST_SET,
                           "mediaType": {"type": "string"}, "annotations": {"type": "object"}},
            "additionalProperties": False}
STATEMENT = {
    "type": "object", "required": ["_type", "subject", "predicateType", "predicate"], "additionalProperties": False,
    "properties": {
        "_type": {"const": "https://in-toto.io/Statement/v1"},
        "subject": {"type": "array", "minItems": 1, "items": {**RESOURCE, "required": ["digest"]}},
        "predicateType": {"const": "https://slsa.dev/provenance/v1"},
        "predicate": {
            "type": "object", "required": ["buildDefinition", "runDetails"], "additionalProperties": False,
            "properties": {
                "buildDefinition": {
                    "type": "object", "required": ["buildType", "externalParameters"], "additionalProperties": False,
                    "properties": {"buildType": {"type": "string", "format": "uri"},
                                   "externalParameters": {"type": "object"}, "internalParameters": {"type": "object"},
                                   "resolvedDependencies": {"type": "array", "items": RESOURCE}}},
                "runDetails": {
                    "type": "object", "required": ["builder"], "additionalProperties": False,
                    "properties": {
                        "builder": {"type": "object", "required": ["id"],
                                    "properties": {"id": {"type": "string"}, "version": {"type": "object"}}},
                        "metadata": {"type": "object", "properties": {
                            "invocationId": {"type": "string"},
                            "startedOn": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
                            "finishedOn": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"}}}}}}},
    },
}


def run_ok(*args: str, cwd: Path) -> str:
    res = lamina(*args, cwd=cwd, env={"SOURCE_DATE_EPOCH": EPOCH})
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


def attached(layout: Path) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """(artifact manifest, statement bytes, image descriptor) from an OCI layout's index.json."""
    index = json.loads((layout / "index.json").read_text())
    artifacts = [m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.artifactType")]
    [image] = [m for m in index["manifests"] if m not in artifacts]
    [desc] = artifacts
    manifest = json.loads((layout / "blobs/sha256" / desc["digest"][7:]).read_bytes())
    data = (layout / "blobs/sha256" / manifest["layers"][0]["digest"][7:]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest["layers"][0]["digest"][7:]
    return manifest, data, image


def from_tarball(path: Path, dest: Path) -> Path:
    with tarfile.open(path) as tar:  # lamina's own tarball: blobs/, index.json, ... (no links)
        for member in tar:
            assert member.isdir() or member.isfile(), member.name
            target = dest / member.name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
    return dest


def tree_digest(root: Path) -> str:
    """The documented ``lamina-tree-sha256``, written again from the docstring's words."""
    lines = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                lines.append(f"l {rel} -> {os.readlink(full)}")
            elif stat.S_ISDIR(st.st_mode):
                lines.append(f"d {rel} {stat.S_IMODE(st.st_mode):04o}")
            else:
                lines.append(f"f {rel} {stat.S_IMODE(st.st_mode):04o} {hashlib.sha256(full.read_bytes()).hexdigest()}")
    return hashlib.sha256("".join(line + "\n" for line in lines).encode()).hexdigest()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A spec with every kind of input: a file, a directory, a tarball, a base layout, --copy-from."""
    (tmp_path / "app/conf").mkdir(parents=True)
    (tmp_path / "app/conf/app.toml").write_text("port = 8080\n")
    (tmp_path / "app/run.sh").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "app/run.sh").chmod(0o755)
    os.symlink("run.sh", tmp_path / "app/start")
    (tmp_path / "notes.txt").write_text("notes\n")
    data = b"from the tarball\n"
    with tarfile.open(tmp_path / "extra.tar", "w") as tar:
        info = tarfile.TarInfo("extra.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    run_ok("build", "--add", "notes.txt:/base/notes.txt", "--no-lint", "--oci-dir", "base", cwd=tmp_path)
    (tmp_path / "lamina.toml").write_text(
        'base = "oci:base"\nprovenance = true\nlint = false\ntags = ["example.invalid/app:1"]\n'
        '[[layer]]\nentries = [{ src = "app", dst = "/app" }, { src = "notes.txt", dst = "/notes.txt" }]\n'
        '[[layer]]\ntarball = "extra.tar"\n'
        '[[layer]]\nentries = [{ from = "oci:base", src = "/base/notes.txt", dst = "/copied.txt" }]\n')
    run_ok("lock", "lamina.toml", cwd=tmp_path)
    return tmp_path


def lock_pins(path: Path) -> dict[str, str]:
    import tomllib

    return {k: v.removeprefix("sha256:") for k, v in tomllib.loads(path.read_text())["inputs"].items()}


def test_statement_shape_dependencies_and_subject(project: Path) -> None:
    digest = run_ok("build", "lamina.toml", "--oci-dir", "out", "--hermetic", cwd=project)
    manifest, data, image = attached(project / "out")
    assert manifest["artifactType"] == "application/vnd.in-toto+json"
    assert manifest["layers"][0]["mediaType"] == "application/vnd.in-toto+json"
    assert manifest["subject"] == {k: image[k] for k in ("mediaType", "digest", "size")} and image["digest"] == digest
    doc = json.loads(data)
    jsonschema.validate(doc, STATEMENT, format_checker=jsonschema.FormatChecker())
    assert doc["subject"] == [{"name": "example.invalid/app:1", "digest": {"sha256": digest[7:]}}]

    predicate = doc["predicate"]
    details = predicate["runDetails"]
    assert details["builder"]["id"] == provenance.BUILDER_ID and details["builder"]["id"].endswith("@0.1.0")
    assert details["metadata"] == {"startedOn": "2023-11-14T22:13:20Z", "finishedOn": "2023-11-14T22:13:20Z"}
    external = predicate["buildDefinition"]["externalParameters"]
    assert external["platforms"] == ["linux/amd64"]
    assert external["flags"] == {"oci_dir": "out", "hermetic": True}
    spec_bytes = (project / "lamina.toml").read_bytes()
    assert external["spec"]["sha256"] == hashlib.sha256(spec_bytes).hexdigest()
    assert external["spec"]["content"]["base"] == "oci:base"

    deps = predicate["buildDefinition"]["resolvedDependencies"]
    pinned = {d["name"]: d["digest"] for d in deps if "mediaType" not in d}
    pins = lock_pins(project / "lamina.lock")
    assert set(pinned) == set(pins) == {"app", "notes.txt", "extra.tar", "oci:base"}
    assert {name: next(iter(d.values())) for name, d in pinned.items()} == pins
    assert pinned["app"] == {"lamina-tree-sha256": tree_digest(project / "app")}
    assert pinned["notes.txt"] == {"sha256": hashlib.sha256(b"notes\n").hexdigest()}
    assert pinned["oci:base"] == {"lamina-oci-index-sha256": hashlib.sha256((project / "base/index.json").read_bytes()).hexdigest()}
    base_manifest = json.loads((project / "base/index.json").read_text())["manifests"][0]
    [image_dep] = [d for d in deps if "mediaType" in d]  # base and --copy-from name the same image: listed once
    assert image_dep == {"name": "oci:base", "digest": {"sha256": base_manifest["digest"][7:]},
                         "mediaType": base_manifest["mediaType"], "annotations": {"platform": "linux/amd64"}}


def test_in_toto_bindings_load_it_strictly(project: Path) -> None:
    pytest.importorskip("in_toto_attestation")
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    run_ok("build", "lamina.toml", "--oci-dir", "out", cwd=project)
    _, data, _ = attached(project / "out")
    loaded = json_format.Parse(data, statement_pb2.Statement())  # unknown fields are errors
    Statement.copy_from_pb(loaded).validate()
    predicate = json_format.ParseDict(json.loads(data)["predicate"], provenance_pb2.Provenance())
    assert predicate.run_details.builder.id == provenance.BUILDER_ID
    assert len(predicate.build_definition.resolved_dependencies) == 5


def test_deterministic_same_in_tarball_and_layout_and_follows_inputs(project: Path) -> None:
    run_ok("build", "lamina.toml", "--oci-dir", "one", cwd=project)
    first = attached(project / "one")[1]
    run_ok("build", "lamina.toml", "--oci-dir", "one", cwd=project)  # the same command again
    assert attached(project / "one")[1] == first
    run_ok("build", "lamina.toml", "-o", "image.tar", cwd=project)
    tar_manifest, in_tar, _ = attached(from_tarball(project / "image.tar", project / "unpacked"))
    assert json.loads(in_tar)["predicate"]["buildDefinition"]["resolvedDependencies"] == \
        json.loads(first)["predicate"]["buildDefinition"]["resolvedDependencies"]
    (project / "app/conf/app.toml").write_text("port = 9090\n")  # a file deep in a directory input
    run_ok("build", "lamina.toml", "--oci-dir", "three", cwd=project)
    deps = {d["name"]: d for d in json.loads(attached(project / "three")[1])["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert deps["app"]["digest"]["lamina-tree-sha256"] == tree_digest(project / "app") != lock_pins(project / "lamina.lock")["app"]


def test_the_statement_ignores_how_the_build_talks_and_is_never_stale(project: Path) -> None:
    """-q and --force make nothing different: the same statement. And a build with provenance
    is never answered from the up-to-date record, whose fingerprint does not cover the flags
    the statement records (it was: a flag changed the statement, the old one stayed)."""
    run_ok("build", "lamina.toml", "--oci-dir", "out", "-q", cwd=project)
    quiet = attached(project / "out")[1]
    index = (project / "out" / "index.json").stat().st_ino
    run_ok("build", "lamina.toml", "--oci-dir", "out", cwd=project)
    assert attached(project / "out")[1] == quiet
    assert (project / "out" / "index.json").stat().st_ino != index  # built again, not "up to date"
    run_ok("build", "lamina.toml", "--oci-dir", "out", "--force", cwd=project)
    assert attached(project / "out")[1] == quiet


def test_index_subjects_and_flag(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x\n")
    run_ok("build", "--add", "f.txt:/f.txt", "--platform", "linux/amd64,linux/arm64", "--provenance", "--no-lint",
           "--oci-dir", "multi", cwd=tmp_path)
    manifest, data, top = attached(tmp_path / "multi")
    doc = json.loads(data)
    assert top["mediaType"] == "application/vnd.oci.image.index.v1+json" and manifest["subject"]["digest"] == top["digest"]
    index = json.loads((tmp_path / "multi/blobs/sha256" / top["digest"][7:]).read_bytes())
    assert [s["digest"]["sha256"] for s in doc["subject"]] == [top["digest"][7:], *(m["digest"][7:] for m in index["manifests"])]
    assert doc["predicate"]["buildDefinition"]["externalParameters"]["platforms"] == ["linux/amd64", "linux/arm64"]
    run_ok("build", "--add", "f.txt:/f.txt", "--no-lint", "--oci-dir", "plain", cwd=tmp_path)
    assert len(json.loads((tmp_path / "plain/index.json").read_text())["manifests"]) == 1  # nothing unasked


def test_signed_provenance_is_a_dsse_envelope_beside_the_output(project: Path) -> None:
    pytest.importorskip("nacl")
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    env = {"SOURCE_DATE_EPOCH": EPOCH, "LAMINA_KEY_PASSWORD": "pw"}
    assert lamina("keygen", "--out", "k", cwd=project, env=env).returncode == 0
    plain = run_ok("build", "lamina.toml", "-o", "plain.tar", cwd=project)
    res = lamina("build", "lamina.toml", "-o", "signed.tar", "--provenance-key", "k.key", cwd=project, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == plain  # the same image
    envelope = json.loads((project / "signed.tar.provenance.dsse.json").read_bytes())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    body = base64.b64decode(envelope["payload"])
    _, inside, _ = attached(from_tarball(project / "signed.tar", project / "unpacked"))
    assert body == inside  # the envelope signs exactly the statement the tarball carries
    pae = b"DSSEv1 %d application/vnd.in-toto+json %d " % (len(b"application/vnd.in-toto+json"), len(body)) + body
    public = serialization.load_pem_public_key((project / "k.pub").read_bytes())
    [signature] = envelope["signatures"]
    public.verify(base64.b64decode(signature["sig"]), pae, ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr]
    with pytest.raises(Exception):
        public.verify(base64.b64decode(signature["sig"]), body, ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr]
    # the signature lives outside: nothing of the envelope is in the tarball
    assert signature["sig"].encode() not in (project / "signed.tar").read_bytes()
    assert b"DSSEv1" not in (project / "signed.tar").read_bytes()
    wrong = lamina("build", "lamina.toml", "-o", "other.tar", "--provenance-key", "k.key", cwd=project,
                   env={**env, "LAMINA_KEY_PASSWORD": "not-it"})
    assert wrong.returncode == 1 and wrong.stderr == "lamina: error: k.key: wrong password (or the key file is damaged)\n"
    assert not (project / "other.tar").exists()
