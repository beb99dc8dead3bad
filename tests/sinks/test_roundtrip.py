"""Sinks round trip in process: build layers, compose, write_layout / write_tarball, then
read the output back two ways: lamina's own reader (sources.archive, digest-verifying) and
support.oci.validate_image (re-hashes every blob, checks the schemas). Digests, config bytes
and every file's bytes, mode and link must come back as they went in."""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator
from io import BufferedReader, BytesIO
from pathlib import Path
from typing import Any

import pytest
from support.oci import validate_image

from lamina.errors import LaminaError
from lamina.image import ConfigChanges, Image, ImageIndex, compose, compose_index
from lamina.layers.build import build_layer
from lamina.layers.compression import Compression
from lamina.layers.entries import Entry, Kind
from lamina.model import Layer, Platform, Reference
from lamina.sbom import artifact
from lamina.sinks.layout import stage_layout
from lamina.sinks.tarball import write_tarball
from lamina.image import Image
from lamina.sources.archive import ImageSource, entries, images
from lamina.sources.rootfs import walk_layer
from lamina.store import BlobStore

EPOCH = 1_700_000_000
AMD64, ARM64 = Platform("linux", "amd64"), Platform("linux", "arm64")
# path -> (kind, mode, content or link target)
FILES: dict[str, tuple[Kind, int, bytes | str]] = {
    "app": (Kind.DIR, 0o755, b""),
    "app/hello": (Kind.FILE, 0o755, b"\x7fELF not really\n" * 1000),
    "app/empty": (Kind.FILE, 0o600, b""),
    "app/link": (Kind.SYMLINK, 0o777, "hello"),
    "etc": (Kind.DIR, 0o755, b""),
    "etc/conf": (Kind.FILE, 0o644, b"key = value\n"),
}
SECOND: dict[str, tuple[Kind, int, bytes | str]] = {"etc/second": (Kind.FILE, 0o644, b"from the second layer\n")}


def _items(files: dict[str, tuple[Kind, int, bytes | str]], host: Path) -> Iterator[tuple[Entry, Any]]:
    """Half the files come from the host (entry.source), half from an opener, as sources do."""
    for i, (path, (kind, mode, content)) in enumerate(files.items()):
        if kind is Kind.SYMLINK:
            yield Entry(path, kind, mode=mode, mtime=EPOCH, linkname=str(content)), None
        elif kind is Kind.DIR:
            yield Entry(path, kind, mode=mode, mtime=EPOCH), None
        elif i % 2:
            src = host / path.replace("/", "_")
            src.write_bytes(bytes(content))  # type: ignore[arg-type]
            yield Entry(path, kind, mode=mode, mtime=EPOCH, size=len(content), source=str(src)), None
        else:
            data = bytes(content)  # type: ignore[arg-type]
            yield Entry(path, kind, mode=mode, mtime=EPOCH, size=len(data)), lambda d=data: BytesIO(d)


def _layers(store: BlobStore, host: Path, compression: Compression) -> tuple[Layer, Layer]:
    host.mkdir(exist_ok=True)
    first = build_layer(_items(FILES, host), compression=compression, store=store, created_by="first")
    second = build_layer(_items(SECOND, host), compression=compression, store=store, created_by="second")
    return first, second


def _image(tmp_path: Path, compression: Compression, platform: Platform = AMD64) -> tuple[BlobStore, Image]:
    store = BlobStore(tmp_path / "store")
    layers = _layers(store, tmp_path / "host", compression)
    changes = ConfigChanges(cmd=("/app/hello",), env=(("A", "1"),), labels=(("l", "v"),),
                            annotations=(("org.opencontainers.image.source", "roundtrip"),))
    return store, compose(layers, changes, platform=platform, epoch=EPOCH, blobs=store)


def _write(kind: str, built: Image | ImageIndex, store: BlobStore, out: Path, tags: tuple[Reference, ...] = (),
           docker_image: Image | None = None, extras: Any = ()) -> Path:
    if kind == "layout":
        stage_layout(built, out, tags, extras).commit()
    else:
        first = built if isinstance(built, Image) else built.images[0]
        with open(out, "wb") as f:
            write_tarball(built, f, tags, epoch=EPOCH, docker_image=docker_image or first, extras=extras)
    return out


def _read_back(path: Path) -> list[tuple[Image, dict[str, tuple[Kind, int, bytes | str]]]]:
    """Every image with the files of its layers, through lamina's own reader."""
    out = []
    with ImageSource.open(path) as source:
        for stored in images(source):
            files: dict[str, tuple[Kind, int, bytes | str]] = {}
            for layer in stored.layers:
                assert stored.blobs is not None
                with stored.blobs.open(layer.descriptor) as raw:
                    blob = raw.read()  # verified against the digest while read

                def visit(_path: str, member: tarfile.TarInfo, tar: tarfile.TarFile,
                          files: dict[str, tuple[Kind, int, bytes | str]] = files) -> None:
                    name = member.name.rstrip("/")
                    if member.isdir():
                        files[name] = (Kind.DIR, member.mode, b"")
                    elif member.issym():
                        files[name] = (Kind.SYMLINK, member.mode, member.linkname)
                    else:
                        assert member.isfile() and member.mtime == EPOCH, member
                        fileobj = tar.extractfile(member)
                        assert fileobj is not None
                        files[name] = (Kind.FILE, member.mode, fileobj.read())

                walk_layer(lambda blob=blob: BufferedReader(BytesIO(blob)), "layer", visit)
            out.append((stored, files))
    return out


