"""An OCI image layout directory (image-spec image-layout.md): oci-layout, index.json, blobs/."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from lamina.image import Built, images_of, json_blobs, top_descriptor
from lamina.model import Digest, Reference, canonical, mediatypes
from lamina.sinks.atomic import atomic_dir
from lamina.sinks.naming import index_for
from lamina.store import BlobStore

OCI_LAYOUT = canonical.dumps({"imageLayoutVersion": mediatypes.OCI_LAYOUT_VERSION})


def blob_digests(built: Built) -> list[Digest]:
    """Every blob an image (or index) needs, each once — shared layers too — in a fixed order."""
    seen = set(json_blobs(built))
    for image in images_of(built):
        seen |= {layer.descriptor.digest for layer in image.layers}
    return sorted(seen)


def _place(src: Path, dst: Path) -> None:
    """A copy, made by the kernel: the store's blobs may be hardlinks into the layer cache,
    and nothing a user does to an output may reach the cache."""
    shutil.copyfile(src, dst)


def write_layout(built: Built, store: BlobStore, path: Path, tags: Sequence[Reference]) -> None:
    for data in json_blobs(built).values():
        store.put_bytes(data)
    with atomic_dir(path) as tmp:
        blobs = tmp / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        for digest in blob_digests(built):
            _place(store.path(digest), blobs / digest.hex)
        (tmp / "oci-layout").write_bytes(OCI_LAYOUT)
        (tmp / "index.json").write_bytes(index_for(top_descriptor(built), tags).to_bytes())
