"""Findings of the security review of issue 11's hardening (a rerun of its attacks plus new
ones in the same spirit), each as the attacker's input and the outcome lamina promises.

Every input is built here, in the test's own directory; canaries outside it prove nothing
outside is read or written. Every case runs the real CLI in a subprocess with a timeout, so a
hang is a failure, not a stuck suite.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from support.cli import lamina

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer_tar(files: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (files or {"hello.txt": b"hello\n"}).items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _config(diff_ids: list[str], extra: bytes = b"") -> bytes:
    doc = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    return doc[:-1] + extra + b"}" if extra else doc


def _oci_layout(root: Path, plain: bytes, stored: bytes, media_type: str = LAYER_GZIP,
                config: bytes | None = None) -> Path:
    """A one-layer OCI layout whose layer blob is ``stored`` (its digest always right)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    config = config if config is not None else _config([_sha(plain)])
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _sha(config), "size": len(config)},
        "layers": [{"mediaType": media_type, "digest": _sha(stored), "size": len(stored)}],
    }).encode()
    for blob in (stored, config, manifest):
        (blobs / _sha(blob)[7:]).write_bytes(blob)
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": _sha(manifest), "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return root


def _docker_dir(root: Path) -> Path:
    """A one-layer docker-archive directory (as ``tar -x`` of docker save leaves it)."""
    layer = _layer_tar()
    (root / "l0").mkdir(parents=True)
    (root / "l0" / "layer.tar").write_bytes(layer)
    (root / "config.json").write_bytes(_config([_sha(layer)]))
    (root / "manifest.json").write_text(json.dumps(
        [{"Config": "config.json", "RepoTags": ["x:latest"], "Layers": ["l0/layer.tar"]}]))
    return root


def _one_error_line(res: Any) -> None:
    """Refused as promised: a non-zero exit, one ``lamina: error:`` line (notes aside), no internal error."""
    assert res.returncode == 1, (res.returncode, res.stderr)
    lines = [line for line in res.stderr.strip().splitlines() if not line.startswith("lamina: note: ")]
    assert len(lines) == 1 and lines[0].startswith("lamina: error: "), res.stderr
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr, res.stderr


# ---- image readers


@pytest.mark.parametrize("what", ["config.json", "l0/layer.tar"])
def test_fifo_named_by_a_docker_archive_directory_is_refused_not_waited_on(tmp_path: Path, what: str) -> None:
    """open() of a FIFO blocks until a writer comes: a stranger's unpacked archive must not
    hang a build (or CI) forever by naming one as its config or a layer."""
    archive = _docker_dir(tmp_path / "archive")
    (archive / what).unlink()
    os.mkfifo(archive / what)
    res = lamina("build", "--from", str(archive), "-o", str(tmp_path / "out.tar"), timeout=30)
    _one_error_line(res)
    assert "not a regular file" in res.stderr
    assert not (tmp_path / "out.tar").exists()


def test_fifo_as_a_blob_of_an_oci_layout_is_refused_not_waited_on(tmp_path: Path) -> None:
    plain = _layer_tar()
    layout = _oci_layout(tmp_path / "layout", plain, gzip.compress(plain, mtime=0))
    config = _config([_sha(plain)])
    blob = layout / "blobs" / "sha256" / _sha(config)[7:]
    blob.unlink()
    os.mkfifo(blob)
    for args in (["inspect", str(layout)], ["build", "--from", str(layout), "-o", str(tmp_path / "o.tar")]):
        _one_error_line(lamina(*args, timeout=30))


@pytest.mark.parametrize("where", ["index.json", "config"])
def test_json_integer_past_pythons_digit_limit_is_one_error_line(tmp_path: Path, where: str) -> None:
    """Python >= 3.11 refuses to parse an int of over 4300 digits with a ValueError that is not
    a JSONDecodeError: it used to escape as an internal error (exit 70)."""
    plain = _layer_tar()
    huge = b', "x": ' + b"9" * 5000
    config = _config([_sha(plain)], huge if where == "config" else b"")
    layout = _oci_layout(tmp_path / "layout", plain, gzip.compress(plain, mtime=0), config=config)
    if where == "index.json":
        index = (layout / "index.json").read_bytes()
        (layout / "index.json").write_bytes(index[:-1] + huge + b"}")
    for args in (["inspect", str(layout)], ["build", "--from", str(layout), "-o", str(tmp_path / "o.tar")]):
        _one_error_line(lamina(*args, timeout=120))