@pytest.mark.parametrize("sink", ["layout", "tarball"])
@pytest.mark.parametrize("compression", list(Compression))
def test_one_image_comes_back_as_it_went_in(tmp_path: Path, sink: str, compression: Compression) -> None:
    store, image = _image(tmp_path, compression)
    path = _write(sink, image, store, tmp_path / ("out" if sink == "layout" else "out.tar"))
    checked = validate_image(path)
    assert [m["digest"] for m in checked["index"]["manifests"]] == [str(image.digest)]
    assert checked["configs"] == [json.loads(image.config_bytes)]
    [(stored, files)] = _read_back(path)
    assert stored.digest == image.digest and stored.manifest_bytes == image.manifest_bytes
    assert stored.config_bytes == image.config_bytes and stored.config == image.config
    assert [(l.descriptor.digest, l.diff_id, l.descriptor.media_type) for l in stored.layers] == [
        (l.descriptor.digest, l.diff_id, compression.media_type) for l in image.layers]
    assert files == {**FILES, **SECOND}


@pytest.mark.parametrize("sink", ["layout", "tarball"])
def test_an_index_with_tags_and_an_attached_artifact(tmp_path: Path, sink: str) -> None:
    store = BlobStore(tmp_path / "store")
    layers = _layers(store, tmp_path / "host", Compression.GZIP)
    built = compose_index([compose(layers, ConfigChanges(), platform=p, epoch=EPOCH, blobs=store) for p in (AMD64, ARM64)])
    tags = (Reference.parse("example.com/app:v1"), Reference.parse("app:latest"))
    sbom = b'{"spdxVersion":"SPDX-2.3"}'
    extra = artifact(built.images[0], sbom)
    path = _write(sink, built, store, tmp_path / ("out" if sink == "layout" else "out.tar"), tags,
                  docker_image=built.images[1], extras=[extra])
    checked = validate_image(path)
    index_entries = checked["index"]["manifests"]
    assert [m["digest"] for m in index_entries] == [str(built.digest), str(built.digest), str(extra[0].digest)]
    assert [m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in index_entries[:2]] == [
        "v1", "latest"]
    artifact_manifest = next(m for m in checked["manifests"] if m.get("artifactType"))
    assert artifact_manifest["subject"]["digest"] == str(built.images[0].digest)
    with ImageSource.open(path) as source:
        assert [e.names for e in entries(source)] == [("example.com/app:v1", "v1"),
                                                    ("docker.io/library/app:latest", "latest")]
    read = _read_back(path)
    assert [stored.platform for stored, _ in read] == [AMD64, ARM64] * 2
    assert all(files == {**FILES, **SECOND} for _, files in read)
    if sink == "tarball":  # Docker's manifest.json describes the image it was told to
        with tarfile.open(path) as tar:
            docker = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert docker[0]["Config"] == f"blobs/sha256/{built.images[1].config_descriptor.digest.hex}"
        assert docker[0]["RepoTags"] == ["example.com/app:v1", "app:latest"]


def test_layout_and_tarball_hold_the_same_blobs(tmp_path: Path) -> None:
    store, image = _image(tmp_path, Compression.ZSTD)
    layout = _write("layout", image, store, tmp_path / "layout")
    tarball = _write("tarball", image, store, tmp_path / "image.tar")
    assert validate_image(layout) == validate_image(tarball)
    on_disk = {p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}
    with tarfile.open(tarball) as tar:
        in_tar = {Path(m.name).name: tar.extractfile(m).read()  # type: ignore[union-attr]
                  for m in tar.getmembers() if m.isfile() and m.name.startswith("blobs/")}
    assert on_disk == in_tar
    assert all(hashlib.sha256(data).hexdigest() == name for name, data in on_disk.items())


def test_the_same_inputs_write_the_same_tarball_bytes(tmp_path: Path) -> None:
    outputs = []
    for run in ("a", "b"):
        store, image = _image(tmp_path / run, Compression.GZIP)
        outputs.append(_write("tarball", image, store, tmp_path / run / "out.tar").read_bytes())
    assert outputs[0] == outputs[1]


def test_a_corrupted_blob_is_caught_by_both_readers(tmp_path: Path) -> None:
    store, image = _image(tmp_path, Compression.NONE)
    layout = _write("layout", image, store, tmp_path / "layout")
    blob = layout / "blobs" / "sha256" / image.layers[0].descriptor.digest.hex
    data = bytearray(blob.read_bytes())
    data[600] ^= 1  # inside the first file's content
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(AssertionError, match="does not match its digest"):
        validate_image(layout)
    with pytest.raises(LaminaError, match=image.layers[0].descriptor.digest.hex[:12]):
        _read_back(layout)
