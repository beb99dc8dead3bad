"""A lean, deterministic tar header writer (POSIX ustar, PAX records when needed).

Python's ``tarfile`` is correct but slow per member and leaves choices (PAX record order,
float mtimes, user names) to its caller; writing the 512-byte header here keeps every
byte decided in one place. Format: POSIX.1-2001 (pax) as GNU tar and Go's archive/tar read it.
"""

from __future__ import annotations

from lamina.layers.entries import Entry, Kind

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
_MAX_OCTAL = {8: 0o7777777, 12: 0o77777777777}


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _fits(value: int, width: int) -> bool:
    return 0 <= value <= _MAX_OCTAL[width]


def _utf8(text: str) -> bool:
    """Whether a name's bytes are UTF-8: names that are not arrive surrogate-escaped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode("utf-8", "surrogateescape")
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def _header(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
            typeflag: bytes, linkname: bytes, devmajor: int, devminor: int) -> bytes:
    head = b"".join((
        name.ljust(100, b"\0"),
        _octal(mode, 8),
        _octal(uid, 8),
        _octal(gid, 8),
        _octal(size, 12),
        _octal(mtime, 12),
        b"        ",  # checksum placeholder: eight spaces
        typeflag,
        linkname.ljust(100, b"\0"),
        b"ustar\x0000",
        b"\0" * 32,  # uname: never written, so no host user name leaks in
        b"\0" * 32,  # gname
        _octal(devmajor, 8),
        _octal(devminor, 8),
        b"\0" * 155,  # prefix: long names go to PAX records instead
        b"\0" * 12,
    ))
    checksum = b"%06o\0 " % sum(head)
    return head[:148] + checksum + head[156:]


def header(entry: Entry) -> bytes:
    """The header block(s) for one entry: a PAX 'x' header first when ustar cannot say it."""
    # Names that are not UTF-8 on the host arrive surrogate-escaped: write their bytes as they were.
    name = entry.tar_name.encode("utf-8", "surrogateescape")
    link = entry.linkname.encode("utf-8", "surrogateescape")
    size = entry.size if entry.kind is Kind.FILE else 0
    pax: list[bytes] = []
    # Names whose bytes are not UTF-8 go in the ustar fields as they are, as GNU tar writes
    # them; only when too long for those do they need PAX records, which are UTF-8 unless
    # hdrcharset=BINARY says otherwise (POSIX).
    pax_link = len(link) > 100 or (not entry.linkname.isascii() and _utf8(entry.linkname))
    pax_name = len(name) > 100 or (not entry.tar_name.isascii() and _utf8(entry.tar_name))
    binary = (pax_link and not _utf8(entry.linkname)) or (pax_name and not _utf8(entry.tar_name))
    # Records in a fixed order (alphabetical by key), so the bytes never depend on dict order.
    if not _fits(entry.gid, 8):
        pax.append(_pax_record("gid", str(entry.gid)))
    if binary:
        pax.append(_pax_record("hdrcharset", "BINARY"))
    if pax_link:
        pax.append(_pax_record("linkpath", entry.linkname))
    if pax_name:
        pax.append(_pax_record("path", entry.tar_name))
    if not _fits(size, 12):
        pax.append(_pax_record("size", str(size)))
    if not _fits(entry.uid, 8):
        pax.append(_pax_record("uid", str(entry.uid)))
    if not _fits(entry.mtime, 12):
        raise ValueError(f"mtime out of range for {entry.path!r}")

    main = _header(
        name[:100] if len(name) <= 100 else name[:99],
        entry.mode & 0o7777,
        entry.uid if _fits(entry.uid, 8) else 0,
        entry.gid if _fits(entry.gid, 8) else 0,
        size if _fits(size, 12) else 0,
        entry.mtime,
        entry.kind.value,
        link[:100],
        entry.devmajor,
        entry.devminor,
    )
    if not pax:
        return main
    body = b"".join(pax)
    pax_header = _header(b"././@PaxHeader", 0o644, 0, 0, len(body), entry.mtime, b"x", b"", 0, 0)
    return pax_header + body + padding(len(body)) + main


def padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)
