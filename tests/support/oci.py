"""validate_image(): re-hash every blob against its descriptor and check the JSON against
the official OCI schemas (../shared/oci-schema). Every sink test ends with it."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "shared" / "oci-schema"


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

    if not SCHEMA_DIR.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"OCI schemas missing at {SCHEMA_DIR}")
        pytest.skip(f"OCI schemas missing at {SCHEMA_DIR}")
    registry: Registry = Registry()
    schemas = {}
    for path in SCHEMA_DIR.glob("*.json"):
        contents = _strip_ids(json.loads(path.read_text()))
        contents.pop("id", None)
        schemas[path.name] = contents
        registry = registry.with_resource(path.name, Resource.from_contents(contents, default_specification=DRAFT4))
    return jsonschema.Draft4Validator(schemas[name], registry=registry)


def check_schema(name: str, document: Any) -> None:
    errors = sorted(_validator(name).iter_errors(document), key=str)
    assert not errors, f"{name}: " + "; ".join(e.message for e in errors)


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
    data = files.read(f"blobs/{algo}/{hexdigest}")
    assert hashlib.sha256(data).hexdigest() == hexdigest, f"blob {descriptor['digest']} does not match its digest"
    assert len(data) == descriptor["size"], f"blob {descriptor['digest']} has the wrong size"
    return data


def validate_image(path: Path) -> dict[str, Any]:
    """Check a tarball or layout end to end; return {'index', 'manifests', 'configs'} for more asserts."""
    files = _Files(path)
    layout = json.loads(files.read("oci-layout"))
    check_schema("image-layout-schema.json", layout)
    index = json.loads(files.read("index.json"))
    check_schema("image-index-schema.json", index)
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
            check_schema("image-index-schema.json", doc)
            pending.extend(doc["manifests"])
            continue
        check_schema("image-manifest-schema.json", doc)
        config = json.loads(_blob(files, doc["config"]))
        check_schema("config-schema.json", config)
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
    return {"index": index, "manifests": manifests, "configs": configs}


def _decompress(data: bytes, media_type: str) -> bytes:
    if media_type.endswith("+gzip") or media_type.endswith(".gzip"):
        import gzip

        return gzip.decompress(data)  # the system zlib: an independent reader
    if media_type.endswith("+zstd"):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data
