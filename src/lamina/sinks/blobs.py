"""An image's blobs into an output: the one place sinks and push read them.

Sinks take only the image model: JSON blobs (configs, manifests, the index, attached
artifacts) are bytes the image holds; layers come from each image's ``blobs``, which is the
build's store for a built image (copied by the kernel) or the archive it was read from
(verified as it streams), so images built and images read are written the same way.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import BinaryIO

from lamina.image import Blobs, Built, images_of, json_blobs
from lamina.model import Descriptor, Digest
from lamina.store import BlobStore

# (manifest descriptor, manifest bytes, every blob it needs including itself)
Extra = tuple[Descriptor, bytes, dict[Digest, bytes]]


def held_bytes(built: Built, extras: Sequence[Extra] = ()) -> dict[Digest, bytes]:
    """The blobs held as bytes: configs, manifests, the index, and the extras' blobs."""
    held = json_blobs(built)
    for _, _, blobs in extras:
        held.update(blobs)
    return held


def layer_blobs(built: Built) -> dict[Digest, tuple[Descriptor, Blobs]]:
    """Every layer blob of the image(s), once each (shared layers too), with where it is read."""
    found: dict[Digest, tuple[Descriptor, Blobs]] = {}
    for image in images_of(built):
        if image.blobs is None:
            raise ValueError(f"image {image.digest} has no blobs to write")
        for layer in image.layers:
            found.setdefault(layer.descriptor.digest, (layer.descriptor, image.blobs))
    return found


def write_blob(blobs: Blobs, descriptor: Descriptor, out: BinaryIO) -> None:
    """Append one layer blob to ``out``: by the kernel from lamina's store, else streamed."""
    if isinstance(blobs, BlobStore):
        blobs.copy_into(descriptor.digest, out)
        return
    with blobs.open(descriptor) as src:
        shutil.copyfileobj(src, out, 1 << 20)
