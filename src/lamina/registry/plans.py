"""What to push: a PushPlan from a fresh build (the blob store) or from a stored image."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from lamina.errors import ImageError
from lamina.image import Attachment, Built, ImageIndex, images_of, json_blobs
from lamina.model import Descriptor, Digest
from lamina.registry.pull import descriptors, document
from lamina.registry.push import PushPlan
from lamina.sources.archive import ImageSource, entries, index_children, is_index, verifying
from lamina.sinks.blobs import layer_blobs


def _plain(desc: Descriptor) -> Descriptor:
    return Descriptor(desc.media_type, desc.digest, desc.size)


def publish(push: Callable[..., Any], built: Built, extras: Sequence[Attachment]) -> str:
    """Push a built image (or index), then the artifacts attached to it (SBOMs, provenance:
    after the image they refer to); ``push`` takes a PushPlan (and ``digest=`` for an
    artifact) as registry.api.push does. Returns the image's pushed reference."""
    from lamina.registry.push import artifact_plan

    pushed = str(push(from_build(built)).reference)
    for desc, manifest, blobs in extras:
        push(artifact_plan(desc, manifest, blobs), digest=desc.digest)
    return pushed


def from_build(built: Built) -> PushPlan:
    """Every blob and manifest of an image (or index) as lamina holds it: JSON as bytes,
    layers through each image's blobs."""
    jsons = json_blobs(built)
    layers = layer_blobs(built)
    blobs: dict[Digest, Descriptor] = {}
    manifests = []
    for image in images_of(built):
        blobs[image.config_descriptor.digest] = image.config_descriptor
        for layer in image.layers:
            blobs[layer.descriptor.digest] = layer.descriptor
        manifests.append((_plain(image.manifest_descriptor), image.manifest_bytes))
    if isinstance(built, ImageIndex):
        manifests.append((built.descriptor, built.index_bytes))

    def open_raw(digest: Digest) -> BinaryIO:
        if digest in jsons:
            return io.BytesIO(jsons[digest])
        descriptor, where = layers[digest]
        return where.open(descriptor)

    def open_blob(digest: Digest) -> BinaryIO:
        return verifying(open_raw(digest), digest, blobs[digest].size, "the build's blob store")

    return PushPlan(tuple(blobs.values()), tuple(manifests), open_blob, verifies=True, open_unverified=open_raw)


def from_archive(source: ImageSource) -> PushPlan:
    """Every platform of the one image a lamina tarball or OCI layout holds."""
    tops = {e.descriptor.digest: e.descriptor for e in entries(source) if e.descriptor is not None}
    if not tops:
        raise ImageError(f"{source.name}: lamina push needs an OCI layout or a tarball with index.json "
                         "(lamina, docker save >= 25, skopeo oci-archive:)")
    if len(tops) > 1:
        raise ImageError(f"{source.name}: holds {len(tops)} images; push them one at a time")
    top = next(iter(tops.values()))
    blobs: dict[Digest, Descriptor] = {}
    manifests: list[tuple[Descriptor, bytes]] = []
    for desc in ([*index_children(source, top), top] if is_index(top) else [top]):
        data = source.read_blob(desc)
        if not is_index(desc):
            what = f"{source.name}: manifest {desc.digest}"
            manifest = document(data, what)
            if "config" not in manifest:
                raise ImageError(f"{what} has no config")
            for child in [*descriptors(manifest, "config", what), *descriptors(manifest, "layers", what)]:
                if not source.has(f"blobs/sha256/{child.digest.hex}"):
                    raise ImageError(f"{source.name}: manifest {desc.digest} points at missing blob {child.digest}")
                blobs[child.digest] = _plain(child)
        manifests.append((_plain(desc), data))

    def open_blob(digest: Digest) -> BinaryIO:
        size = blobs[digest].size if digest in blobs else None
        return verifying(source.open_file(f"blobs/sha256/{digest.hex}"), digest, size, source.name)

    return PushPlan(tuple(blobs.values()), tuple(manifests), open_blob, verifies=True,
                    open_unverified=lambda digest: source.open_file(f"blobs/sha256/{digest.hex}"))


def open_source(path: Path) -> ImageSource:
    return ImageSource.open(path)
