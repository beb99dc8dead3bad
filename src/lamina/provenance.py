"""SLSA provenance: an in-toto Statement v1 whose predicate is SLSA Provenance v1.

What the build was asked (``buildDefinition.externalParameters``): the spec file as written
(parsed TOML, and its sha256), the command-line flags as given, and the platforms built.
What it consumed (``resolvedDependencies``): every input with the digest lamina pins it by,
the same values ``lamina lock`` writes, under algorithm names that say what was hashed:

``sha256``
    a file (``--add`` file, ``--tarball``, an image archive): the sha256 of its bytes.
``lamina-tree-sha256``
    a directory given to ``--add``: sha256 over one line per entry, walked in sorted order,
    paths relative to the directory: ``d PATH MODE``, ``f PATH MODE SHA256``,
    ``l PATH -> TARGET``, ``o PATH MODE`` (FIFOs, devices: kind and mode only), each line
    ending in a newline; MODE in octal. It changes exactly when what ``--add`` copies changes.
``lamina-oci-index-sha256``
    an OCI image layout directory: the sha256 of its ``index.json``, which names every
    manifest by digest (blobs are verified against those digests as they are read).

Images used as a base or by ``--copy-from`` are listed once more by the digest of the
manifest actually used for each platform (``mediaType`` set, ``annotations.platform``),
unless lamina derived that manifest itself (a docker-archive has none).

Who and when (``runDetails``): builder id ``https://lamina.invalid/lamina@VERSION``, and
start and finish times both from SOURCE_DATE_EPOCH, never the clock: the same inputs give
the same statement, byte for byte (canonical JSON), so it can sit inside a reproducible
tarball or layout as an OCI artifact whose subject is the image.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path
from typing import Any

import attrs

from lamina.version import __version__
from lamina.errors import InputError
from lamina.image import Built, Image, images_of, top_descriptor
from lamina.limits import MAX_SPEC, read_limited
from lamina.model import Descriptor, Digest, canonical, mediatypes
from lamina.model.config import rfc3339
from lamina.sources.archive import ARTIFACT_TYPE

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
MEDIA_TYPE = "application/vnd.in-toto+json"
BUILD_TYPE = "https://lamina.invalid/provenance/build/v1"
BUILDER_ID = f"https://lamina.invalid/lamina@{__version__}"
TREE = "lamina-tree-sha256"
LAYOUT = "lamina-oci-index-sha256"
_EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
_EMPTY = b"{}"


@attrs.frozen
class Invocation:
    """What the user asked for, as the CLI parsed it (flags: given options only)."""

    spec_file: Path | None = None
    flags: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class UsedImage:
    """An image a build read (its base, or one ``--copy-from`` names), for one platform."""

    key: str  # as written in the spec or on the command line
    image: Image


def algorithm_of(path: str) -> str:
    """The name of what ``pins.digest_of`` hashes for this path (see the module docstring)."""
    if os.path.isdir(path):
        return LAYOUT if os.path.isfile(os.path.join(path, "index.json")) else TREE
    return "sha256"


def _pinned(name: str, path: str) -> dict[str, Any]:
    from lamina.pins import digest_of

    return {"name": name, "digest": {algorithm_of(path): digest_of(path)}}


def dependencies(spec: Any, used: list[UsedImage]) -> list[dict[str, Any]]:
    """Every input by its pin, then every image used by its manifest digest; sorted, no repeats."""
    from lamina.essentials import SYSTEM_ZONEINFO, system_bundle
    from lamina.pins import inputs

    found = [_pinned(item.key, item.path) for item in inputs(spec) if item.path is not None]
    essentials = spec.essentials
    if essentials.ca_certs is not None:
        found += [_pinned(p, p) for p in (essentials.ca_certs or (system_bundle(),))]
    if essentials.tzdata is not None:
        source = essentials.tzdata or SYSTEM_ZONEINFO
        found.append(_pinned(source, source))
    for use in used:
        if use.image.derived_manifest:
            continue
        found.append({"name": use.key, "digest": {"sha256": use.image.digest.hex},
                      "mediaType": use.image.manifest_descriptor.media_type,
                      "annotations": {"platform": str(use.image.platform)}})
    unique = {canonical.dumps(d): d for d in found}
    return [unique[k] for k in sorted(unique)]


def _spec_document(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = read_limited(f, MAX_SPEC)
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    return {"path": str(path), "sha256": hashlib.sha256(data).hexdigest(), "content": tomllib.loads(data.decode())}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def subjects(built: Built, name: str) -> list[dict[str, Any]]:
    """The image (an index: it first, then each platform's manifest) by sha256."""
    out = [{"name": name, "digest": {"sha256": built.digest.hex}}]
    images = images_of(built)
    if len(images) > 1:
        out += [{"name": f"{name}#{image.platform}", "digest": {"sha256": image.digest.hex}} for image in images]
    return out


def statement(built: Built, spec: Any, epoch: int, invocation: Invocation, used: list[UsedImage]) -> bytes:
    name = str(spec.tags[0]) if spec.tags else "image"
    external: dict[str, Any] = {
        "flags": _jsonable(invocation.flags),
        "platforms": [str(image.platform) for image in images_of(built)],
    }
    if invocation.spec_file is not None:
        external["spec"] = _spec_document(invocation.spec_file)
    time = rfc3339(epoch)
    doc = {
        "_type": STATEMENT_TYPE,
        "subject": subjects(built, name),
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": {"sourceDateEpoch": epoch},
                "resolvedDependencies": dependencies(spec, used),
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"lamina": __version__}},
                "metadata": {"startedOn": time, "finishedOn": time},
            },
        },
    }
    return canonical.dumps(doc)


def artifact(built: Built, data: bytes) -> tuple[Descriptor, bytes, dict[Digest, bytes]]:
    """An OCI artifact manifest carrying the statement, whose subject is the image (or index)."""
    layer = Descriptor(MEDIA_TYPE, Digest.of_bytes(data), len(data))
    empty = Descriptor(_EMPTY_MEDIA_TYPE, Digest.of_bytes(_EMPTY), len(_EMPTY))
    manifest = canonical.dumps({
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "artifactType": MEDIA_TYPE,
        "config": empty.to_json(),
        "layers": [layer.to_json()],
        "subject": top_descriptor(built).to_json(),
    })
    desc = Descriptor(mediatypes.OCI_MANIFEST, Digest.of_bytes(manifest), len(manifest),
                      annotations={ARTIFACT_TYPE: MEDIA_TYPE})
    return desc, manifest, {layer.digest: data, empty.digest: _EMPTY, desc.digest: manifest}
