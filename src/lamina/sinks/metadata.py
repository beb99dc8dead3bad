"""The --metadata-file: what a build system needs to depend on lamina's outputs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from lamina.image import Built, Image, ImageIndex
from lamina.model import Digest, Reference


SCHEMA_VERSION = 1  # docs/metadata.schema.json describes this shape; bump it when the shape changes


def metadata(built: Built, tags: Sequence[Reference], sources: Mapping[Digest, str] | None = None) -> dict[str, object]:
    """One shape for one platform or several: the digest a build prints (the manifest's, or
    the index's), and one record per platform.

    ``sources``: where each layer came from (built, local cache, cache repo, base), recorded
    per layer as ``source``, so CI can see that a warm runner did no compression work."""
    images = built.images if isinstance(built, ImageIndex) else (built,)
    return {
        "schema_version": SCHEMA_VERSION,
        "digest": str(built.digest),
        "media_type": built.descriptor.media_type if isinstance(built, ImageIndex) else built.manifest_descriptor.media_type,
        "tags": [str(t) for t in tags],
        "platforms": [_image(image, tags, sources or {}) for image in images],
    }


def _image(image: Image, tags: Sequence[Reference], sources: Mapping[Digest, str]) -> dict[str, object]:
    return {
        "manifest_digest": str(image.manifest_descriptor.digest),
        "config_digest": str(image.config_descriptor.digest),
        "image_id": str(image.config_descriptor.digest),
        "platform": str(image.platform),
        "tags": [str(t) for t in tags],
        "layers": [
            {
                "digest": str(layer.descriptor.digest),
                "diff_id": str(layer.diff_id),
                "size": layer.descriptor.size,
                **({"uncompressed_size": layer.uncompressed_size} if layer.uncompressed_size is not None else {}),
                "media_type": layer.descriptor.media_type,
                "created_by": layer.created_by,
                **({"source": sources[layer.descriptor.digest]} if layer.descriptor.digest in sources else {}),
            }
            for layer in image.layers
        ],
    }


def metadata_bytes(image: Built, tags: Sequence[Reference], *, pushed: str | None = None,
                   sources: Mapping[Digest, str] | None = None, fingerprint: str | None = None) -> bytes:
    """The --metadata-file's contents (the caller stages and commits it with the other outputs).
    ``fingerprint``: the inputs' (lamina.uptodate), which says whether the outputs are up to date."""
    record = metadata(image, tags, sources)
    if pushed:
        record["pushed"] = pushed
    if fingerprint:
        record["inputs_fingerprint"] = fingerprint
    return json.dumps(record, indent=2).encode() + b"\n"


def write_pushed(path: Path, reference: str) -> None:
    """``lamina push --metadata-file``: the pushed reference and its digest."""
    from lamina.sinks.atomic import atomic_file

    record = {"pushed": reference, "digest": reference.split("@")[1]}
    with atomic_file(path) as out:
        out.write(json.dumps(record, indent=2).encode() + b"\n")
