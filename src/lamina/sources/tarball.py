"""Rootfs tarballs (``ADD rootfs.tar.gz /``) → entries, streamed in the archive's order.

Compression is detected by magic bytes, never by file name. Member names are normalised
in ``entries.normalize``; owners' numeric ids are kept and names dropped; mtimes are
clamped to the build's epoch. A member escaping the root, or a hardlink to a member not
yet seen, is an error naming the member (a member below a symlink is refused where every
new layer's entries are checked: rootfs.MergedFS.check).

Every tar lamina reads has its headers parsed by ``CheckedHeader`` (extended headers capped,
negative sizes and malformed fields refused, never taken for the end of the archive):
rootfs tarballs here by ``StreamTar`` (bounded memory: members are not kept; a size that runs
past the end of the data is an error instead of an endless skip), stored layers by
``rootfs.walk_layer``. Decompressors' own errors surface as ``tarfile.ReadError``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import sys
import tarfile
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

from lamina.errors import InputError
from lamina.layers.build import Opener
from lamina.layers.entries import Entry, Kind, normalize, parents

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_KINDS = {
    tarfile.REGTYPE: Kind.FILE,
    tarfile.AREGTYPE: Kind.FILE,
    tarfile.CONTTYPE: Kind.FILE,
    tarfile.GNUTYPE_SPARSE: Kind.FILE,  # old GNU sparse: tarfile fills the holes with zeros
    tarfile.LNKTYPE: Kind.HARDLINK,
    tarfile.SYMTYPE: Kind.SYMLINK,
    tarfile.CHRTYPE: Kind.CHAR,
    tarfile.BLKTYPE: Kind.BLOCK,
    tarfile.DIRTYPE: Kind.DIR,
    tarfile.FIFOTYPE: Kind.FIFO,
}


# PAX and GNU long-name headers are read whole into memory by tarfile: a real one is a few
# hundred bytes; a hostile one claims gigabytes of (compressible) records.
MAX_EXTENDED_HEADER = 1 << 20
_EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


def _read_errors() -> tuple[type[BaseException], ...]:
    """What a corrupt archive raises; evaluated when an error is being handled, so the
    decompressors stay unimported until an archive needs them."""
    errors: list[type[BaseException]] = [tarfile.TarError, OSError, EOFError, ValueError]
    for module, name in (("lzma", "LZMAError"), ("zstandard", "ZstdError"), ("zlib", "error"),
                         ("isal.isal_zlib", "error"), ("isal.igzip_lib", "IsalError")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


class CheckedHeader(tarfile.TarInfo):
    """tarfile's header parser, with the sizes it trusts checked first.

    A header block that parsed (its checksum is right) is a member: anything wrong with its
    fields, or with the headers an extended one promises, is a ReadError. tarfile would take
    a HeaderError there for the end of the archive and drop the rest unseen (Debian's 3.11
    raises one for a negative size, which upstream 3.11.7 reads on)."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.size < 0:
            raise tarfile.ReadError(f"member {self.name!r} has a negative size ({self.size})")
        if self.type in _EXTENDED and self.size > MAX_EXTENDED_HEADER:
            kind = "GNU long name" if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK) else "PAX"
            raise tarfile.ReadError(f"a {kind} header of {self.size} bytes (at most {MAX_EXTENDED_HEADER} are read)")
        try:
            member: tarfile.TarInfo = super()._proc_member(tarfile_)  # type: ignore[misc]
        except tarfile.HeaderError as exc:
            raise tarfile.ReadError(f"malformed {self.type!r} header ({exc})") from None
        except (IndexError, ValueError, OverflowError) as exc:  # tarfile's parsers trust lengths (fuzz)
            raise tarfile.ReadError(f"malformed {self.type!r} header ({exc!r})") from None
        if member.size < 0:
            raise tarfile.ReadError(f"member {member.name!r} has a negative size ({member.size})")
        return member


class StreamTar(tarfile.TarFile):
    """A tar read front to back (mode ``r|``) that forgets each member once past it:
    tarfile keeps every header otherwise, and a million tiny members would fill memory."""

    tarinfo = CheckedHeader

    def next(self) -> tarfile.TarInfo | None:
        member = super().next()
        self.members.clear()  # type: ignore[attr-defined]  # typeshed leaves it out
        return member


def detect(head: bytes) -> str:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return "tar"


