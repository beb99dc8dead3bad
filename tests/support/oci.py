"""validate_image(): re-hash every blob against its descriptor and check the JSON against
the official OCI image-spec schemas. Every sink test ends with it.

The schemas come from Debian's golang-github-opencontainers-image-spec-dev (installed by
scripts/ensure-deps.sh; no PyPI package ships them). Debian bookworm packages image-spec
1.1.0-rc2, whose schemas predate three 1.1.0 fields: ``subject`` and ``artifactType`` on
manifests and indexes, ``artifactType`` and ``data`` on descriptors (and sizes may be
negative there). _check_v1_1() checks those by hand, so an SBOM artifact or a subject
lamina writes is held to 1.1.0 all the same.

Blob re-hashing never depends on the schemas: it runs first, and a missing schema package
only skips (fails under CI=true) after every digest, size and diff_id has been checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import subprocess
import tarfile
from functools import cache
from pathlib import Path
from typing import Any

from support.tools import unavailable

SCHEMA_PACKAGE = "golang-github-opencontainers-image-spec-dev"
_SCHEMA_SUFFIX = "/opencontainers/image-spec/schema/image-manifest-schema.json"

# RFC 6838 restricted names (what image-spec 1.1.0 requires of mediaType and artifactType).
MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")


@cache
def schema_dir() -> Path | None:
    """Where the installed package keeps its schema/*.json, asked of dpkg (no path guessed)."""
    try:
        listing = subprocess.run(["dpkg-query", "-L", SCHEMA_PACKAGE], capture_output=True, text=True,
                                 stdin=subprocess.DEVNULL, timeout=60)
    except OSError:
        return None
    for line in listing.stdout.splitlines():
        if line.endswith(_SCHEMA_SUFFIX) and Path(line).is_file():
            return Path(line).parent
    return None


def _strip_ids(node: Any, top: bool = True) -> Any:
    """The draft-04 files carry nested "id"s that break relative $ref resolution."""
    if isinstance(node, dict):
        return {k: _strip_ids(v, False) for k, v in node.items() if top or k != "id"}
    if isinstance(node, list):
        return [_strip_ids(v, False) for v in node]
    return node


@cache
def _validator(name: str) -> Any:
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    directory = schema_dir()
    if directory is None:
        unavailable(f"OCI schemas missing: install {SCHEMA_PACKAGE} (scripts/ensure-deps.sh)")
    registry: Registry = Registry()
    schemas = {}
    for path in directory.glob("*.json"):
        contents = _strip_ids(json.loads(path.read_text()))
        contents.pop("id", None)
        schemas[path.name] = contents
        registry = registry.with_resource(path.name, Resource.from_contents(contents, default_specification=DRAFT4))
    return jsonschema.Draft4Validator(schemas[name], registry=registry)


def _descriptor_errors(desc: Any, where: str) -> list[str]:
    """The 1.1.0 rules for one descriptor that the rc2 schema does not state."""
    if not isinstance(desc, dict):
        return []  # the schema reports the wrong type
    errors = []
    size = desc.get("size")
    if isinstance(size, int) and size < 0:
        errors.append(f"{where}: negative size {size}")
    if "artifactType" in desc and not (isinstance(desc["artifactType"], str) and MEDIA_TYPE.match(desc["artifactType"])):
        errors.append(f"{where}: artifactType {desc['artifactType']!r} is not a media type")
    if "data" in desc:
        data = desc["data"]
        try:
            raw = base64.b64decode(data, validate=True) if isinstance(data, str) else None
        except binascii.Error:
            raw = None
        if raw is None:
            errors.append(f"{where}: data is not base64")
        elif len(raw) != desc.get("size") or f"sha256:{hashlib.sha256(raw).hexdigest()}" != desc.get("digest"):
            errors.append(f"{where}: data does not match its digest and size")
    return errors


def _check_v1_1(name: str, document: Any) -> list[str]:
    """image-spec 1.1.0 additions: subject, artifactType and data (see the module docstring)."""
    if not isinstance(document, dict):
        return []
    descriptors: list[tuple[str, Any]] = []
    if name == "content-descriptor.json":
        descriptors.append(("descriptor", document))
    if name in ("image-manifest-schema.json", "image-index-schema.json"):
        if "artifactType" in document and not (
                isinstance(document["artifactType"], str) and MEDIA_TYPE.match(document["artifactType"])):
            return [f"artifactType {document['artifactType']!r} is not a media type"]
        if "subject" in document:
            subject = document["subject"]
            if not isinstance(subject, dict):
                return ["subject is not a descriptor"]
            errors = sorted(_validator("content-descriptor.json").iter_errors(subject), key=str)
            if errors:
                return ["subject: " + e.message for e in errors]
            descriptors.append(("subject", subject))
    if name == "image-manifest-schema.json":
        descriptors.append(("config", document.get("config")))
        descriptors += [(f"layers[{i}]", d) for i, d in enumerate(document.get("layers") or [])]
    if name == "image-index-schema.json":
        descriptors += [(f"manifests[{i}]", d) for i, d in enumerate(document.get("manifests") or [])]
    return [error for where, desc in descriptors for error in _descriptor_errors(desc, where)]


def check_schema(name: str, document: Any) -> None:
    """Validate against the named schema file, plus the 1.1.0 rules rc2 lacks."""
    errors = [e.message for e in sorted(_validator(name).iter_errors(document), key=str)]
    errors += _check_v1_1(name, document)
    assert not errors, f"{name}: " + "; ".join(errors)


class _Files:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar = None if path.is_dir() else tarfile.open(path)

    def read(self, name: str) -> bytes:
        if self.tar is None:
            return (self.path / name).read_bytes()
        member = self.tar.extractfile(name)
        assert member is not None, name
        return member.read()

    def names(self) -> set[str]:
        if self.tar is None:
            return {str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file()}
        return {m.name for m in self.tar.getmembers() if m.isfile()}


def _blob(files: _Files, descriptor: dict[str, Any]) -> bytes:
    algo, hexdigest = descriptor["digest"].split(":")
    assert algo == "sha256", descriptor["digest"]
    data = files.read(f"blobs/{algo}/{hexdigest}")
    assert hashlib.sha256(data).hexdigest() == hexdigest, f"blob {descriptor['digest']} does not match its digest"
    assert len(data) == descriptor["size"], f"blob {descriptor['digest']} has the wrong size"
    return data


def validate_image(path: Path) -> dict[str, Any]:
    """Check a tarball or layout end to end; return {'index', 'manifests', 'configs'} for more asserts.

    First every blob is re-hashed (manifests, configs, layers, and each layer's diff_id);
    only then are the JSON documents checked against the schemas.
    """
    files = _Files(path)
    documents: list[tuple[str, Any]] = []
    layout = json.loads(files.read("oci-layout"))
    documents.append(("image-layout-schema.json", layout))
    index = json.loads(files.read("index.json"))
    documents.append(("image-index-schema.json", index))
    manifests, configs = [], []
    pending = list(index["manifests"])
    seen: set[str] = set()
    while pending:
        desc = pending.pop(0)
        if desc["digest"] in seen:
            continue
        seen.add(desc["digest"])
        doc = json.loads(_blob(files, desc))
        if desc["mediaType"].endswith("index.v1+json"):
            documents.append(("image-index-schema.json", doc))
            pending.extend(doc["manifests"])
            continue
        documents.append(("image-manifest-schema.json", doc))
        config_bytes = _blob(files, doc["config"])
        if doc["config"]["mediaType"] != "application/vnd.oci.image.config.v1+json":
            for layer in doc["layers"]:  # an artifact (an SBOM): its blobs, not an image's layers
                _blob(files, layer)
            manifests.append(doc)
            continue
        config = json.loads(config_bytes)
        documents.append(("config-schema.json", config))
        assert len(config["rootfs"]["diff_ids"]) == len(doc["layers"])
        for layer, diff_id in zip(doc["layers"], config["rootfs"]["diff_ids"]):
            data = _blob(files, layer)
            raw = _decompress(data, layer["mediaType"])
            assert "sha256:" + hashlib.sha256(raw).hexdigest() == diff_id, f"layer {layer['digest']}: diff_id mismatch"
        manifests.append(doc)
        configs.append(config)
    if "manifest.json" in files.names():
        for entry in json.loads(files.read("manifest.json")):
            files.read(entry["Config"])
            for layer in entry["Layers"]:
                assert layer in files.names(), f"manifest.json names missing {layer}"
    for name, document in documents:
        check_schema(name, document)
    return {"index": index, "manifests": manifests, "configs": configs}


def _decompress(data: bytes, media_type: str) -> bytes:
    if media_type.endswith("+gzip") or media_type.endswith(".gzip"):
        import gzip

        return gzip.decompress(data)  # the system zlib: an independent reader
    if media_type.endswith("+zstd"):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def tar_bytes(members: dict[str, bytes]) -> bytes:
    """An uncompressed PAX tar of regular files (name -> data), in the order given: the small
    layers and archives tests build by hand."""
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
