"""How tags are written into index.json, manifest.json and repositories (as Docker >= 25 saves)."""

from __future__ import annotations

from collections.abc import Sequence

from lamina.model import Descriptor, Reference, mediatypes
from lamina.model.manifest import Index


def index_for(manifest: Descriptor, tags: Sequence[Reference]) -> Index:
    """index.json: one entry per tag; ref.name is the bare tag, as docker and umoci expect."""
    plain = Descriptor(manifest.media_type, manifest.digest, manifest.size)
    if not tags:
        return Index((plain,))
    return Index(tuple(
        Descriptor(
            plain.media_type, plain.digest, plain.size,
            annotations={mediatypes.CONTAINERD_IMAGE_NAME: str(tag), mediatypes.REF_NAME: tag.tag},
        )
        for tag in tags
    ))


def repo_tag(tag: Reference) -> str:
    return f"{tag.familiar_name}:{tag.tag}"