def open_decompressed(raw: BinaryIO) -> BinaryIO:
    """Wrap a (possibly compressed) stream so it reads as plain tar. A corrupt compressed
    stream raises OSError, as Python's gzip does, whichever decompressor found it, so every
    reader's ``except OSError`` names the file it was reading."""
    try:
        kind = detect(raw.peek(8)[:8] if hasattr(raw, "peek") else b"")
    except tarfile.TarError:
        raise
    except _read_errors() as exc:  # ``raw`` may itself be decompressing (a stored layer)
        raise tarfile.ReadError(f"corrupt compressed data ({exc})") from None
    inner: Any
    if kind == "gzip":
        from isal import igzip

        inner = igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[no-untyped-call]
    elif kind == "xz":
        import lzma

        inner = lzma.LZMAFile(raw)
    elif kind == "bzip2":
        import bz2

        inner = bz2.BZ2File(raw)
    elif kind == "zstd":
        import zstandard

        inner = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    else:
        return raw
    return _Corrupt(inner, kind)  # type: ignore[return-value]  # unbuffered: errors surface at the member read


def read_into(reader: Any, buffer: Any) -> int:
    """One read of ``reader`` into ``buffer``, straight into it where the reader can
    (``readinto``): a stack of stream wrappers that each copied through a bytes object of
    their own spent more CPU on copies than on decompressing and hashing a layer."""
    readinto = getattr(reader, "readinto", None)
    if readinto is not None:
        return int(readinto(buffer) or 0)
    data = reader.read(len(buffer))
    buffer[: len(data)] = data
    return len(data)


class _Corrupt(io.RawIOBase):
    """A decompressor's own exceptions (IsalError, LZMAError, ZstdError, EOFError) as OSError."""

    def __init__(self, inner: Any, kind: str) -> None:
        self._inner, self._kind = inner, kind

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return read_into(self._inner, buffer)
        except OSError:
            raise
        except Exception as exc:  # whatever the decompressor raises on bad input
            raise OSError(f"corrupt {self._kind} data: {exc or type(exc).__name__}") from None

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


class PaddedAtEnd(io.RawIOBase):
    """The decompressed stream as tarfile reads it.

    Adds the zero blocks some writers leave out (umoci insert ends a layer right after the
    last member's data, with no padding and no end-of-archive blocks), so layers that docker
    and containerd accept are read here too (``pad=0``: nothing added, for rootfs tarballs).
    Turns the decompressors' errors into ``tarfile.ReadError``, which every caller handles.
    And ends tarfile's forward seeks past the end of the data: skipping a member whose size
    runs past the end reads on, a buffer at a time, for as long as the size says.
    """

    _EOF_READS = 64  # tarfile asks a few times at a real end; a skip past it asks forever

    def __init__(self, inner: BinaryIO, pad: int = 2 * 512 + 512) -> None:
        self._inner = inner
        self._pad = pad
        self._eof_reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            n = read_into(self._inner, buffer)
        except tarfile.TarError:
            raise
        except _read_errors() as exc:
            raise tarfile.ReadError(f"corrupt compressed data ({exc})") from None
        if not n and self._pad:
            n = min(self._pad, len(buffer))
            self._pad -= n
            buffer[:n] = b"\0" * n
            return n
        if not n:
            self._eof_reads += 1
            if self._eof_reads > self._EOF_READS:
                raise tarfile.ReadError("unexpected end of data (a member's size runs past the end of the archive)")
        return n


class _MemberData(io.RawIOBase):
    """One rootfs tarball member's bytes; a read that fails names the tarball and the member."""

    def __init__(self, inner: BinaryIO | None, path: str, name: str) -> None:
        self._inner, self._path, self._name = inner, path, name

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._inner is None:
            return b""
        try:
            return self._inner.read(size)
        except _read_errors() as exc:
            raise InputError(f"tarball {self._path!r}: member {self._name!r} is truncated or corrupt ({exc})") from None

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def read_tarball(path: str, dst: str, *, epoch: int) -> Iterator[Iterator[tuple[Entry, Opener]]]:
    """Yield the tarball's entries as a stream; each opener must be used before the next entry."""
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise InputError(f"tarball {path!r}: cannot read: {exc.strerror}") from exc
    with raw:
        prefix = normalize(dst, what=f"destination of tarball {path}")
        try:
            # Unbuffered: tarfile reads 10 KiB at a time, so a corrupt stream fails while the
            # member it belongs to is read, and the error can name that member.
            archive = StreamTar.open(fileobj=PaddedAtEnd(open_decompressed(raw), pad=0), mode="r|")
        except _read_errors() as exc:
            raise InputError(f"tarball {path!r}: not a readable tar archive ({exc})") from exc
        with archive:
            yield _entries(path, archive, prefix, epoch)


