"""Tar entries as lamina writes them, and the one place paths are normalised."""

from __future__ import annotations

import enum
import posixpath

import attrs

from lamina.errors import UnsafePathError


class Kind(enum.Enum):
    """Entry kinds, valued by their tar typeflag."""

    FILE = b"0"
    HARDLINK = b"1"
    SYMLINK = b"2"
    CHAR = b"3"
    BLOCK = b"4"
    DIR = b"5"
    FIFO = b"6"

    @property
    def noun(self) -> str:
        """What the kind is called in a message ("a symlink", never "a file" for one)."""
        return _NOUNS[self]


_NOUNS = {
    Kind.FILE: "a file", Kind.HARDLINK: "a hardlink", Kind.SYMLINK: "a symlink", Kind.CHAR: "a character device",
    Kind.BLOCK: "a block device", Kind.DIR: "a directory", Kind.FIFO: "a FIFO",
}


@attrs.frozen(slots=True)
class Entry:
    """One member of a layer; ``path`` is normalised (no leading ``/`` or ``./``, never empty)."""

    path: str
    kind: Kind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    # Where the bytes of a FILE come from on the host; None for entries whose data
    # the source streams itself (tarball members) or that have none.
    source: str | None = None

    @property
    def tar_name(self) -> str:
        return self.path + "/" if self.kind is Kind.DIR else self.path


def normalize(path: str, *, what: str = "path") -> str:
    """Turn any member or destination path into lamina's canonical form, or refuse it.

    ``./a//b/`` → ``a/b``; ``/`` → ``""`` (the root); any ``..`` that climbs above the
    root is an error naming the path, because the entry would land outside the image.
    """
    if "\x00" in path:
        raise UnsafePathError(f"{what} {path!r} contains a NUL byte")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise UnsafePathError(f"{what} {path!r} would land outside the image root")
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def display(path: str) -> str:
    """A path as text that can be printed or put in JSON: bytes that are not UTF-8 (which
    tarfile and os.fsdecode carry as lone surrogates, and which JSON cannot hold) become
    ``\\xNN`` escapes, so ``caf\\xe9`` shows the byte the name really has."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def parents(path: str) -> list[str]:
    """Every ancestor directory of a normalised path, outermost first."""
    out = []
    head = posixpath.dirname(path)
    while head:
        out.append(head)
        head = posixpath.dirname(head)
    return out[::-1]
