"""The hostile corpus, generated: each function writes one hostile input into a directory.

Nothing here is a checked-in blob: every case is made by code from a few bytes, so a reader
of the test sees what the input is. A CANARY (a gzip tar and a JSON file holding a random
token) is written *outside* the input's directory: a case that points at it proves lamina
reads nothing it was not given, when the token appears in no output.

    python -m hostile.generate DIR      (from tests/: writes every case into DIR, to look at)
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import secrets
import tarfile
from collections.abc import Callable
from pathlib import Path

import attrs
import zstandard

BLOCK = 512


@attrs.frozen
class Canary:
    """Files outside every input; their token must never appear in lamina's output."""

    token: str
    tarball: Path  # a gzip rootfs tar with one file named and filled with the token
    json: Path  # a JSON document holding the token
    dir: Path  # a directory holding a file with the token


def make_canary(root: Path) -> Canary:
    token = "CANARY" + secrets.token_hex(8)
    root.mkdir(parents=True, exist_ok=True)
    payload = (token + "\n").encode()
    tarball = root / "canary.tar.gz"
    tarball.write_bytes(gzip.compress(tar_bytes([(reg(token, payload), payload)]), mtime=0))
    doc = root / "canary.json"
    # Its diff_ids match the one-layer images below, so a reader that follows a path out
    # to it gets a whole image, and the token shows in what lamina prints or writes.
    doc.write_text(json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": [f"T={token}"]},
                               "rootfs": {"type": "layers", "diff_ids": [_sha(_layer_tar())]}}))
    folder = root / "canary-dir"
    folder.mkdir(exist_ok=True)
    (folder / token).write_bytes(payload)
    return Canary(token, tarball, doc, folder)


# --- tar building blocks ----------------------------------------------------------------

