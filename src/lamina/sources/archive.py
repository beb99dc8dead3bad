"""Read stored images: OCI layouts (directory or tar) and docker-archive tarballs.

Covers what docker save (20.10's ``<id>/layer.tar`` and >= 25's OCI-plus-manifest.json),
skopeo, podman, buildah, umoci and lamina write. Blobs are verified against their digest as
they are read, so a corrupted archive is an error naming the blob, never a wrong image.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from lamina.errors import DigestMismatch, ImageError
from lamina.model import Descriptor, Digest, Platform, mediatypes

_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json", "application/vnd.docker.distribution.manifest.v1+prettyjws")
_FOREIGN = ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")


ARTIFACT_TYPE = "org.opencontainers.image.artifactType"  # marks artifacts lamina attaches in index.json


class _Verifying(io.RawIOBase):
    """Passes bytes through and checks their digest and size at end of stream."""

    def __init__(self, raw: BinaryIO, digest: Digest, size: int | None, name: str) -> None:
        self._raw, self._digest, self._size, self._name = raw, digest, size, name
        self._hash = hashlib.sha256()
        self._seen = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._hash.update(data)
        self._seen += n
        if n == 0 and not self._done:
            self._done = True
            if self._hash.hexdigest() != self._digest.hex or (self._size is not None and self._seen != self._size):
                raise DigestMismatch(f"blob {self._digest} in {self._name}: content does not match its digest")
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


class _Slice(io.RawIOBase):
    """``size`` bytes of a file from its current position: one member of an uncompressed tar."""

    def __init__(self, raw: BinaryIO, size: int) -> None:
        self._raw, self._left = raw, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(min(len(buffer), self._left))
        self._left -= len(data)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


def verifying(raw: BinaryIO, digest: Digest, size: int | None, name: str) -> BinaryIO:
    return io.BufferedReader(_Verifying(raw, digest, size, name), 1 << 20)  # type: ignore[return-value]


@attrs.define
class ImageSource:
    """File access to one stored archive: a directory or a tar file, opened once."""

    name: str
    _dir: Path | None = None
    _tar: tarfile.TarFile | None = None
    _members: dict[str, tarfile.TarInfo] | None = None  # by name without a leading "./"

    @classmethod
    def open(cls, path: Path) -> ImageSource:
        if path.is_dir():
            return cls(str(path), dir=path)
        try:
            return cls(str(path), tar=tarfile.open(path, "r:"))
        except FileNotFoundError:
            raise ImageError(f"{str(path)!r}: no such file or directory") from None
        except IsADirectoryError:
            raise ImageError(f"{str(path)!r}: is a directory") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ImageError(f"{str(path)!r}: not an image tarball or layout directory ({exc})") from None

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _member(self, name: str) -> tarfile.TarInfo:
        """Archives made with ``tar -C dir .`` name members ``./index.json``: accept both."""
        assert self._tar is not None
        if self._members is None:
            self._members = {m.name.removeprefix("./"): m for m in self._tar.getmembers()}
        return self._members[name.removeprefix("./")]

    def has(self, name: str) -> bool:
        if self._dir is not None:
            return (self._dir / name).is_file()
        try:
            return self._member(name).isfile()
        except KeyError:
            return False

    def size(self, name: str) -> int:
        if self._dir is not None:
            return (self._dir / name).stat().st_size
        return self._member(name).size

    def open_file(self, name: str) -> BinaryIO:
        """A fresh reader each time (safe to use from several threads at once)."""
        try:
            if self._dir is not None:
                return open(self._dir / name, "rb")
            assert self._tar is not None
            member = self._member(name)
            if not member.isfile() or member.sparse:
                raise KeyError(name)
            raw = open(self._tar.name, "rb")  # type: ignore[arg-type]
            raw.seek(member.offset_data)
            return io.BufferedReader(_Slice(raw, member.size), 1 << 20)  # type: ignore[return-value]
        except (KeyError, FileNotFoundError):
            raise ImageError(f"{self.name}: missing {name!r}") from None
        except (tarfile.TarError, OSError) as exc:
            raise ImageError(f"{self.name}: cannot read {name!r} ({exc})") from None

    def read_json(self, name: str, data: bytes | None = None) -> Any:
        if data is None:
            with self.open_file(name) as f:
                data = f.read()
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ImageError(f"{self.name}: {name} is not valid JSON ({exc})") from None

    def read_blob(self, descriptor: Descriptor) -> bytes:
        name = f"blobs/sha256/{descriptor.digest.hex}"
        with verifying(self.open_file(name), descriptor.digest, descriptor.size, self.name) as f:
            return f.read()


@attrs.frozen
class StoredLayer:
    """A layer as stored: its path in the archive, and what the manifest says of it.

    ``media_type`` and ``digest`` are None for docker-archive layers, which carry neither:
    lamina then detects the compression by magic bytes and computes the digest as it reads.
    """

    path: str
    size: int
    diff_id: Digest | None
    media_type: str | None = None
    digest: Digest | None = None
    annotations: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class StoredImage:
    """One single-platform image read from a source."""

    names: tuple[str, ...]
    manifest_descriptor: Descriptor | None
    config_bytes: bytes
    config: dict[str, Any]
    layers: tuple[StoredLayer, ...]

    @property
    def config_digest(self) -> Digest:
        return Digest.of_bytes(self.config_bytes)

    @property
    def platform(self) -> Platform:
        return Platform(self.config.get("os", ""), self.config.get("architecture", ""), self.config.get("variant", ""))


@attrs.frozen
class Entry:
    """A top-level entry of an archive: an index.json descriptor or a manifest.json record."""

    names: tuple[str, ...]
    descriptor: Descriptor | None = None
    docker: dict[str, Any] | None = None

    def describe(self) -> str:
        return ", ".join(self.names) or (str(self.descriptor.digest) if self.descriptor else "(unnamed)")


def entries(source: ImageSource) -> list[Entry]:
    """Top-level images of an archive: index.json (OCI) first, else manifest.json (docker)."""
    if source.has("index.json"):
        index = source.read_json("index.json")
        out = []
        for raw in _list(index, "manifests", source, "index.json"):
            desc = _descriptor(raw, source, "index.json")
            if any(k == ARTIFACT_TYPE for k, _ in desc.annotations):
                continue  # an attached artifact (an SBOM), not an image
            names = tuple(dict.fromkeys(
                v for k, v in desc.annotations if k in (mediatypes.REF_NAME, mediatypes.CONTAINERD_IMAGE_NAME)
            ))
            out.append(Entry(names, descriptor=desc))
        return out
    if source.has("manifest.json"):
        return [Entry(tuple(e.get("RepoTags") or ()), docker=e) for e in _list(source.read_json("manifest.json"), None, source, "manifest.json")]
    raise ImageError(f"{source.name}: not an image archive (no index.json or manifest.json)")


def _list(doc: Any, key: str | None, source: ImageSource, what: str) -> list[Any]:
    value = doc.get(key) if key and isinstance(doc, dict) else doc
    if not isinstance(value, list):
        raise ImageError(f"{source.name}: {what} is not an image index")
    return value


def _descriptor(raw: Any, source: ImageSource, what: str) -> Descriptor:
    try:
        return Descriptor.from_json(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ImageError(f"{source.name}: bad descriptor in {what} ({exc})") from None


def is_index(desc: Descriptor) -> bool:
    return desc.media_type in mediatypes.INDEX_TYPES


def index_children(source: ImageSource, desc: Descriptor) -> list[Descriptor]:
    doc = source.read_json(str(desc.digest), source.read_blob(desc))
    return [_descriptor(m, source, f"index {desc.digest}") for m in _list(doc, "manifests", source, f"index {desc.digest}")]


def load_manifest(source: ImageSource, desc: Descriptor, names: tuple[str, ...] = ()) -> StoredImage:
    if desc.media_type in _SCHEMA1:
        raise ImageError(f"{source.name}: manifest {desc.digest} is Docker schema 1, which lamina does not read")
    if desc.media_type not in mediatypes.MANIFEST_TYPES:
        raise ImageError(f"{source.name}: unsupported manifest media type {desc.media_type!r}")
    manifest = source.read_json(str(desc.digest), source.read_blob(desc))
    try:
        config_desc = Descriptor.from_json(manifest["config"])
        layer_descs = [Descriptor.from_json(d) for d in manifest.get("layers") or []]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ImageError(f"{source.name}: manifest {desc.digest} is malformed ({exc})") from None
    config_bytes = source.read_blob(config_desc)
    config = source.read_json(f"config {config_desc.digest}", config_bytes)
    diff_ids = _diff_ids(config, len(layer_descs), source)
    layers = []
    for layer, diff_id in zip(layer_descs, diff_ids):
        if layer.media_type in _FOREIGN:
            raise ImageError(f"{source.name}: layer {layer.digest} is a foreign layer ({layer.media_type}), which lamina does not copy")
        if layer.media_type not in mediatypes.LAYER_TYPES:
            raise ImageError(f"{source.name}: layer {layer.digest} has unsupported media type {layer.media_type!r}")
        path = f"blobs/sha256/{layer.digest.hex}"
        if not source.has(path):
            raise ImageError(f"{source.name}: manifest {desc.digest} points at missing blob {layer.digest}")
        layers.append(StoredLayer(path, layer.size, diff_id, layer.media_type, layer.digest, layer.annotations))
    return StoredImage(names, desc, config_bytes, config, tuple(layers))


def load_docker(source: ImageSource, entry: dict[str, Any], names: tuple[str, ...] = ()) -> StoredImage:
    try:
        config_name = entry["Config"]
        paths = list(entry.get("Layers") or [])
    except (KeyError, TypeError) as exc:
        raise ImageError(f"{source.name}: manifest.json entry is malformed ({exc})") from None
    with source.open_file(config_name) as f:
        config_bytes = f.read()
    config = source.read_json(config_name, config_bytes)
    diff_ids = _diff_ids(config, len(paths), source)
    layers = []
    for path, diff_id in zip(paths, diff_ids):
        if not source.has(path):
            raise ImageError(f"{source.name}: manifest.json points at missing layer {path!r}")
        layers.append(StoredLayer(path, source.size(path), diff_id))
    return StoredImage(names, None, config_bytes, config, tuple(layers))


def _diff_ids(config: Any, count: int, source: ImageSource) -> list[Digest]:
    try:
        diff_ids = [Digest.parse(d) for d in config["rootfs"]["diff_ids"]]
    except (KeyError, TypeError) as exc:
        raise ImageError(f"{source.name}: image config has no rootfs.diff_ids ({exc})") from None
    except Exception as exc:  # UsageError from Digest.parse: a malformed digest in someone else's file
        raise ImageError(f"{source.name}: image config has a bad diff_id ({exc})") from None
    if len(diff_ids) != count:
        raise ImageError(f"{source.name}: config lists {len(diff_ids)} diff_ids for {count} layers")
    return diff_ids


def open_layer(source: ImageSource, layer: StoredLayer) -> BinaryIO:
    """The layer's stored bytes, verified against its digest when the manifest names one."""
    raw = source.open_file(layer.path)
    if layer.digest is None:
        return io.BufferedReader(raw, 1 << 20)  # type: ignore[arg-type]
    return verifying(raw, layer.digest, layer.size, source.name)


def images(source: ImageSource) -> Iterator[StoredImage]:
    """Every image the source holds, every platform of every index (for inspect)."""
    for entry in entries(source):
        if entry.docker is not None:
            yield load_docker(source, entry.docker, entry.names)
            continue
        assert entry.descriptor is not None
        pending = [entry.descriptor]
        while pending:
            desc = pending.pop(0)
            if is_index(desc):
                pending.extend(index_children(source, desc))
            else:
                yield load_manifest(source, desc, entry.names)