def _entries(path: str, archive: tarfile.TarFile, prefix: str, epoch: int) -> Iterator[tuple[Entry, Opener]]:
    seen: set[str] = set()
    for parent in ([*parents(prefix), prefix] if prefix else []):
        seen.add(parent)
        yield Entry(parent, Kind.DIR, mode=0o755, mtime=epoch), None
    dirs: set[str] = set()
    try:
        last = None
        for member in archive:
            last = member.name
            for entry, opener in _member(path, archive, member, prefix, epoch, seen, dirs):
                # Archives may omit directories; the layer gets them as 0755 root dirs. Climb only
                # to the first one seen (its own parents were seen before it): linear in depth.
                missing, parent = [], entry.path.rpartition("/")[0]
                while parent and parent not in seen:
                    missing.append(parent)
                    parent = parent.rpartition("/")[0]
                for parent in reversed(missing):
                    seen.add(parent)
                    yield Entry(parent, Kind.DIR, mode=0o755, mtime=epoch), None
                yield entry, opener
        # tarfile takes a corrupt header for the end of the archive: after the end, only zero
        # blocks may follow, and reading on to the end checks a compressed stream's checksum.
        while chunk := archive.fileobj.read(1 << 16):  # type: ignore[union-attr]
            if chunk.count(0) != len(chunk):
                raise InputError(f"tarball {path!r}: corrupt header after member {last!r} (data follows the end of the archive)")
    except _read_errors() as exc:
        after = f" after member {last!r}" if last is not None else ""
        raise InputError(f"tarball {path!r}: truncated or corrupt archive{after} ({exc})") from exc


def _member(path: str, archive: tarfile.TarFile, member: tarfile.TarInfo, prefix: str,
            epoch: int, seen: set[str], dirs: set[str] | None = None) -> Iterator[tuple[Entry, Opener]]:
    dirs = dirs if dirs is not None else set()
    kind = _KINDS.get(member.type)
    if kind is None:
        raise InputError(f"tarball {path!r}: entry {member.name!r} has unsupported type {member.type!r}")
    name = normalize(member.name, what=f"tarball {path!r}: entry")
    if not name:
        return  # the archive's own root ('./'): the destination directory is already there
    full = f"{prefix}/{name}" if prefix else name
    linkname = member.linkname
    if kind is Kind.HARDLINK:
        target = normalize(linkname, what=f"tarball {path!r}: hardlink {member.name!r} ->")
        linkname = f"{prefix}/{target}" if prefix else target
        if linkname not in seen:
            raise InputError(
                f"tarball {path!r}: entry {member.name!r} is a hardlink to {member.linkname!r}, "
                "which is not an earlier member of the archive"
            )
    for what, value, top in (("uid", member.uid, 2**32 - 1), ("gid", member.gid, 2**32 - 1),
                             ("device major", member.devmajor, 0o7777777), ("device minor", member.devminor, 0o7777777)):
        if not 0 <= value <= top:
            raise InputError(f"tarball {path!r}: entry {member.name!r} has {what} {value}, outside 0..{top}")
    if kind is Kind.HARDLINK and linkname in dirs:
        raise InputError(f"tarball {path!r}: entry {member.name!r} is a hardlink to a directory")
    if kind is Kind.DIR:
        dirs.add(full)
    entry = Entry(
        path=full,
        kind=kind,
        mode=member.mode & 0o7777,
        uid=member.uid,
        gid=member.gid,
        mtime=max(0, min(int(member.mtime), epoch)),
        size=member.size if kind is Kind.FILE else 0,
        linkname=linkname if kind in (Kind.HARDLINK, Kind.SYMLINK) else "",
        devmajor=member.devmajor if kind in (Kind.CHAR, Kind.BLOCK) else 0,
        devminor=member.devminor if kind in (Kind.CHAR, Kind.BLOCK) else 0,
    )
    seen.add(full)
    opener: Opener = None
    if kind is Kind.FILE:
        # Read before the next member; a read that fails names the tarball and this member.
        opener = functools.partial(_member_data, archive, member, path)
    yield entry, opener


def _member_data(archive: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> BinaryIO:
    data = archive.extractfile(member)
    if data is None:
        raise InputError(f"tarball {path!r}: member {member.name!r}: no data for a regular file")
    return cast(BinaryIO, _MemberData(data, path, member.name))  # type: ignore[arg-type]  # ExFileObject reads bytes
