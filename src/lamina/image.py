"""Compose finished layers and settings into an image: pure values, no I/O.

Data flows one way: layers → config → config bytes → manifest → manifest bytes.
"FROM scratch" is simply an empty list of base layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from lamina.model import ConfigFile, ContainerConfig, Descriptor, Digest, HistoryEntry, Layer, Manifest, Platform
from lamina.model import mediatypes
from lamina.model.config import rfc3339

# What `docker build` (BuildKit) puts in a scratch image's Env when none is set.
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@attrs.frozen
class Settings:
    """Everything the image config and manifest say besides the layers."""

    platform: Platform
    epoch: int = 0
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    user: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    exposed_ports: tuple[str, ...] = ()
    stop_signal: str = ""


@attrs.frozen
class Image:
    """A finished single-platform image: every blob's bytes and digest are known."""

    platform: Platform
    layers: tuple[Layer, ...]
    config: ConfigFile
    config_bytes: bytes
    config_descriptor: Descriptor
    manifest_bytes: bytes
    manifest_descriptor: Descriptor

    @property
    def digest(self) -> Digest:
        return self.manifest_descriptor.digest


def merge_env(base: Sequence[str], updates: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """Docker's ENV semantics: a key set again replaces its value in place; new keys append."""
    env = dict(item.split("=", 1) if "=" in item else (item, "") for item in base)
    for key, value in updates:
        env[key] = value
    return tuple(f"{k}={v}" for k, v in env.items())


def compose(layers: Sequence[Layer], settings: Settings) -> Image:
    created = rfc3339(settings.epoch)
    env = merge_env([DEFAULT_PATH], settings.env)
    container = ContainerConfig(
        user=settings.user,
        exposed_ports=settings.exposed_ports,
        env=env,
        entrypoint=settings.entrypoint,
        cmd=settings.cmd,
        working_dir=settings.workdir,
        labels=settings.labels,
        stop_signal=settings.stop_signal,
    )
    config = ConfigFile(
        platform=settings.platform,
        created=created,
        config=container,
        diff_ids=tuple(layer.diff_id for layer in layers),
        history=tuple(HistoryEntry(created=created, created_by=layer.created_by) for layer in layers),
    )
    config_bytes = config.to_bytes()
    config_descriptor = Descriptor(mediatypes.OCI_CONFIG, Digest.of_bytes(config_bytes), len(config_bytes))
    manifest = Manifest(
        config=config_descriptor,
        layers=tuple(layer.descriptor for layer in layers),
        annotations=settings.annotations,
    )
    manifest_bytes = manifest.to_bytes()
    manifest_descriptor = Descriptor(
        mediatypes.OCI_MANIFEST, Digest.of_bytes(manifest_bytes), len(manifest_bytes), platform=settings.platform
    )
    return Image(
        platform=settings.platform,
        layers=tuple(layers),
        config=config,
        config_bytes=config_bytes,
        config_descriptor=config_descriptor,
        manifest_bytes=manifest_bytes,
        manifest_descriptor=manifest_descriptor,
    )
