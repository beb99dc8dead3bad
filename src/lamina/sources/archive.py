"""Read an image lamina (or docker save, skopeo, umoci) wrote: a tarball or a layout directory.

Blobs are verified against their digest as they are read, so a corrupted archive is an
error naming the blob, never a silently wrong answer.
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
from lamina.model import Descriptor, Digest, mediatypes


_PATH = "dev.lamina.archive.path"  # where a docker-save layer lives inside its archive


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


@attrs.define
class ImageSource:
    """Blob access to one stored image collection (index.json or manifest.json)."""

    name: str
    _dir: Path | None = None
    _tar: tarfile.TarFile | None = None

    @classmethod
    def open(cls, path: Path) -> ImageSource:
        if path.is_dir():
            return cls(str(path), dir=path)
        try:
            return cls(str(path), tar=tarfile.open(path, "r:"))
        except FileNotFoundError:
            raise ImageError(f"{str(path)!r}: no such file or directory") from None
        except (tarfile.TarError, OSError) as exc:
            raise ImageError(f"{str(path)!r}: not an image tarball or layout directory ({exc})") from None

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has(self, name: str) -> bool:
        if self._dir is not None:
            return (self._dir / name).is_file()
        assert self._tar is not None
        try:
            return self._tar.getmember(name).isfile()
        except KeyError:
            return False

    def open_file(self, name: str) -> BinaryIO:
        try:
            if self._dir is not None:
                return open(self._dir / name, "rb")
            assert self._tar is not None
            member = self._tar.extractfile(name)
            if member is None:
                raise KeyError(name)
            return member  # type: ignore[return-value]
        except (KeyError, FileNotFoundError):
            raise ImageError(f"{self.name}: missing {name!r}") from None

    def read_json(self, name: str) -> Any:
        with self.open_file(name) as f:
            try:
                return json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ImageError(f"{self.name}: {name} is not valid JSON ({exc})") from None

    def open_blob(self, digest: Digest, size: int | None = None) -> BinaryIO:
        raw = self.open_file(f"blobs/sha256/{digest.hex}")
        return io.BufferedReader(_Verifying(raw, digest, size, self.name), 1 << 20)  # type: ignore[return-value]

    def open_layer(self, descriptor: Descriptor) -> BinaryIO:
        for key, value in descriptor.annotations:
            if key == _PATH:
                return self.open_file(value)
        return self.open_blob(descriptor.digest, descriptor.size)

    def read_blob(self, descriptor: Descriptor) -> bytes:
        with self.open_blob(descriptor.digest, descriptor.size) as f:
            return f.read()

    def blob_json(self, descriptor: Descriptor) -> Any:
        try:
            return json.loads(self.read_blob(descriptor))
        except json.JSONDecodeError as exc:
            raise ImageError(f"{self.name}: blob {descriptor.digest} is not valid JSON ({exc})") from None


@attrs.frozen
class StoredImage:
    """One image found in a source: its manifest and config (parsed), and layer descriptors."""

    manifest_descriptor: Descriptor | None
    manifest: dict[str, Any]
    config_descriptor: Descriptor
    config: dict[str, Any]
    layers: tuple[Descriptor, ...]
    names: tuple[str, ...]


def images(source: ImageSource) -> Iterator[StoredImage]:
    """Every image the source holds: via index.json (OCI), else manifest.json (docker save)."""
    if source.has("index.json"):
        index = source.read_json("index.json")
        for entry in index.get("manifests") or []:
            yield from _from_descriptor(source, Descriptor.from_json(entry))
        return
    if source.has("manifest.json"):
        for entry in source.read_json("manifest.json"):
            yield _from_docker(source, entry)
        return
    raise ImageError(f"{source.name}: not an image (no index.json or manifest.json)")


def _from_descriptor(source: ImageSource, desc: Descriptor) -> Iterator[StoredImage]:
    if desc.media_type in mediatypes.INDEX_TYPES:
        nested = source.blob_json(desc)
        for entry in nested.get("manifests") or []:
            yield from _from_descriptor(source, Descriptor.from_json(entry))
        return
    if desc.media_type not in mediatypes.MANIFEST_TYPES:
        raise ImageError(f"{source.name}: unsupported manifest media type {desc.media_type!r}")
    manifest = source.blob_json(desc)
    config_desc = Descriptor.from_json(manifest["config"])
    names = tuple(v for k, v in desc.annotations if k in (mediatypes.CONTAINERD_IMAGE_NAME, mediatypes.REF_NAME))
    yield StoredImage(
        manifest_descriptor=desc,
        manifest=manifest,
        config_descriptor=config_desc,
        config=source.blob_json(config_desc),
        layers=tuple(Descriptor.from_json(d) for d in manifest.get("layers") or []),
        names=names,
    )


def _from_docker(source: ImageSource, entry: dict[str, Any]) -> StoredImage:
    config_name = entry["Config"]
    with source.open_file(config_name) as f:
        config_bytes = f.read()
    config_desc = Descriptor(mediatypes.DOCKER_CONFIG, Digest.of_bytes(config_bytes), len(config_bytes))
    layers = []
    for path in entry.get("Layers") or []:
        with source.open_file(path) as f:
            h, size = hashlib.sha256(), 0
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
        # docker save before 25 stores layers uncompressed as <id>/layer.tar: remember the path.
        layers.append(Descriptor(mediatypes.OCI_LAYER, Digest(h.hexdigest()), size, annotations={_PATH: path}))
    return StoredImage(None, {}, config_desc, json.loads(config_bytes), tuple(layers), tuple(entry.get("RepoTags") or ()))
