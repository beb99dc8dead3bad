"""An OCI image layout directory (image-spec image-layout.md): oci-layout, index.json, blobs/."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from lamina.image import Built, images_of, json_blobs, top_descriptor
from lamina.model import Descriptor, Digest, Reference, canonical, mediatypes
from lamina.sinks.atomic import atomic_dir
from lamina.sinks.naming import index_for
from lamina.store import BlobStore

# (manifest descriptor, manifest bytes, every blob it needs including itself)
Extra = tuple[Descriptor, bytes, dict[Digest, bytes]]

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
    dst.chmod(0o644)  # fixed modes, whatever the umask


def write_layout(built: Built, store: BlobStore, path: Path, tags: Sequence[Reference],
                 extras: Sequence[Extra] = ()) -> None:
    """``extras``: more top-level manifests (attached SBOMs) with the blobs they need."""
    for data in json_blobs(built).values():
        store.put_bytes(data)
    for _, _, blobs in extras:
        for data in blobs.values():
            store.put_bytes(data)
    with atomic_dir(path) as tmp:
        blobs = tmp / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        for digest in sorted({*blob_digests(built), *(d for _, _, b in extras for d in b)}):
            _place(store.path(digest), blobs / digest.hex)
        (tmp / "oci-layout").write_bytes(OCI_LAYOUT)
        (tmp / "index.json").write_bytes(index_for(top_descriptor(built), tags, [d for d, _, _ in extras]).to_bytes())
        for path in (tmp / "oci-layout", tmp / "index.json"):
            path.chmod(0o644)
        for directory in (tmp / "blobs", blobs):
            directory.chmod(0o755)
