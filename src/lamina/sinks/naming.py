"""How tags are written into index.json, manifest.json and repositories (as Docker >= 25 saves)."""

from __future__ import annotations

from collections.abc import Sequence

from lamina.model import Descriptor, Reference, mediatypes
from lamina.model.manifest import Index


def index_for(top: Descriptor, tags: Sequence[Reference], extras: Sequence[Descriptor] = ()) -> Index:
    """index.json: one entry per tag (ref.name is the bare tag, as docker and umoci expect),
    then any attached artifacts."""
    if not tags:
        return Index((top, *extras))
    return Index((*(
        Descriptor(
            top.media_type, top.digest, top.size,
            annotations={mediatypes.CONTAINERD_IMAGE_NAME: str(tag), mediatypes.REF_NAME: tag.tag},
        )
        for tag in tags
    ), *extras))


def repo_tag(tag: Reference) -> str:
    return f"{tag.familiar_name}:{tag.tag}"
