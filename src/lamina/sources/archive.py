"""Read stored images: OCI layouts (directory or tar) and docker-archive tarballs or directories.

Covers what docker save (20.10's ``<id>/layer.tar`` and >= 25's OCI-plus-manifest.json),
skopeo, podman, buildah, umoci and lamina write, and turns each image into the one image
value, ``lamina.image.Image``, whose ``blobs`` open its layers.

This module is a security boundary: archives come from strangers.
- Every name a document gives (manifest.json ``Config``/``Layers``, blob digests) resolves
  inside the archive: no absolute path, no ``..``, no symlink leaving a directory, and only
  regular files are read.
- Every JSON document is read with a hard size cap the document itself cannot raise.
- Every blob is verified against its digest and size as it streams, and every layer's
  uncompressed stream against its diff_id; a stream closed early is drained first, so a
  consumer that stops at the tar end-of-archive marker still gets the check.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import queue
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from lamina.errors import DigestMismatch, ImageError, ParseError, UnsafePathError
from lamina.hashing import sha256_stream
from lamina.image import Image
from lamina.layers.entries import normalize
from lamina.limits import MAX_CONFIG, MAX_LAYERS, MAX_MANIFEST
from lamina.model import ConfigFile, Descriptor, Digest, Layer, Manifest, mediatypes
from lamina.sources.tarball import detect, open_decompressed, read_into

_MAX_NESTING = 4  # indexes of indexes: docker >= 25 writes one level; a loop must end

_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json", "application/vnd.docker.distribution.manifest.v1+prettyjws")
_FOREIGN = ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")
_MAGIC_TYPES = {"gzip": mediatypes.OCI_LAYER_GZIP, "zstd": mediatypes.OCI_LAYER_ZSTD, "tar": mediatypes.OCI_LAYER}

ARTIFACT_TYPE = mediatypes.ARTIFACT_TYPE


class _Verifying(io.RawIOBase):
    """Passes bytes through and checks their digest (and size) at the end of the stream.

    Closing before the end drains the rest first: a reader that stops early (tar's
    end-of-archive marker) must not skip the check of the bytes it did use."""

    def __init__(self, raw: BinaryIO, digest: Digest, size: int | None, what: str) -> None:
        self._raw, self._digest, self._size, self._what = raw, digest, size, what
        self._hash = hashlib.sha256()
        self._seen = 0
        self._done = False
        self._failure = ""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = len(buffer)
        if self._size is not None:
            want = min(want, self._size - self._seen + 1)  # one byte past the size shows a longer blob
        view = memoryview(buffer)[: max(want, 0)]
        n = read_into(self._raw, view) if want > 0 else 0
        self._seen += n
        if self._size is not None and self._seen > self._size:
            raise DigestMismatch(f"{self._what}: longer than its descriptor's {self._size} bytes")
        self._hash.update(view[:n])
        if n == 0:
            self._check()
        return n

    def _check(self) -> None:
        if not self._done:
            self._done = True
            if self._size is not None and self._seen != self._size:
                self._failure = f"{self._what}: {self._seen} bytes, not the descriptor's {self._size}"
            elif self._hash.hexdigest() != self._digest.hex:
                self._failure = f"{self._what}: content does not match its digest"
        if self._failure:  # at every read at the end: a reader that swallowed the first does not get a clean end
            raise DigestMismatch(self._failure)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._done:
                buffer = bytearray(1 << 20)
                while self.readinto(buffer):
                    pass
        finally:
            self._raw.close()
            super().close()


def verifying(raw: BinaryIO, digest: Digest, size: int | None, name: str, *, what: str = "") -> BinaryIO:
    """``raw`` read through a digest (and size) check; see _Verifying. ``what`` names the
    stream in errors (default: the blob in archive ``name``)."""
    what = what or f"blob {digest} in {name}"
    return io.BufferedReader(_Verifying(raw, digest, size, what), 1 << 20)


class _Slice(io.RawIOBase):
    """``size`` bytes of a file from its current position: one member of an uncompressed tar."""

    def __init__(self, raw: BinaryIO, size: int) -> None:
        self._raw, self._left = raw, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = read_into(self._raw, memoryview(buffer)[: min(len(buffer), self._left)])
        self._left -= n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


class _Decompressed(io.RawIOBase):
    """A decompressing reader that also closes (and so verifies) the stream under it; corrupt
    compressed data (an OSError from open_decompressed, whichever decompressor found it)
    becomes one ImageError naming the layer."""

    def __init__(self, inner: BinaryIO, under: BinaryIO, what: str = "layer") -> None:
        self._inner, self._under, self._what = inner, under, what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return read_into(self._inner, buffer)
        except OSError as exc:
            raise ImageError(f"{self._what}: cannot be decompressed ({exc})") from None

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._inner is not self._under:
                self._inner.close()
        finally:
            self._under.close()
            super().close()


def _inside(name: str, where: str) -> str:
    """A name an archive's document gives, as a path inside the archive, or an error."""
    if not isinstance(name, str) or not name or name.startswith("/"):
        raise UnsafePathError(f"{where}: {name!r} is not a relative path inside the archive")
    try:
        return normalize(name, what=f"{where}: path")
    except UnsafePathError:
        raise UnsafePathError(f"{where}: {name!r} leaves the archive") from None