def _corrupt_zstd_layout(root: Path, how: str) -> Path:
    plain = _layer_tar({"hello.txt": bytes(range(256)) * 12})
    frame = zstandard.ZstdCompressor(write_checksum=True).compress(plain)
    if how == "trailing garbage":
        stored = frame + b"JUNKJUNK"
    else:  # a flipped byte: the frame's checksum fails
        flipped = bytearray(frame)
        flipped[len(frame) // 2] ^= 0xFF
        stored = bytes(flipped)
    return _oci_layout(root, plain, stored, media_type=LAYER_ZSTD)


@pytest.mark.parametrize("how", ["trailing garbage", "flipped byte"])
@pytest.mark.parametrize("command", ["inspect", "lint", "copy-from", "index", "build-gzip"])
def test_corrupt_zstd_layer_is_one_error_line(tmp_path: Path, how: str, command: str) -> None:
    """A zstd layer whose digest is right (the stranger wrote it) but whose stream is corrupt:
    zstandard's ZstdError (and lzma's LZMAError) escaped as internal errors."""
    layout = _corrupt_zstd_layout(tmp_path / "layout", how)
    out = str(tmp_path / "out.tar")
    args = {
        "inspect": ["inspect", str(layout)],
        "lint": ["lint", str(layout)],
        "copy-from": ["build", "--copy-from", f"{layout}:/hello.txt:/h", "-o", out],
        "index": ["index", str(layout), "-o", out],
        "build-gzip": ["build", "--from", str(layout), "--compression", "gzip", "-o", out],
    }[command]
    _one_error_line(lamina(*args, timeout=120))
    assert not Path(out).exists()


def test_layer_whose_bytes_are_not_the_compression_its_media_type_names_is_refused(tmp_path: Path) -> None:
    """A layer labelled tar+gzip holding zstd bytes (digest and diff_id both right) was passed
    through as it was: the output said gzip over zstd bytes, which Docker 20.10 cannot load."""
    plain = _layer_tar()
    layout = _oci_layout(tmp_path / "layout", plain, zstandard.ZstdCompressor().compress(plain), media_type=LAYER_GZIP)
    out = tmp_path / "out.tar"
    _one_error_line(lamina("build", "--from", str(layout), "-o", str(out), timeout=120))
    assert not out.exists()


# ---- outputs


def _build_layout(tmp_path: Path, layout: Path, tag: str, label: str = "") -> Any:
    (tmp_path / "h.txt").write_text("hi\n")
    extra = ["--label", label] if label else []
    return lamina("build", "--add", f"{tmp_path / 'h.txt'}:/h", "--oci-dir", str(layout), "-t", tag, *extra, timeout=120)


def test_oci_dir_never_writes_through_a_symlink_planted_in_an_existing_layout(tmp_path: Path) -> None:
    """An existing layout (say, unpacked from a stranger's oci-archive) whose blobs/sha256 is a
    symlink: blobs were renamed through it into the directory it names, outside the output."""
    layout = tmp_path / "layout"
    assert _build_layout(tmp_path, layout, "a:1").returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (layout / "blobs" / "sha256").rename(tmp_path / "old-blobs")
    (layout / "blobs" / "sha256").symlink_to(elsewhere)
    res = _build_layout(tmp_path, layout, "a:2", label="x=y")
    assert sorted(os.listdir(elsewhere)) == [], "blobs were written outside the named layout"
    assert res.returncode != 0 or not (layout / "blobs" / "sha256").is_symlink(), res.stderr


def test_oci_dir_never_keeps_a_corrupt_blob_of_the_same_size(tmp_path: Path) -> None:
    """A blob already in the layout under this build's digest, with the right size but other
    bytes, was kept ("same name, same size: the same content") and the build exited 0 over a
    layout whose new tag cannot be read back."""
    layout = tmp_path / "layout"
    assert _build_layout(tmp_path, layout, "a:1").returncode == 0
    corrupted = []
    for blob in (layout / "blobs" / "sha256").iterdir():
        data = bytearray(blob.read_bytes())
        if data[:2] == b"\x1f\x8b":
            data[20] ^= 0xFF
            blob.write_bytes(bytes(data))
            corrupted.append(blob)
    assert corrupted
    res = _build_layout(tmp_path, layout, "a:2")
    if res.returncode == 0:
        for blob in (layout / "blobs" / "sha256").iterdir():
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, f"{blob.name}: corrupt blob in the layout"
    else:
        _one_error_line(res)


# ---- the layer cache


@pytest.mark.parametrize("record", ['{"descriptor": 5}', "not json", '{"descriptor": {}}', "[]"])
def test_a_broken_cache_record_costs_the_saving_never_the_build(tmp_path: Path, record: str) -> None:
    """The cache promises "a broken index costs the saving, never the build": a record it
    cannot read (written by another lamina version, or damaged) failed the build (exit 2)."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    (tmp_path / "h.txt").write_text("hi\n")
    args = ["build", "--add", f"{tmp_path / 'h.txt'}:/h", "-o", str(tmp_path / "out.tar")]
    first = lamina(*args, env=env, timeout=120)
    assert first.returncode == 0, first.stderr
    db = sqlite3.connect(tmp_path / "cache" / "lamina" / "layers" / "index.sqlite")
    with db:
        assert db.execute("UPDATE layers SET record=?", (record,)).rowcount >= 1
    db.close()
    again = lamina(*args, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == first.stdout.strip().splitlines()[-1]




# ---- amplification


def test_one_layer_listed_ten_thousand_times_does_not_cost_ten_thousand_reads(tmp_path: Path) -> None:
    """A docker-archive of 8 MiB on disk whose manifest.json lists its one layer 10,000 times
    (config and manifest stay far under their caps) makes every reader hash and stream 80 GB:
    hours of CPU from a file a stranger sends. Refuse an image past a sane layer count (docker
    refuses past ~125), or read a repeated layer once; either way, end in seconds."""
    archive = tmp_path / "archive"
    archive.mkdir()
    layer = _layer_tar({"blob": os.urandom(8 << 20)})
    (archive / "l.tar").write_bytes(layer)
    count = 10_000
    (archive / "config.json").write_bytes(_config([_sha(layer)] * count))
    (archive / "manifest.json").write_text(json.dumps(
        [{"Config": "config.json", "RepoTags": ["x:latest"], "Layers": ["l.tar"] * count}]))
    for args in (["inspect", str(archive)], ["build", "--from", str(archive), "-o", str(tmp_path / "o.tar")]):
        res = lamina(*args, timeout=30)
        assert res.returncode in (0, 1) and "internal error" not in res.stderr, res.stderr


# ---- layer members lamina's merged view used to skip


def _gnu_sparse_layer(tmp_path: Path) -> bytes:
    """A layer holding one old-GNU sparse member ('S'), as GNU tar --sparse --format=gnu writes."""
    src = tmp_path / "sparse-src"
    src.mkdir()
    with open(src / "hidden", "wb") as f:
        f.seek(4 << 20)
        f.write(b"payload")
    out = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-cf", str(out), "-C", str(src), "hidden"], check=True,
                   stdin=subprocess.DEVNULL, timeout=60)
    data = out.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getmembers()[0].type == tarfile.GNUTYPE_SPARSE
    return data


def test_gnu_sparse_member_of_a_base_layer_is_seen_by_the_sbom_and_copy_from(tmp_path: Path) -> None:
    """Docker extracts an old-GNU sparse member as a regular file; lamina's merged view skipped
    it, so a file every container has was missing from the SBOM, lint and diff, and --copy-from
    said it did not exist: a place to hide a binary from the review lamina offers."""
    plain = _gnu_sparse_layer(tmp_path)
    layout = _oci_layout(tmp_path / "layout", plain, gzip.compress(plain, mtime=0))
    out = tmp_path / "out.tar"
    res = lamina("build", "--from", str(layout), "--sbom", "spdx", "-o", str(out), timeout=120)
    assert res.returncode == 0, res.stderr
    sbom = json.loads((tmp_path / "out.tar.spdx.json").read_text())
    assert any(f.get("fileName", "").endswith("hidden") for f in sbom.get("files", [])), "the SBOM misses /hidden"
    copied = tmp_path / "copied.tar"
    res = lamina("build", "--copy-from", f"{layout}:/hidden:/hidden", "--compression", "none", "-o", str(copied), timeout=120)
    assert res.returncode == 0, res.stderr
    with tarfile.open(copied) as image:
        index = json.load(image.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(image.extractfile("blobs/sha256/" + index["manifests"][0]["digest"][7:]))  # type: ignore[arg-type]
        layer = image.extractfile("blobs/sha256/" + manifest["layers"][-1]["digest"][7:]).read()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        data = tar.extractfile("hidden").read()  # type: ignore[union-attr]
    assert len(data) == (4 << 20) + 7 and data.endswith(b"payload")


def test_a_layer_member_of_a_type_docker_cannot_extract_is_one_error_line(tmp_path: Path) -> None:
    """A member of an unknown type (here 'Z') was skipped in silence; docker refuses the layer
    ("unhandled tar header type"), so lint must say so rather than pass the image."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        odd = tarfile.TarInfo("odd")
        odd.type = b"Z"
        tar.addfile(odd)
    plain = buf.getvalue()
    layout = _oci_layout(tmp_path / "layout", plain, gzip.compress(plain, mtime=0))
    _one_error_line(lamina("lint", str(layout), timeout=120))


def test_oci_dir_whose_index_json_is_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Rewriting index.json of an existing layout opened it blocking: a FIFO there hung the build."""
    layout = tmp_path / "layout"
    assert _build_layout(tmp_path, layout, "a:1").returncode == 0
    (layout / "index.json").unlink()
    os.mkfifo(layout / "index.json")
    res = lamina("build", "--add", f"{tmp_path / 'h.txt'}:/h", "--oci-dir", str(layout), "-t", "a:2", timeout=30)
    _one_error_line(res)


@pytest.mark.parametrize("value", ["[" * 100_000, "[" + "9" * 5000 + "]"])
def test_entrypoint_json_too_deep_or_with_a_huge_int_is_a_usage_error(tmp_path: Path, value: str) -> None:
    """--entrypoint/--cmd JSON: RecursionError and the int digit limit's ValueError escaped as
    internal errors (exit 70)."""
    res = lamina("build", "--entrypoint", value, "-o", str(tmp_path / "o.tar"), timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("lamina: error: bad --entrypoint") and "internal error" not in res.stderr, res.stderr
