import bz2
import gzip
import io
import lzma
import tarfile
from pathlib import Path

import pytest
import zstandard

from lamina.errors import InputError
from lamina.layers.entries import Kind
from lamina.sources.tarball import read_tarball


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "", mtime: int = 5) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mtime = kind, size, link, mtime
    info.uid, info.gid, info.uname, info.gname = 1000, 2000, "alice", "staff"
    info.mode = 0o4755 if kind == tarfile.REGTYPE else 0o755
    return info


SAMPLE = _tar([
    (_info("./", tarfile.DIRTYPE), b""),
    (_info("./bin", tarfile.DIRTYPE), b""),
    (_info("./bin/busybox", size=4, mtime=10**10), b"\x7fELF"),
    (_info("./bin/sh", tarfile.SYMTYPE, link="busybox"), b""),
    (_info("/bin/ls", tarfile.LNKTYPE, link="./bin/busybox"), b""),
])

COMPRESSORS = {
    "tar": lambda b: b,
    "gzip": gzip.compress,
    "xz": lzma.compress,
    "bzip2": bz2.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}


def _read(path: Path, dst: str = "/", epoch: int = 100) -> list[tuple[object, bytes | None]]:
    with read_tarball(str(path), dst, epoch=epoch) as items:
        return [(e, opener().read() if opener else None) for e, opener in items]


@pytest.mark.parametrize("kind", list(COMPRESSORS))
def test_formats_detected_by_magic_not_name(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "rootfs.bin"  # a misleading name on purpose
    path.write_bytes(COMPRESSORS[kind](SAMPLE))
    items = _read(path)
    entries = [e for e, _ in items]
    assert [e.path for e in entries] == ["bin", "bin/busybox", "bin/sh", "bin/ls"]
    busybox = entries[1]
    assert (busybox.uid, busybox.gid, busybox.mode) == (1000, 2000, 0o4755)  # numeric owners kept
    assert busybox.mtime == 100  # clamped to the epoch
    assert entries[0].mtime == 5  # older mtimes kept
    assert items[1][1] == b"\x7fELF"
    assert entries[2].kind is Kind.SYMLINK and entries[2].linkname == "busybox"
    assert entries[3].kind is Kind.HARDLINK and entries[3].linkname == "bin/busybox"


def test_destination_prefix_and_parents(tmp_path: Path) -> None:
    path = tmp_path / "r.tar"
    path.write_bytes(SAMPLE)
    entries = [e for e, _ in _read(path, "/opt/root")]
    assert [e.path for e in entries[:4]] == ["opt", "opt/root", "opt/root/bin", "opt/root/bin/busybox"]
    assert entries[-1].linkname == "opt/root/bin/busybox"


def test_escaping_member_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "evil.tar"
    path.write_bytes(_tar([(_info("../../etc/passwd", size=1), b"x")]))
    with pytest.raises(InputError, match=r"'../../etc/passwd' would land outside the image root"):
        _read(path)


def test_hardlink_to_unseen_member_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "h.tar"
    path.write_bytes(_tar([(_info("a", tarfile.LNKTYPE, link="b"), b""), (_info("b", size=1), b"x")]))
    with pytest.raises(InputError, match=r"entry 'a' is a hardlink to 'b', which is not an earlier member"):
        _read(path)


def test_truncated_and_garbage_archives(tmp_path: Path) -> None:
    path = tmp_path / "t.tar.gz"
    path.write_bytes(gzip.compress(SAMPLE)[:60])
    with pytest.raises(InputError, match="tarball"):
        _read(path)
    path.write_bytes(b"this is not a tarball at all" * 40)
    with pytest.raises(InputError, match="tarball"):
        _read(path)