def reg(name: str, data: bytes = b"", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 1_600_000_000
    return info


def special(name: str, kind: bytes, link: str = "", **fields: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, link, 0o755, 1_600_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def raw_header(name: bytes, *, size: int = 0, typeflag: bytes = b"0", linkname: bytes = b"",
               size_field: bytes | None = None, mode: int = 0o644) -> bytes:
    """One ustar header block with fields exactly as given (for names tarfile will not write)."""
    head = b"".join((
        name[:100].ljust(100, b"\0"),
        b"%07o\0" % mode, b"%07o\0" % 0, b"%07o\0" % 0,
        size_field if size_field is not None else b"%011o\0" % size,
        b"%011o\0" % 1_600_000_000,
        b"        ", typeflag, linkname[:100].ljust(100, b"\0"),
        b"ustar\x0000", b"\0" * 32, b"\0" * 32, b"%07o\0" % 0, b"%07o\0" % 0, b"\0" * 155, b"\0" * 12,
    ))
    assert len(head) == BLOCK
    return head[:148] + b"%06o\0 " % sum(head) + head[156:]


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def pax_block(records: dict[bytes, bytes], name: bytes = b"././@PaxHeader") -> bytes:
    body = b""
    for key, value in records.items():
        line = b" " + key + b"=" + value + b"\n"
        n = len(line) + 1
        while len(str(n)) + len(line) != n:
            n += 1
        body += str(n).encode() + line
    return raw_header(name, size=len(body), typeflag=b"x") + pad(body)


END = b"\0" * (2 * BLOCK)


def random_payload(size: int, seed: int = 7) -> bytes:
    """Incompressible bytes (deterministic): so compressed streams have data to cut into."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda b: gzip.compress(b, mtime=0),
    "xz": lzma.compress,
    "bzip2": bz2.compress,
    "zstd": lambda b: zstandard.ZstdCompressor(write_checksum=True).compress(b),  # as the zstd CLI writes
}


# --- rootfs tarballs (--tarball) -------------------------------------------------------

@attrs.frozen
class TarCase:
    """A hostile rootfs tarball and its one defined outcome.

    ``error``: a substring of the one ``lamina: error:`` line (exit 1); None: the build
    succeeds and ``check`` (given the built image's layer members) holds.
    """

    name: str
    make: Callable[[Path, Canary], Path]
    error: str | None = None
    check: Callable[[list[tarfile.TarInfo], dict[str, bytes]], None] | None = None


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _names(*wanted: str) -> Callable[[list[tarfile.TarInfo], dict[str, bytes]], None]:
    def check(members: list[tarfile.TarInfo], _: dict[str, bytes]) -> None:
        names = [m.name for m in members]
        for name in wanted:
            assert name in names, (name, names)
    return check


def _kinds(members: list[tarfile.TarInfo], _: dict[str, bytes]) -> None:
    by = {m.name: m for m in members}
    assert by["dev/null"].ischr() and (by["dev/null"].devmajor, by["dev/null"].devminor) == (1, 3)
    assert by["dev/sda"].isblk() and (by["dev/sda"].devmajor, by["dev/sda"].devminor) == (8, 0)
    assert by["run/fifo"].isfifo()


def _abs_hardlink(members: list[tarfile.TarInfo], data: dict[str, bytes]) -> None:
    by = {m.name: m for m in members}
    assert by["bin/ls"].islnk() and by["bin/ls"].linkname == "bin/busybox", by["bin/ls"].linkname
    assert "etc/passwd" in by and data["etc/passwd"] == b"root:x:0:0::/:/bin/sh\n"


def _non_utf8(members: list[tarfile.TarInfo], _: dict[str, bytes]) -> None:
    # tarfile hands undecodable bytes back as surrogates: the bytes went through unchanged.
    names = [m.name.encode("utf-8", "surrogateescape") for m in members]
    assert b"caf\xe9" in names and b"new\nline" in names, names


def _long_names(members: list[tarfile.TarInfo], _: dict[str, bytes]) -> None:
    names = [m.name for m in members]
    assert "deep/" + "d" * 150 + "/file" in names and any(m.linkname == "t" * 200 for m in members), names


def _sparse(members: list[tarfile.TarInfo], data: dict[str, bytes]) -> None:
    body = data["sparse.bin"]
    assert len(body) == 3 * 4096 and body[:4096] == b"\0" * 4096 and body[4096:8192] == b"A" * 4096, len(body)


def dotdot(d: Path, c: Canary) -> Path:
    return _write(d / "dotdot.tar", tar_bytes([(reg("../../" + c.tarball.name, b"x"), b"x")]))


def dotdot_inner(d: Path, c: Canary) -> Path:
    return _write(d / "dotdot-inner.tar", tar_bytes([(reg("a/b/../../../escape", b"x"), b"x")]))


def absolute(d: Path, c: Canary) -> Path:
    members = [(reg("/bin/busybox", b"\x7fELF"), b"\x7fELF"),
               (special("/bin/ls", tarfile.LNKTYPE, "/bin/busybox"), b""),
               (reg("/etc/passwd", b"root:x:0:0::/:/bin/sh\n"), b"root:x:0:0::/:/bin/sh\n")]
    return _write(d / "absolute.tar", tar_bytes(members))


def absolute_hardlink_outside(d: Path, c: Canary) -> Path:
    return _write(d / "abs-hardlink.tar", tar_bytes([(special("stolen", tarfile.LNKTYPE, str(c.tarball)), b"")]))


def dangling_hardlink(d: Path, c: Canary) -> Path:
    return _write(d / "dangling-hardlink.tar", tar_bytes([(special("a", tarfile.LNKTYPE, "nowhere/b"), b"")]))


def symlink_then_file(d: Path, c: Canary) -> Path:
    """``etc`` -> the canary's directory, then ``etc/evil`` written through it."""
    members = [(special("etc", tarfile.SYMTYPE, str(c.dir)), b""), (reg("etc/evil", b"pwned"), b"pwned")]
    return _write(d / "symlink-then-file.tar", tar_bytes(members))


def symlink_then_dir(d: Path, c: Canary) -> Path:
    members = [(special("lib", tarfile.SYMTYPE, "../../.."), b""), (special("lib/x", tarfile.DIRTYPE), b"")]
    return _write(d / "symlink-then-dir.tar", tar_bytes(members))


def pax_huge_size(d: Path, c: Canary) -> Path:
    body = pax_block({b"size": b"9" * 30}) + raw_header(b"huge", size=4) + pad(b"data") + END
    return _write(d / "pax-huge-size.tar", body)


def pax_huge_size_symlink(d: Path, c: Canary) -> Path:
    """A huge PAX size on a member that has no data: readers skip by seeking that far."""
    body = pax_block({b"size": b"9" * 30}) + raw_header(b"l", typeflag=b"2", linkname=b"t") + END
    return _write(d / "pax-huge-size-symlink.tar", body)


def pax_negative_size(d: Path, c: Canary) -> Path:
    body = pax_block({b"size": b"-512"}) + raw_header(b"neg", size=4) + pad(b"data") + END
    return _write(d / "pax-negative-size.tar", body)


def pax_huge_header(d: Path, c: Canary) -> Path:
    """A PAX header claiming 1 GiB of records (as zeros, compressed to ~1 MB): tarfile would
    read all of them into memory."""
    header = raw_header(b"././@PaxHeader", size=1 << 30, typeflag=b"x")
    comp = zstandard.ZstdCompressor().compressobj()
    out = comp.compress(header)
    zeros = b"\0" * (1 << 20)
    for _ in range(1 << 10):
        out += comp.compress(zeros)
    out += comp.compress(raw_header(b"after", size=0) + END) + comp.flush()
    return _write(d / "pax-huge-header.tar.zst", out)


def gnu_long_names(d: Path, c: Canary) -> Path:
    members = [(reg("deep/" + "d" * 150 + "/file", b"x"), b"x"),
               (special("l", tarfile.SYMTYPE, "t" * 200), b"")]
    return _write(d / "gnu-long.tar", tar_bytes(members, tarfile.GNU_FORMAT))


def gnu_long_name_dotdot(d: Path, c: Canary) -> Path:
    return _write(d / "gnu-long-dotdot.tar", tar_bytes([(reg("../" * 60 + "escape", b"x"), b"x")], tarfile.GNU_FORMAT))


def name_with_nul_pax(d: Path, c: Canary) -> Path:
    body = pax_block({b"path": b"etc/pass\0wd"}) + raw_header(b"placeholder", size=1) + pad(b"x") + END
    return _write(d / "nul-pax.tar", body)


def name_with_nul_gnu(d: Path, c: Canary) -> Path:
    """A GNU long name with a NUL inside: the name is cut at the NUL (as GNU tar does)."""
    name = b"ok/name\0../../../escape\0"
    body = raw_header(b"././@LongLink", size=len(name), typeflag=b"L") + pad(name) + raw_header(b"x", size=1) + pad(b"x") + END
    return _write(d / "nul-gnu.tar", body)


def newline_and_non_utf8(d: Path, c: Canary) -> Path:
    body = (raw_header(b"caf\xe9", size=1) + pad(b"x") + raw_header(b"new\nline", size=1) + pad(b"y")
            + pax_block({b"hdrcharset": b"BINARY", b"path": b"pax-\xff\xfe"}) + raw_header(b"p", size=1) + pad(b"z") + END)
    return _write(d / "names.tar", body)


def sparse_pax(d: Path, c: Canary) -> Path:
    """GNU PAX sparse format 1.0: 12 KiB file, one 4 KiB data block at offset 4096."""
    sparse_map = pad(b"1\n4096\n4096\n")
    records = {b"GNU.sparse.major": b"1", b"GNU.sparse.minor": b"0", b"GNU.sparse.name": b"sparse.bin",
               b"GNU.sparse.realsize": b"12288"}
    data = sparse_map + b"A" * 4096
    body = pax_block(records) + raw_header(b"GNUSparseFile.0/sparse.bin", size=len(data)) + data + END
    return _write(d / "sparse-pax.tar", body)


def sparse_old_gnu(d: Path, c: Canary) -> Path:
    head = bytearray(raw_header(b"sparse.bin", size=4096, typeflag=b"S"))
    head[386:410] = b"%011o\0%011o\0" % (4096, 4096)  # one (offset, numbytes) pair
    head[483:495] = b"%011o\0" % 12288  # realsize
    head[148:156] = b"        "
    head[148:156] = b"%06o\0 " % sum(head)
    return _write(d / "sparse-gnu.tar", bytes(head) + b"A" * 4096 + END)


def devices_and_fifo(d: Path, c: Canary) -> Path:
    members = [(special("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), b""),
               (special("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), b""),
               (special("run/fifo", tarfile.FIFOTYPE), b"")]
    return _write(d / "devices.tar", tar_bytes(members))


def hardlink_to_dir(d: Path, c: Canary) -> Path:
    members = [(special("etc", tarfile.DIRTYPE), b""), (special("etc2", tarfile.LNKTYPE, "etc"), b"")]
    return _write(d / "hardlink-dir.tar", tar_bytes(members))


def _two_files() -> bytes:
    first, second = random_payload(200_000, 1), random_payload(300_000, 2)
    return tar_bytes([(reg("first.bin", first), first), (reg("second.bin", second), second)])


def truncated(kind: str) -> Callable[[Path, Canary], Path]:
    def make(d: Path, c: Canary) -> Path:
        data = COMPRESS[kind](_two_files())
        return _write(d / f"truncated.tar.{kind}", data[: len(data) * 2 // 3])
    make.__name__ = f"truncated_{kind}"
    return make


def bitflip(kind: str) -> Callable[[Path, Canary], Path]:
    def make(d: Path, c: Canary) -> Path:
        data = bytearray(COMPRESS[kind](_two_files()))
        data[len(data) * 2 // 3] ^= 0x10
        return _write(d / f"bitflip.tar.{kind}", bytes(data))
    make.__name__ = f"bitflip_{kind}"
    return make


def truncated_plain(d: Path, c: Canary) -> Path:
    data = _two_files()
    return _write(d / "truncated.tar", data[: BLOCK + 250_000])  # inside second.bin's data


BOMB_SIZE = 256 << 20


def bomb(kind: str) -> Callable[[Path, Canary], Path]:
    """One 256 MiB file of zeros, compressed > 1000:1; built with bounded memory."""
    def make(d: Path, c: Canary) -> Path:
        header = raw_header(b"zeros", size=BOMB_SIZE)
        if kind == "zstd":
            comp = zstandard.ZstdCompressor(level=19).compressobj()
            parts = [comp.compress(header)] + [comp.compress(b"\0" * (1 << 20)) for _ in range(BOMB_SIZE >> 20)]
            data = b"".join(parts) + comp.compress(END) + comp.flush()
        elif kind == "xz":
            lz = lzma.LZMACompressor(preset=1)
            parts = [lz.compress(header)] + [lz.compress(b"\0" * (1 << 20)) for _ in range(BOMB_SIZE >> 20)]
            data = b"".join(parts) + lz.compress(END) + lz.flush()
        else:
            import zlib

            z = zlib.compressobj(9, zlib.DEFLATED, 31)
            parts = [z.compress(header)] + [z.compress(b"\0" * (1 << 20)) for _ in range(BOMB_SIZE >> 20)]
            data = b"".join(parts) + z.compress(END) + z.flush()
        assert BOMB_SIZE / len(data) > 1000, (kind, len(data))
        return _write(d / f"bomb.tar.{kind}", data)
    make.__name__ = f"bomb_{kind}"
    return make


def many_members(d: Path, c: Canary, count: int = 300_000) -> Path:
    """300,000 empty files in 800 kB of zstd: memory must not grow with the member count."""
    comp = zstandard.ZstdCompressor().compressobj()
    parts = [comp.compress(raw_header(b"d/%07d" % i)) for i in range(count)]
    return _write(d / "many.tar.zst", b"".join(parts) + comp.compress(END) + comp.flush())


HUGE_SIZE = (8 << 30) + 4096  # over ustar's 8 GiB: needs a PAX size record


def huge_file(d: Path, c: Canary) -> Path:
    """One 8 GiB + 4 KiB member whose data is a hole: the tarball is sparse on disk."""
    path = d / "huge.tar"
    with open(path, "wb") as f:
        f.write(pax_block({b"size": str(HUGE_SIZE).encode()}) + raw_header(b"huge.img", size=0))
        f.seek(HUGE_SIZE + (-HUGE_SIZE % BLOCK), os.SEEK_CUR)
        f.write(END)
    return path


TAR_CASES: list[TarCase] = [
    TarCase("dotdot", dotdot, error="would land outside the image root"),
    TarCase("dotdot-inner", dotdot_inner, error="would land outside the image root"),
    TarCase("absolute", absolute, check=_abs_hardlink),
    TarCase("absolute-hardlink-outside", absolute_hardlink_outside, error="not an earlier member"),
    TarCase("dangling-hardlink", dangling_hardlink, error="not an earlier member"),
    TarCase("symlink-then-file", symlink_then_file, error="/etc/evil would be written through the symlink /etc"),
    TarCase("symlink-then-dir", symlink_then_dir, error="/lib/x would be written through the symlink /lib"),
    TarCase("pax-huge-size", pax_huge_size, error="huge"),
    TarCase("pax-huge-size-symlink", pax_huge_size_symlink, check=_names("l")),
    TarCase("pax-negative-size", pax_negative_size, error="pax-negative-size.tar"),
    TarCase("pax-huge-header", pax_huge_header, error="header"),
    TarCase("gnu-long-names", gnu_long_names, check=_long_names),
    TarCase("gnu-long-name-dotdot", gnu_long_name_dotdot, error="would land outside the image root"),
    TarCase("nul-in-pax-name", name_with_nul_pax, error="NUL"),
    TarCase("nul-in-gnu-long-name", name_with_nul_gnu, check=_names("ok/name")),
    TarCase("newline-and-non-utf8-names", newline_and_non_utf8, check=_non_utf8),
    TarCase("sparse-pax", sparse_pax, check=_sparse),
    TarCase("sparse-old-gnu", sparse_old_gnu, check=_sparse),
    TarCase("devices-and-fifo", devices_and_fifo, check=_kinds),
    TarCase("hardlink-to-dir", hardlink_to_dir, error="hardlink to a directory"),
    TarCase("truncated-plain", truncated_plain, error="second.bin"),
    # bzip2 reads 900 kB blocks: a cut in the first block fails before any member is read.
    *(TarCase(f"truncated-{k}", truncated(k), error="second.bin") for k in ("gzip", "xz", "zstd")),
    TarCase("truncated-bzip2", truncated("bzip2"), error="truncated.tar.bzip2"),
    *(TarCase(f"bitflip-{k}", bitflip(k), error="bitflip.tar." + k) for k in ("gzip", "xz", "zstd", "bzip2")),
]
BOMB_CASES = [TarCase(f"bomb-{k}", bomb(k), check=_names("zeros")) for k in ("gzip", "xz", "zstd")]


# --- image archives (--from, inspect, lint) ---------------------------------------------

def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _config(diff_ids: list[str]) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]},
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()


HELLO = b"hello from a base layer\n"


def _layer_tar() -> bytes:
    return tar_bytes([(reg("hello.txt", HELLO), HELLO)])


def docker_dir(d: Path, layers: list[str], config_name: str = "config.json", diff_ids: list[str] | None = None) -> Path:
    """A docker-archive directory (as ``docker save`` unpacked) with the given Layers paths."""
    d.mkdir(parents=True, exist_ok=True)
    plain = _layer_tar()
    (d / "good.tar").write_bytes(plain)
    if config_name == "config.json":
        (d / "config.json").write_bytes(_config(diff_ids if diff_ids is not None else [_sha(plain)] * len(layers)))
    (d / "manifest.json").write_text(json.dumps([{"Config": config_name, "RepoTags": ["hostile:latest"], "Layers": layers}]))
    return d


def oci_dir(d: Path, *, index: bytes | None = None, config: bytes | None = None, layer: bytes | None = None,
            truncate: str = "", sizes: dict[str, int] | None = None) -> Path:
    """An OCI layout directory; any document or blob can be replaced, any blob truncated,
    any descriptor's size overridden ("config", "layer", "manifest")."""
    sizes = sizes or {}
    blobs = d / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (d / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    plain = _layer_tar()
    layer = layer if layer is not None else gzip.compress(plain, mtime=0)
    config = config if config is not None else _config([_sha(plain)])
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha(config),
                   "size": sizes.get("config", len(config))},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _sha(layer),
                    "size": sizes.get("layer", len(layer))}],
    }).encode()
    blob_bytes = {"config": config, "layer": layer, "manifest": manifest}
    for what, data in blob_bytes.items():
        stored = data[: len(data) // 2] if truncate == what else data
        (blobs / hashlib.sha256(data).hexdigest()).write_bytes(stored)
    if index is None:
        index = json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _sha(manifest),
            "size": sizes.get("manifest", len(manifest)),
            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}).encode()
    (d / "index.json").write_bytes(index)
    return d


def as_tar(d: Path) -> Path:
    """The directory as an archive (members named as ``tar -C d .`` would, without ./)."""
    out = d.with_name(d.name + ".tar")
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for path in sorted(d.rglob("*")):
            tf.add(path, arcname=str(path.relative_to(d)), recursive=False)
    return out


@attrs.frozen
class ImageCase:
    """A hostile image archive: every command given it must fail with one clear line."""

    name: str
    make: Callable[[Path, Canary], Path]
    error: str  # a substring of the error line


def layers_absolute(d: Path, c: Canary) -> Path:
    return docker_dir(d / "img", [str(c.tarball)])


def layers_dotdot(d: Path, c: Canary) -> Path:
    img = d / "deep" / "img"
    rel = os.path.relpath(c.tarball, img)
    assert rel.startswith("..")
    return docker_dir(img, [rel])


def layers_symlink_out(d: Path, c: Canary) -> Path:
    img = docker_dir(d / "img", ["layer.tar.gz"])
    (img / "layer.tar.gz").symlink_to(c.tarball)
    return img


def config_absolute(d: Path, c: Canary) -> Path:
    return docker_dir(d / "img", ["good.tar"], config_name=str(c.json))


def config_dev_zero(d: Path, c: Canary) -> Path:
    """Config: /dev/zero, an endless stream; reading it whole would never end."""
    return docker_dir(d / "img", ["good.tar"], config_name="/dev/zero")


def config_symlink_dev_zero(d: Path, c: Canary) -> Path:
    img = docker_dir(d / "img", ["good.tar"], config_name="cfg.json")
    (img / "cfg.json").symlink_to("/dev/zero")
    return img


def config_huge(d: Path, c: Canary) -> Path:
    """A 256 MiB config blob (whitespace then {}), digest correct: must be refused by size."""
    config = b" " * (256 << 20) + _config([_sha(_layer_tar())])
    return oci_dir(d / "img", config=config)


def config_deep(d: Path, c: Canary) -> Path:
    """A config nested 100,000 arrays deep: json.loads recurses."""
    return oci_dir(d / "img", config=b"[" * 100_000 + b"]" * 100_000)


def index_bad_digest(text: str) -> Callable[[Path, Canary], Path]:
    def make(d: Path, c: Canary) -> Path:
        index = json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": text, "size": 10}]}).encode()
        return oci_dir(d / "img", index=index)
    return make


def diff_id_mismatch(d: Path, c: Canary) -> Path:
    """A docker-archive whose gzip layer's content does not match the config's diff_id."""
    img = d / "img"
    img.mkdir(parents=True)
    other = tar_bytes([(reg("other.txt", b"not the layer the config names"), b"not the layer the config names")])
    (img / "layer.tar.gz").write_bytes(gzip.compress(_layer_tar(), mtime=0))
    (img / "config.json").write_bytes(_config([_sha(other)]))
    (img / "manifest.json").write_text(json.dumps([{"Config": "config.json", "RepoTags": ["hostile:latest"],
                                                    "Layers": ["layer.tar.gz"]}]))
    return img


def truncated_blob(what: str) -> Callable[[Path, Canary], Path]:
    def make(d: Path, c: Canary) -> Path:
        return oci_dir(d / "img", truncate=what)
    return make


def wrong_size(what: str, size: int) -> Callable[[Path, Canary], Path]:
    def make(d: Path, c: Canary) -> Path:
        return oci_dir(d / "img", sizes={what: size})
    return make


def corrupt_gzip_layer(how: str) -> Callable[[Path, Canary], Path]:
    """A gzip layer whose bytes are named by their true digest but do not decompress:
    a bit flipped in the deflate data, or a bad gzip magic after the first two bytes."""
    def make(d: Path, c: Canary) -> Path:
        payload = random_payload(100_000)
        layer = bytearray(gzip.compress(tar_bytes([(reg("big.bin", payload), payload)]), mtime=0))
        if how == "bitflip":
            layer[len(layer) // 2] ^= 0x40
        else:
            layer[3] = 0xFF  # reserved flag bits set: not a gzip header
        return oci_dir(d / "img", layer=bytes(layer))
    return make


def tarred(make: Callable[[Path, Canary], Path]) -> Callable[[Path, Canary], Path]:
    def inner(d: Path, c: Canary) -> Path:
        return as_tar(make(d, c))
    return inner


def corrupt_second_header(d: Path, c: Canary) -> Path:
    """An OCI archive (tar) whose second member header has a bad checksum."""
    path = as_tar(oci_dir(d / "img"))
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as tf:
        second = tf.getmembers()[1].offset
    data[second + 148 : second + 156] = b"0000000\0"
    path.write_bytes(bytes(data))
    return path


def docker_config_not_a_string(d: Path, c: Canary) -> Path:
    """manifest.json with two images, one whose Config is a list (not a path)."""
    img = docker_dir(d / "img", ["good.tar"])
    records = json.loads((img / "manifest.json").read_text())
    records.append({"Config": ["config.json"], "RepoTags": ["other:latest"], "Layers": ["good.tar"]})
    (img / "manifest.json").write_text(json.dumps(records))
    return img


def truncated_archive(d: Path, c: Canary) -> Path:
    """An OCI archive (tar) cut in the middle of its last member's data."""
    path = as_tar(oci_dir(d / "img"))
    with tarfile.open(path) as tf:
        last = tf.getmembers()[-1]
    path.write_bytes(path.read_bytes()[: last.offset_data + last.size // 2])
    return path


IMAGE_CASES: list[ImageCase] = [
    ImageCase("layers-absolute", layers_absolute, "layer"),
    ImageCase("layers-dotdot", layers_dotdot, "layer"),
    ImageCase("layers-symlink-out", layers_symlink_out, "layer"),
    ImageCase("config-absolute", config_absolute, "config"),
    ImageCase("config-dev-zero", config_dev_zero, "config"),
    ImageCase("config-symlink-dev-zero", config_symlink_dev_zero, "config"),
    ImageCase("config-deep", config_deep, "config"),
    ImageCase("index-digest-not-hex", index_bad_digest("sha256:xyz"), "digest"),
    ImageCase("index-digest-traversal", index_bad_digest("sha256:../../../../etc/passwd"), "digest"),
    ImageCase("index-digest-md5", index_bad_digest("md5:d41d8cd98f00b204e9800998ecf8427e"), "digest"),
    ImageCase("index-digest-number", index_bad_digest(7), "index.json"),  # type: ignore[arg-type]
    ImageCase("diff-id-mismatch", diff_id_mismatch, "diff_id"),
    ImageCase("truncated-config", truncated_blob("config"), "sha256:"),
    ImageCase("truncated-manifest", truncated_blob("manifest"), "sha256:"),
    ImageCase("truncated-layer", truncated_blob("layer"), "sha256:"),
    ImageCase("truncated-layer-tar", tarred(truncated_blob("layer")), "sha256:"),
    ImageCase("wrong-size-layer", wrong_size("layer", 10), "sha256:"),
    ImageCase("wrong-size-config", wrong_size("config", 1 << 40), "sha256:"),
    ImageCase("negative-size-manifest", wrong_size("manifest", -1), "size -1"),
    ImageCase("corrupt-second-header", corrupt_second_header, "img.tar"),
    ImageCase("corrupt-gzip-layer", corrupt_gzip_layer("bitflip"), "layer"),
    ImageCase("bad-gzip-header-layer", corrupt_gzip_layer("header"), "layer"),
    ImageCase("truncated-archive", truncated_archive, "img.tar"),
    ImageCase("docker-config-not-a-string", docker_config_not_a_string, "Config"),
]
SLOW_IMAGE_CASES = [ImageCase("config-huge", config_huge, "config")]


def main() -> None:
    import sys

    out = Path(sys.argv[1])
    canary = make_canary(out / "canary")
    for case in TAR_CASES:
        folder = out / "tar" / case.name
        folder.mkdir(parents=True, exist_ok=True)
        print(case.name, case.make(folder, canary))
    for icase in IMAGE_CASES:
        folder = out / "image" / icase.name
        folder.mkdir(parents=True, exist_ok=True)
        print(icase.name, icase.make(folder, canary))


if __name__ == "__main__":
    main()


# --- spec files (lamina.toml) ------------------------------------------------------------

@attrs.frozen
class SpecCase:
    """A hostile spec file: ``key`` is what the error must name (exit 2); None: it builds."""

    name: str
    text: Callable[[], bytes]
    key: str | None


SPEC_CASES: list[SpecCase] = [
    SpecCase("deep-array", lambda: b"cmd = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested"),
    SpecCase("deep-inline-table", lambda: b"labels = " + b"{a=" * 3000 + b"1" + b"}" * 3000 + b"\n", "nested"),
    # 40 kB: tomllib keeps every prefix of a dotted key, so memory grows with the square of its depth.
    SpecCase("deep-dotted-key", lambda: b"labels." + b".".join([b"a"] * 20000) + b" = 1\n", "nested more than"),
    SpecCase("not-utf8", lambda: b'workdir = "\xe9"\n', "TOML"),
    SpecCase("nul-byte", lambda: b'workdir = "a\0b"\n', "TOML"),
    SpecCase("layer-not-list", lambda: b'layer = "x"\n', "layer"),
    SpecCase("env-list", lambda: b"env = [1]\n", "env"),
    SpecCase("tags-int", lambda: b"tags = 5\n", "tags"),
    SpecCase("epoch-huge", lambda: b"source_date_epoch = 100000000000000000000000\n", "source_date_epoch"),
    SpecCase("epoch-negative", lambda: b"source_date_epoch = -5\n", "source_date_epoch"),
    SpecCase("expose-bool", lambda: b"expose = [true]\n", "expose[0]"),
    SpecCase("entries-int", lambda: b"[[layer]]\nentries = [1]\n", "layer[0].entries[0]"),
    SpecCase("entries-src-int", lambda: b"[[layer]]\nentries = [{src=1, dst=[]}]\n", "layer[0].entries[0].src"),
    SpecCase("platforms-table", lambda: b"platforms = {a=1}\n", "platforms"),
    SpecCase("tarball-dst-int", lambda: b'[[layer]]\ntarball = "x.tar"\ndst = 5\n', "layer[0].dst"),
    SpecCase("label-table", lambda: b"labels = {a = {b = 1}}\n", "labels.a"),
    SpecCase("entrypoint-nested", lambda: b'entrypoint = [["a"]]\n', "entrypoint"),
    SpecCase("base-image-int", lambda: b"base = {image = 5}\n", "base.image"),
    SpecCase("mode-huge", lambda: b'[[layer]]\nentries = [{src="a", dst="/b", mode="999999999999"}]\n',
             "layer[0].entries[0].mode"),
    SpecCase("user-float", lambda: b"user = 1e400\n", "user"),
    SpecCase("stop-signal-date", lambda: b"stop_signal = 2020-01-01T00:00:00Z\n", "stop_signal"),
    SpecCase("unknown-key", lambda: b"entry_point = 1\n", "entry_point"),
    SpecCase("huge-table", lambda: b"env = {" + b",".join(b'K%d="%d"' % (i, i) for i in range(100_000)) + b"}\n", None),
    SpecCase("huge-string", lambda: b'workdir = "/' + b"a" * (3 << 20) + b'"\n', None),
    SpecCase("over-the-cap", lambda: b'workdir = "/' + b"a" * (16 << 20) + b'"\n', "larger than"),
]
