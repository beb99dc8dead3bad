"""The --metadata-file: what a build system needs to depend on lamina's outputs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from lamina.image import Image
from lamina.model import Reference
from lamina.sinks.atomic import atomic_file


def metadata(image: Image, tags: Sequence[Reference]) -> dict[str, object]:
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
                "uncompressed_size": layer.uncompressed_size,
                "media_type": layer.descriptor.media_type,
                "created_by": layer.created_by,
            }
            for layer in image.layers
        ],
    }


def write_metadata(image: Image, tags: Sequence[Reference], path: Path) -> None:
    with atomic_file(path) as out:
        out.write(json.dumps(metadata(image, tags), indent=2).encode() + b"\n")