@attrs.define
class ImageSource:
    """File access to one stored archive, a directory or a tar file, confined to it."""

    name: str
    _dir: Path | None = None
    _tar: tarfile.TarFile | None = None
    _members: dict[str, tarfile.TarInfo] | None = None  # by normalised name

    @classmethod
    def open(cls, path: Path) -> ImageSource:
        if path.is_dir():
            return cls(str(path), dir=path)
        try:
            if not stat.S_ISREG(path.stat().st_mode):
                raise ImageError(f"{str(path)!r}: not a regular file or directory")
            return cls(str(path), tar=tarfile.open(path, "r:"))
        except FileNotFoundError:
            raise ImageError(f"{str(path)!r}: no such file or directory") from None
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
            members: dict[str, tarfile.TarInfo] = {}
            try:
                listed = self._tar.getmembers()
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise ImageError(f"{self.name}: not a readable image tarball ({exc})") from None
            for m in listed:
                try:
                    members[normalize(m.name)] = m
                except UnsafePathError:
                    continue  # never addressable: no document may name it
            self._members = members
        return self._members[name]

    def _path(self, name: str) -> Path:
        """The file ``name`` names in a directory archive; symlinks may not leave it."""
        assert self._dir is not None
        root = os.path.realpath(self._dir)
        real = os.path.realpath(os.path.join(root, name))
        if real != root and not real.startswith(root.rstrip("/") + "/"):
            raise UnsafePathError(f"{self.name}: {name!r} resolves outside the archive")
        return Path(real)

    def has(self, name: str) -> bool:
        name = _inside(name, self.name)
        if self._dir is not None:
            return self._path(name).is_file()
        try:
            return self._member(name).isfile()
        except KeyError:
            return False

    def open_file(self, name: str) -> BinaryIO:
        """A fresh reader of one regular file each time (safe from several threads at once)."""
        name = _inside(name, self.name)
        try:
            if self._dir is not None:
                # O_NONBLOCK: opening a FIFO the archive names must not wait for a writer
                # forever; fstat then refuses anything but a regular file.
                fd = os.open(self._path(name), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    os.close(fd)
                    raise ImageError(f"{self.name}: {name!r} is not a regular file")
                os.set_blocking(fd, True)
                return open(fd, "rb")
            assert self._tar is not None
            member = self._member(name)
            if not member.isfile() or member.sparse:
                raise ImageError(f"{self.name}: {name!r} is not a regular file")
            assert self._tar.name is not None
            raw = open(self._tar.name, "rb")
            raw.seek(member.offset_data)
            return io.BufferedReader(_Slice(raw, member.size), 1 << 20)
        except (KeyError, FileNotFoundError, NotADirectoryError):
            raise ImageError(f"{self.name}: missing {name!r}") from None
        except IsADirectoryError:
            raise ImageError(f"{self.name}: {name!r} is not a regular file") from None
        except (tarfile.TarError, OSError) as exc:
            raise ImageError(f"{self.name}: cannot read {name!r} ({exc})") from None

    def read_json(self, name: str, *, cap: int = MAX_MANIFEST, data: bytes | None = None) -> Any:
        """A JSON document of the archive, at most ``cap`` bytes."""
        if data is None:
            with self.open_file(name) as f:
                data = f.read(cap + 1)
        if len(data) > cap:
            raise ImageError(f"{self.name}: {name} is larger than {cap >> 20} MiB")
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, an int past 4300 digits
            raise ImageError(f"{self.name}: {name} is not valid JSON ({exc})") from None

    def read_blob(self, descriptor: Descriptor, *, cap: int = MAX_MANIFEST) -> bytes:
        """A small blob (manifest, index, config), verified, refused past ``cap`` whatever its
        descriptor says (the descriptor is written by the same stranger)."""
        if descriptor.size > cap:
            raise ImageError(f"{self.name}: blob {descriptor.digest} is {descriptor.size} bytes, over the {cap >> 20} MiB limit")
        with verifying(self.open_file(_blob_path(descriptor.digest)), descriptor.digest, descriptor.size, self.name) as f:
            return f.read()


def _blob_path(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


@attrs.frozen
class ArchiveBlobs:
    """The blobs of one image in an archive: each layer's path, opened verified."""

    source: ImageSource = attrs.field(eq=False)
    paths: dict[Digest, str] = attrs.field(eq=False, factory=dict)

    def open(self, descriptor: Descriptor) -> BinaryIO:
        path = self.paths.get(descriptor.digest, _blob_path(descriptor.digest))
        return verifying(self.source.open_file(path), descriptor.digest, descriptor.size, self.source.name)


class _ReadAhead(io.RawIOBase):
    """A stream read ahead by a worker thread, a few chunks at most: the worker reads,
    verifies and decompresses the stored bytes while the caller hashes and parses the tar,
    so both cores work (hashlib, igzip and zstd release the GIL). The chunks' buffers are
    reused (fresh megabytes each time cost page faults). The worker's errors are raised in
    the caller's thread, at the read that reaches them, or at close."""

    _CHUNK = 1 << 20

    def __init__(self, inner: BinaryIO, depth: int = 4) -> None:
        self._inner = inner
        self._full: queue.Queue[tuple[bytearray, int] | BaseException] = queue.Queue()
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(depth):
            self._free.put(bytearray(self._CHUNK))
        self._chunk: bytearray | None = None
        self._at = self._size = 0
        self._end: BaseException | None | bool = None  # True at the end of the stream
        self._stop = False
        self._worker = threading.Thread(target=self._run, name="lamina-read-ahead", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        try:
            while not self._stop:
                try:
                    chunk = self._free.get(timeout=0.1)
                except queue.Empty:
                    continue
                n = read_into(self._inner, chunk)
                self._full.put((chunk, n))
                if not n:
                    return
        except BaseException as exc:
            self._full.put(exc)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._chunk is None:
            if self._end is not None:  # read again at the end, or after the worker's error
                if isinstance(self._end, BaseException):
                    raise self._end
                return 0
            item = self._full.get()
            if isinstance(item, BaseException):
                self._end = item
                raise item
            self._chunk, self._size = item
            self._at = 0
            if not self._size:
                self._chunk, self._end = None, True
                return 0
        n = min(len(buffer), self._size - self._at)
        buffer[:n] = memoryview(self._chunk)[self._at : self._at + n]
        self._at += n
        if self._at == self._size:
            self._free.put(self._chunk)
            self._chunk = None
        return n

    def close(self) -> None:
        """Stop the worker, close the stream, and raise the worker's error if the reader
        stopped before it: a failed check must not pass unseen."""
        if self.closed:
            return
        self._stop = True
        failed = self._end if isinstance(self._end, BaseException) else None
        try:
            self._worker.join()  # it waits for a free buffer at most 0.1 s, and stops
            while not self._full.empty():
                item = self._full.get()
                if isinstance(item, BaseException):
                    failed = item
        finally:
            self._inner.close()
            super().close()
        if failed is not None:
            raise failed


class _Copied(io.RawIOBase):
    """A stream whose bytes are also written to ``out`` as they are read; closing reads the
    rest through it first, so ``out`` gets the whole stream (and a verifying stream under it
    its check) even when the reader above stops early."""

    def __init__(self, inner: BinaryIO, out: BinaryIO) -> None:
        self._inner, self._out = inner, out

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = read_into(self._inner, buffer)
        self._out.write(memoryview(buffer)[:n])
        return n

    def close(self) -> None:
        if self.closed:
            return
        try:
            buffer = bytearray(1 << 20)
            while self.readinto(buffer):
                pass
        finally:
            self._inner.close()
            super().close()


def open_uncompressed(image: Image, layer: Layer, *, ahead: bool = False, copy_to: BinaryIO | None = None) -> BinaryIO:
    """A layer's tar stream, decompressed and verified against its diff_id (and the stored
    bytes against the layer's digest) as it is read. ``ahead``: read, verified and
    decompressed by worker threads (see _ReadAhead), for a caller that reads it all.
    ``copy_to``: the stored bytes are written there too, all of them once the stream is
    closed; they are the layer's blob only if closing raised nothing."""
    if image.blobs is None:
        raise ImageError(f"{image.describe()}: its layers cannot be read")
    stored = image.blobs.open(layer.descriptor)
    if copy_to is not None:
        stored = io.BufferedReader(_Copied(stored, copy_to), 1 << 20)
    if ahead:
        stored = io.BufferedReader(_ReadAhead(stored), 1 << 20)
    try:
        plain = open_decompressed(stored)
    except BaseException:
        stored.close()
        raise
    both: BinaryIO = io.BufferedReader(_Decompressed(plain, stored, f"{image.describe()}: layer {layer.descriptor.digest}"),
                                       1 << 20)
    if ahead:
        both = _ReadAhead(both)  # type: ignore[assignment]
    what = f"{image.describe()}: layer {layer.descriptor.digest}: uncompressed content (diff_id {layer.diff_id})"
    return verifying(both, layer.diff_id, None, "", what=what)


def layer_openers(image: Image) -> list[Callable[[], BinaryIO]]:
    """One opener per layer giving its verified uncompressed tar stream (for MergedFS and co)."""
    return [functools.partial(open_uncompressed, image, layer) for layer in image.layers]


@attrs.frozen
class Entry:
    """A top-level entry of an archive: an index.json descriptor or a manifest.json record."""

    names: tuple[str, ...]
    descriptor: Descriptor | None = None
    docker: dict[str, Any] | None = None

    def describe(self) -> str:
        return ", ".join(self.names) or (str(self.descriptor.digest) if self.descriptor else "(unnamed)")


def entries(source: ImageSource) -> list[Entry]:
    """Top-level images of an archive: index.json (OCI) first, else manifest.json (docker).
    Artifacts lamina attaches (SBOMs) are not images and are skipped."""
    if source.has("index.json"):
        index = source.read_json("index.json")
        out = []
        for raw in _list(index, "manifests", source, "index.json"):
            desc = _descriptor(raw, source, "index.json")
            if any(k == ARTIFACT_TYPE for k, _ in desc.annotations):
                continue
            names = tuple(dict.fromkeys(
                v for k, v in desc.annotations if k in (mediatypes.CONTAINERD_IMAGE_NAME, mediatypes.REF_NAME)
            ))
            out.append(Entry(names, descriptor=desc))
        return out
    if source.has("manifest.json"):
        records = _list(source.read_json("manifest.json"), None, source, "manifest.json")
        out = []
        for record in records:
            if not isinstance(record, dict) or not isinstance(record.get("Config"), str):
                raise ImageError(f"{source.name}: manifest.json entries must be JSON objects with a Config path")
            tags = record.get("RepoTags") or ()
            if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
                raise ImageError(f"{source.name}: manifest.json RepoTags must be a list of strings")
            out.append(Entry(tuple(tags), docker=record))
        return out
    raise ImageError(f"{source.name}: not an image archive (no index.json or manifest.json)")


def _list(doc: Any, key: str | None, source: ImageSource, what: str) -> list[Any]:
    value = doc.get(key) if key and isinstance(doc, dict) else doc
    if not isinstance(value, list):
        raise ImageError(f"{source.name}: {what} is not an image index")
    return value


def _descriptor(raw: Any, source: ImageSource, what: str) -> Descriptor:
    try:
        return Descriptor.from_json(raw)
    except ParseError as exc:
        raise ImageError(f"{source.name}: bad descriptor in {what}: {exc}") from None


def is_index(desc: Descriptor) -> bool:
    return desc.media_type in mediatypes.INDEX_TYPES


def index_children(source: ImageSource, desc: Descriptor) -> list[Descriptor]:
    doc = source.read_json(f"index {desc.digest}", data=source.read_blob(desc))
    return [_descriptor(m, source, f"index {desc.digest}") for m in _list(doc, "manifests", source, f"index {desc.digest}")]


def manifests(source: ImageSource, top: Descriptor) -> list[Descriptor]:
    """The one walk from a top descriptor to image manifests: nested indexes flattened (to a
    bounded depth, so an index naming itself ends), artifacts and attestations skipped."""
    out: list[Descriptor] = []

    def walk(desc: Descriptor, depth: int) -> None:
        if not is_index(desc):
            out.append(desc)
            return
        if depth >= _MAX_NESTING:
            raise ImageError(f"{source.name}: indexes nested deeper than {_MAX_NESTING} levels at {desc.digest}")
        for child in index_children(source, desc):
            if any(k == ARTIFACT_TYPE for k, _ in child.annotations):
                continue
            if child.platform is not None and child.platform.os == "unknown":
                continue  # buildkit's attestation manifests
            if child.media_type in mediatypes.MANIFEST_TYPES or is_index(child):
                walk(child, depth + 1)

    walk(top, 0)
    return out


def _count_layers(source: ImageSource, what: str, layers: int) -> None:
    if layers > MAX_LAYERS:
        raise ImageError(f"{source.name}: {what} has {layers} layers; lamina reads at most {MAX_LAYERS} "
                         "(docker runs at most ~125)")


def _parse_config(source: ImageSource, data: bytes, what: str, layers: int) -> ConfigFile:
    try:
        config = ConfigFile.from_json(source.read_json(what, cap=MAX_CONFIG, data=data))
    except ParseError as exc:
        raise ImageError(f"{source.name}: {what}: {exc}") from None
    if len(config.diff_ids) != layers:
        raise ImageError(f"{source.name}: {what} lists {len(config.diff_ids)} diff_ids for {layers} layers")
    return config


def load_manifest(source: ImageSource, desc: Descriptor, names: tuple[str, ...] = ()) -> Image:
    if desc.media_type in _SCHEMA1:
        raise ImageError(f"{source.name}: manifest {desc.digest} is Docker schema 1, which lamina does not read")
    if desc.media_type not in mediatypes.MANIFEST_TYPES:
        raise ImageError(f"{source.name}: unsupported manifest media type {desc.media_type!r}")
    manifest_bytes = source.read_blob(desc)
    manifest = source.read_json(f"manifest {desc.digest}", data=manifest_bytes)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers", []), list):
        raise ImageError(f"{source.name}: manifest {desc.digest} is not a JSON object with a layers list")
    _count_layers(source, f"manifest {desc.digest}", len(manifest.get("layers") or []))
    config_desc = _descriptor(manifest.get("config"), source, f"manifest {desc.digest} config")
    layer_descs = [_descriptor(d, source, f"manifest {desc.digest} layers") for d in manifest.get("layers") or []]
    config_bytes = source.read_blob(config_desc, cap=MAX_CONFIG)
    config = _parse_config(source, config_bytes, f"config {config_desc.digest}", len(layer_descs))
    history = config.layer_history()
    layers = []
    for i, (layer, diff_id) in enumerate(zip(layer_descs, config.diff_ids)):
        if layer.media_type in _FOREIGN:
            raise ImageError(f"{source.name}: layer {layer.digest} is a foreign layer ({layer.media_type}), which lamina does not copy")
        if layer.media_type not in mediatypes.LAYER_TYPES:
            raise ImageError(f"{source.name}: layer {layer.digest} has unsupported media type {layer.media_type!r}")
        if not source.has(_blob_path(layer.digest)):
            raise ImageError(f"{source.name}: manifest {desc.digest} points at missing blob {layer.digest}")
        created_by = history[i].created_by if i < len(history) else ""
        layers.append(Layer(layer, diff_id, None, None, created_by))
    plain = Descriptor(desc.media_type, desc.digest, desc.size, platform=config.platform)
    return Image(config.platform, tuple(layers), config, config_bytes, config_desc, manifest_bytes, plain,
                 blobs=ArchiveBlobs(source), names=names)


def load_docker(source: ImageSource, record: dict[str, Any], names: tuple[str, ...] = ()) -> Image:
    """An image of a docker-archive. It has no manifest: lamina derives one (as skopeo does),
    hashing each layer file to name it; an uncompressed layer must hash to its diff_id."""
    config_name, paths = record.get("Config"), record.get("Layers") or []
    if not isinstance(config_name, str) or not isinstance(paths, list):
        raise ImageError(f"{source.name}: manifest.json entry needs a Config path and a Layers list")
    _count_layers(source, "manifest.json", len(paths))
    hashed: dict[str, tuple[Digest, int, bytes]] = {}
    with source.open_file(config_name) as f:
        config_bytes = f.read(MAX_CONFIG + 1)
    config = _parse_config(source, config_bytes, config_name, len(paths))
    history = config.layer_history()
    layers, where = [], {}
    for i, (path, diff_id) in enumerate(zip(paths, config.diff_ids)):
        if not isinstance(path, str):
            raise ImageError(f"{source.name}: manifest.json Layers must be paths")
        if path not in hashed:  # a path listed twice is read once
            hashed[path] = _hash_member(source, path)
        digest, size, head = hashed[path]
        kind = detect(head)
        if kind == "tar" and digest != diff_id:
            raise DigestMismatch(f"{source.name}: layer {path!r} does not match its diff_id {diff_id}")
        where[digest] = path
        created_by = history[i].created_by if i < len(history) else ""
        layers.append(Layer(Descriptor(_MAGIC_TYPES.get(kind, mediatypes.OCI_LAYER), digest, size), diff_id, None, None, created_by))
    config_desc = Descriptor(mediatypes.OCI_CONFIG, Digest.of_bytes(config_bytes), len(config_bytes))
    manifest_bytes = Manifest(config_desc, tuple(layer.descriptor for layer in layers)).to_bytes()
    manifest_desc = Descriptor(mediatypes.OCI_MANIFEST, Digest.of_bytes(manifest_bytes), len(manifest_bytes),
                               platform=config.platform)
    return Image(config.platform, tuple(layers), config, config_bytes, config_desc, manifest_bytes, manifest_desc,
                 blobs=ArchiveBlobs(source, where), names=names, derived_manifest=True)


def _hash_member(source: ImageSource, path: str) -> tuple[Digest, int, bytes]:
    """A docker-archive layer's digest, size and first bytes (its compression's magic)."""
    with source.open_file(path) as f:
        head = f.read(8)
    with source.open_file(path) as f:
        hexdigest, size = sha256_stream(f)
    return Digest(hexdigest), size, head


def images(source: ImageSource) -> Iterator[Image]:
    """Every image the source holds, every platform of every index (inspect, lint, diff)."""
    for entry in entries(source):
        if entry.docker is not None:
            yield load_docker(source, entry.docker, entry.names)
            continue
        assert entry.descriptor is not None
        for desc in manifests(source, entry.descriptor):
            yield load_manifest(source, desc, entry.names)

