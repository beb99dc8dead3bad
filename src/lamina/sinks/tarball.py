"""The one tarball every loader takes: an OCI layout plus Docker's manifest.json.

As Docker >= 25 ``docker save`` writes it: ``oci-layout``, ``index.json`` and ``blobs/``
for OCI readers (skopeo oci-archive:, podman, containerd), and ``manifest.json`` (plus
``repositories``) pointing at the same blobs for ``docker load`` on Docker 20.10 and
skopeo docker-archive:. Entries are sorted and stamped with the build's epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

from lamina.image import Built, Image, top_descriptor
from lamina.layers import tarformat
from lamina.layers.entries import Entry, Kind
from lamina.model import Reference, canonical
from lamina.sinks.blobs import Extra, held_bytes, layer_blobs, write_blob
from lamina.sinks.layout import OCI_LAYOUT
from lamina.sinks.naming import index_for, repo_tag


def docker_manifest(image: Image, tags: Sequence[Reference]) -> bytes:
    entry = {
        "Config": f"blobs/sha256/{image.config_descriptor.digest.hex}",
        "RepoTags": [repo_tag(t) for t in tags] or None,
        "Layers": [f"blobs/sha256/{layer.descriptor.digest.hex}" for layer in image.layers],
    }
    return canonical.dumps([entry])


def repositories(image: Image, tags: Sequence[Reference]) -> bytes | None:
    if not tags or not image.layers:
        return None
    top = image.layers[-1].descriptor.digest.hex
    repos: dict[str, dict[str, str]] = {}
    for tag in tags:
        repos.setdefault(tag.familiar_name, {})[tag.tag] = top
    return canonical.dumps(repos)


def _write_bytes(out: BinaryIO, name: str, data: bytes, epoch: int) -> None:
    out.write(tarformat.header(Entry(name, Kind.FILE, mode=0o644, mtime=epoch, size=len(data))))
    out.write(data)
    out.write(tarformat.padding(len(data)))


def write_tarball(built: Built, out: BinaryIO, tags: Sequence[Reference], *, epoch: int,
                  docker_image: Image, extras: Sequence[Extra] = ()) -> None:
    """Write the tarball to ``out`` (a staged file, or a pipe for ``-o -``). ``docker_image`` is
    the one manifest.json describes (it can describe one image per tag)."""
    image = docker_image
    for directory in ("blobs", "blobs/sha256"):
        out.write(tarformat.header(Entry(directory, Kind.DIR, mode=0o755, mtime=epoch)))
    held, layers = held_bytes(built, extras), layer_blobs(built)
    for digest in sorted({*layers, *held}):
        name = f"blobs/sha256/{digest.hex}"
        if digest in held:
            _write_bytes(out, name, held[digest], epoch)
            continue
        descriptor, blobs = layers[digest]
        out.write(tarformat.header(Entry(name, Kind.FILE, mode=0o644, mtime=epoch, size=descriptor.size)))
        write_blob(blobs, descriptor, out)
        out.write(tarformat.padding(descriptor.size))
    _write_bytes(out, "index.json", index_for(top_descriptor(built), tags, [d for d, _, _ in extras]).to_bytes(), epoch)
    _write_bytes(out, "manifest.json", docker_manifest(image, tags), epoch)
    _write_bytes(out, "oci-layout", OCI_LAYOUT, epoch)
    repos = repositories(image, tags)
    if repos is not None:
        _write_bytes(out, "repositories", repos, epoch)
    out.write(tarformat.END_OF_ARCHIVE)
