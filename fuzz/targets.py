"""Fuzz targets: bytes in, lamina's public readers run on them; only LaminaError may escape.

Each target takes one input and a scratch directory (emptied by the caller between inputs).
The same functions run under atheris (``fuzz/run.py``) and as ordinary pytest tests that
replay the committed seed corpus and every crash found so far (tests/hostile/test_fuzz_replay.py),
so a finding stays a regression test once it is fixed.

Targets:
    tar    a rootfs tarball, any compression, as ``lamina build --tarball`` reads it
           (read_tarball → build_layer), and as stored layers are read (rootfs.walk_layer)
    image  an image archive: byte 0 picks what the rest is (a whole OCI/docker tar archive,
           or the JSON of manifest.json / index.json / a manifest / a config in an otherwise
           valid archive), read as ``lamina inspect``, ``lamina lint`` and ``--from`` read it
    spec   a lamina.toml, as ``lamina build SPEC`` parses it
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

from lamina.errors import LaminaError

# Reading a member's data stops here: inputs are small, and a bomb must not take minutes.
READ_CAP = 64 << 20


def _drain(reader: io.BufferedIOBase | None, cap: int = READ_CAP) -> int:
    if reader is None:
        return 0
    total = 0
    while total < cap and (chunk := reader.read(1 << 16)):
        total += len(chunk)
    return total


def tar_target(data: bytes, work: Path) -> None:
    from lamina.layers.build import build_layer
    from lamina.layers.compression import Compression
    from lamina.sources.rootfs import walk_layer
    from lamina.sources.tarball import read_tarball
    from lamina.store import BlobStore

    path = work / "rootfs.tar"
    path.write_bytes(data)
    # The build path: every entry the reader yields must be one the writer accepts.
    with read_tarball(str(path), "/opt/root", epoch=1_700_000_000) as items:
        build_layer(items, compression=Compression.NONE, store=BlobStore(work / "store"), created_by="fuzz")
    # The stored-layer path, as inspect, lint, diff and index read it: one LaminaError or none.
    def visit(_path: str, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        if member.isfile():
            _drain(archive.extractfile(member))  # type: ignore[arg-type]

    try:
        walk_layer(lambda: io.BufferedReader(io.BytesIO(data)), "layer", visit)
    except LaminaError:
        pass


# --- image archives ---------------------------------------------------------------------

_LAYER = None  # a valid gzip layer, made once


def _layer() -> tuple[bytes, str]:
    global _LAYER
    if _LAYER is None:
        import gzip

        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
            info = tarfile.TarInfo("etc/hostname")
            info.size = 5
            tf.addfile(info, io.BytesIO(b"fuzz\n"))
        plain = out.getvalue()
        _LAYER = (gzip.compress(plain, mtime=0), "sha256:" + hashlib.sha256(plain).hexdigest())
    return _LAYER


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _config(diff_id: str) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                       "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                       "history": [{"created_by": "fuzz"}]}).encode()


def _manifest(config: bytes, layer: bytes) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _sha(layer), "size": len(layer)}],
    }).encode()


def _index(manifest: bytes) -> bytes:
    return json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _sha(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "fuzz:latest"},
    }]}).encode()


def archive_members(kind: int, doc: bytes) -> dict[str, bytes]:
    """The members of an image archive where one document is ``doc`` and the rest is valid.

    kind 1: docker manifest.json; 2: index.json; 3: the manifest blob; 4: the config blob.
    Blobs named by digest get the digest of their (fuzzed) bytes, so the reader gets past
    the digest check to the parser.
    """
    layer, diff_id = _layer()
    if kind == 1:
        config = _config(diff_id)
        return {"manifest.json": doc, "config.json": config, "layer.tar.gz": layer}
    config = doc if kind == 4 else _config(diff_id)
    manifest = doc if kind == 3 else _manifest(config, layer)
    index = doc if kind == 2 else _index(manifest)
    members = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
    for blob in (config, manifest, layer):
        members[f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}"] = blob
    return members


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))


def image_target(data: bytes, work: Path) -> None:
    from lamina.inspect import inspect_image
    from lamina.lint import lint_stored
    from lamina.sources.base import BaseRef, open_image

    kind = data[0] % 5 if data else 0
    path = work / "image.tar"
    if kind == 0:
        path.write_bytes(data[1:])
    else:
        write_tar(path, archive_members(kind, data[1:]))
    # What `lamina inspect --json` prints, `lamina lint` reads (the merged filesystem, through
    # walk_layer), and --from opens: each on its own, so one refusing does not hide the others.
    for read in (lambda: json.dumps(inspect_image(path)), lambda: lint_stored(str(path)),
                 lambda: open_image(BaseRef.parse(str(path)), None)[0].close()):
        try:
            read()
        except LaminaError:
            pass


def spec_target(data: bytes, work: Path) -> None:
    from lamina.spec import merge, read_spec

    path = work / "lamina.toml"
    path.write_bytes(data)
    merge(read_spec(path), {})


TARGETS: dict[str, Callable[[bytes, Path], None]] = {
    "tar": tar_target,
    "image": image_target,
    "spec": spec_target,
}


def run_one(target: str, data: bytes, work: Path) -> None:
    """Run one input; LaminaError is a correct answer to bad input, and is swallowed here."""
    try:
        TARGETS[target](data, work)
    except LaminaError:
        pass
