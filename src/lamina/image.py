"""Compose finished layers, a base's config and the requested changes into an image.

Pure values, no I/O. Data flows one way: layers → config → config bytes → manifest →
manifest bytes. "FROM scratch" is simply no base. Inheritance follows Docker: Env, Cmd,
Entrypoint, User, WorkingDir, Labels, ExposedPorts, Volumes, StopSignal and history come
from the base; changes override them; an entrypoint set without a cmd clears the base's
cmd; env and labels merge by key; exposed ports are a union.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO, Protocol

import attrs

from lamina.model import ConfigFile, ContainerConfig, Descriptor, Digest, HistoryEntry, Layer, Manifest, Platform
from lamina.model import mediatypes
from lamina.model.config import rfc3339

# What `docker build` (BuildKit) puts in an image's Env when nothing sets PATH.
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@attrs.frozen
class ConfigChanges:
    """What flags and the spec say about the config; None means "inherit from the base"."""

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    user: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    expose: tuple[str, ...] = ()
    stop_signal: str | None = None


class Blobs(Protocol):
    """Where an image's layer blobs are read from: lamina's blob store for a built image, the
    archive or layout for a stored one. ``open`` verifies digest and size as bytes stream."""

    def open(self, descriptor: Descriptor) -> BinaryIO: ...


@attrs.frozen
class Base:
    """What a base image contributes: its config, its (imported) layers, and what names it."""

    config: ConfigFile
    layers: tuple[Layer, ...]
    name: str = ""  # a reference (registry, or the archive's own tag), never a host path
    digest: Digest | None = None  # its manifest digest, where it has a real manifest


@attrs.frozen
class Image:
    """The one image value: a finished single-platform image, built or read. Every digest and
    size is known; ``blobs`` opens the layers (the config and manifest are held as bytes)."""

    platform: Platform
    layers: tuple[Layer, ...]
    config: ConfigFile
    config_bytes: bytes
    config_descriptor: Descriptor
    manifest_bytes: bytes
    manifest_descriptor: Descriptor
    blobs: Blobs | None = attrs.field(default=None, eq=False, repr=False)
    names: tuple[str, ...] = ()  # the tags an archive gives it
    # A docker-archive image has no manifest: lamina derived this one, so its digest is
    # nobody else's (never used as org.opencontainers.image.base.digest).
    derived_manifest: bool = False

    @property
    def digest(self) -> Digest:
        return self.manifest_descriptor.digest

    def describe(self) -> str:
        return ", ".join(self.names) or str(self.digest)


def merge_env(base: Sequence[str], updates: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """Docker's ENV semantics: a key set again replaces its value in place; new keys append."""
    env = dict(item.partition("=")[::2] for item in base)
    if "PATH" not in env:
        env = {"PATH": DEFAULT_PATH.split("=", 1)[1], **env}
    for key, value in updates:
        env[key] = value
    return tuple(f"{k}={v}" for k, v in env.items())


def _container_config(base: ContainerConfig, changes: ConfigChanges) -> ContainerConfig:
    if changes.cmd is not None:
        cmd = changes.cmd
    elif changes.entrypoint is not None:
        cmd = None  # Dockerfile: ENTRYPOINT without CMD resets the base's CMD
    else:
        cmd = base.cmd
    return attrs.evolve(
        base,
        user=base.user if changes.user is None else changes.user,
        exposed_ports=tuple(dict.fromkeys((*base.exposed_ports, *changes.expose))),
        env=merge_env(base.env, changes.env),
        entrypoint=base.entrypoint if changes.entrypoint is None else changes.entrypoint,
        cmd=cmd,
        working_dir=base.working_dir if changes.workdir is None else changes.workdir,
        labels=tuple({**dict(base.labels), **dict(changes.labels)}.items()),
        stop_signal=base.stop_signal if changes.stop_signal is None else changes.stop_signal,
    )


BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"


def base_annotations(base: Base | None) -> tuple[tuple[str, str], ...]:
    """image-spec annotations.md: what the image was built on, where that is known."""
    if base is None:
        return ()
    out = [(BASE_NAME, base.name)] if base.name else []
    if base.digest is not None:
        out.append((BASE_DIGEST, str(base.digest)))
    return tuple(out)


def compose(layers: Sequence[Layer], changes: ConfigChanges, *, platform: Platform, epoch: int,
            base: Base | None = None, blobs: Blobs | None = None) -> Image:
    created = rfc3339(epoch)
    base_config = base.config.config if base is not None else ContainerConfig()
    base_layers = base.layers if base is not None else ()
    all_layers = (*base_layers, *layers)
    history = base.config.history if base is not None else ()
    # History entries name layers in order: a base that lacks some (a hand-made archive) gets
    # blank ones, so that the new layers' entries do not slide onto the base's layers.
    history += tuple(HistoryEntry(created="", created_by="") for _ in range(
        len(base_layers) - (len(base.config.layer_history()) if base is not None else 0)))
    history += tuple(HistoryEntry(created=created, created_by=layer.created_by) for layer in layers)
    config = ConfigFile(
        platform=platform,
        created=created,
        config=_container_config(base_config, changes),
        diff_ids=tuple(layer.diff_id for layer in all_layers),
        history=history,
    )
    config_bytes = config.to_bytes()
    config_descriptor = Descriptor(mediatypes.OCI_CONFIG, Digest.of_bytes(config_bytes), len(config_bytes))
    manifest = Manifest(
        config=config_descriptor,
        layers=tuple(layer.descriptor for layer in all_layers),
        annotations=tuple({**dict(base_annotations(base)), **dict(changes.annotations)}.items()),
    )
    manifest_bytes = manifest.to_bytes()
    manifest_descriptor = Descriptor(
        mediatypes.OCI_MANIFEST, Digest.of_bytes(manifest_bytes), len(manifest_bytes), platform=platform
    )
    return Image(platform, all_layers, config, config_bytes, config_descriptor, manifest_bytes, manifest_descriptor,
                 blobs=blobs)


@attrs.frozen
class ImageIndex:
    """Several single-platform images under one OCI index (image-spec image-index.md)."""

    images: tuple[Image, ...]
    index_bytes: bytes
    descriptor: Descriptor

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest


def compose_index(images: Sequence[Image]) -> ImageIndex:
    from lamina.model.manifest import Index

    index_bytes = Index(tuple(image.manifest_descriptor for image in images)).to_bytes()
    descriptor = Descriptor(mediatypes.OCI_INDEX, Digest.of_bytes(index_bytes), len(index_bytes))
    return ImageIndex(tuple(images), index_bytes, descriptor)


Built = Image | ImageIndex


def top_descriptor(built: Built) -> Descriptor:
    """What index.json points at: the manifest of a single image, or the index."""
    if isinstance(built, ImageIndex):
        return built.descriptor
    return Descriptor(built.manifest_descriptor.media_type, built.manifest_descriptor.digest, built.manifest_descriptor.size)


def images_of(built: Built) -> tuple[Image, ...]:
    return built.images if isinstance(built, ImageIndex) else (built,)


def json_blobs(built: Built) -> dict[Digest, bytes]:
    """The blobs lamina holds as bytes: configs, manifests and the index."""
    blobs: dict[Digest, bytes] = {}
    for image in images_of(built):
        blobs[image.config_descriptor.digest] = image.config_bytes
        blobs[image.manifest_descriptor.digest] = image.manifest_bytes
    if isinstance(built, ImageIndex):
        blobs[built.descriptor.digest] = built.index_bytes
    return blobs
