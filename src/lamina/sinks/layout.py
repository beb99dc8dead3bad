"""An OCI image layout directory (image-spec image-layout.md): oci-layout, index.json, blobs/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from lamina.image import Image
from lamina.model import Digest, Reference, canonical, mediatypes
from lamina.sinks.atomic import atomic_dir
from lamina.sinks.naming import index_for
from lamina.store import BlobStore

OCI_LAYOUT = canonical.dumps({"imageLayoutVersion": mediatypes.OCI_LAYOUT_VERSION})


def blob_digests(image: Image) -> list[Digest]:
    """Every blob an image needs, each once, in a fixed order."""
    seen = {layer.descriptor.digest for layer in image.layers}
    seen |= {image.config_descriptor.digest, image.manifest_descriptor.digest}
    return sorted(seen)


def _place(src: Path, dst: Path) -> None:
    """Hardlink when the store is on the same filesystem, copy otherwise."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_layout(image: Image, store: BlobStore, path: Path, tags: Sequence[Reference]) -> None:
    store.put_bytes(image.config_bytes)
    store.put_bytes(image.manifest_bytes)
    with atomic_dir(path) as tmp:
        blobs = tmp / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        for digest in blob_digests(image):
            _place(store.path(digest), blobs / digest.hex)
        (tmp / "oci-layout").write_bytes(OCI_LAYOUT)
        (tmp / "index.json").write_bytes(index_for(image.manifest_descriptor, tags).to_bytes())
