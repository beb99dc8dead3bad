"""An image's merged filesystem: layers applied in order, whiteouts honoured.

Built from tar headers in one streaming pass over the layers; file data is fetched in a
second pass only for the files a ``--copy-from`` needs. Paths are resolved inside the
image (symlinks in parents followed relative to the image root, never the host); a loop
or a climb above the root is an error. Whiteouts follow the OCI image spec (layer.md):
``.wh.NAME`` hides NAME of lower layers, ``.wh..wh..opq`` hides a directory's lower contents.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from collections.abc import Callable, Iterable
from typing import BinaryIO

import attrs

from lamina.errors import ImageError, InputError
from lamina.layers.entries import Entry, Kind, normalize, parents
from lamina.sources.tarball import _KINDS, layer_tar

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_MAX_LINKS = 40  # as Linux's path resolution


def whiteout_of(path: str) -> tuple[str, bool] | None:
    """What a whiteout entry hides: (directory, True) for an opaque marker, (path, False) for
    ``.wh.NAME``; None for an ordinary entry. The one place whiteout names are read."""
    parent, base = posixpath.split(path)
    if base == OPAQUE:
        return parent, True
    if base.startswith(WHITEOUT):
        return posixpath.join(parent, base[len(WHITEOUT):]), False
    return None


def hidden(path: str, target: str, opaque: bool) -> bool:
    """Whether the whiteout ``(target, opaque)`` hides ``path`` (of a lower layer)."""
    prefix = target + "/" if target else ""
    return path.startswith(prefix) or (not opaque and path == target)


@attrs.frozen(slots=True)
class Node:
    entry: Entry
    layer: int
    # (layer index, member name) of the bytes of a regular file; hardlinks share their target's.
    data: tuple[int, str] | None = None


class MergedFS:
    def __init__(self, name: str) -> None:
        self.name = name
        self.layers = 0  # how many layers have been applied
        self.nodes: dict[str, Node] = {}
        self._has_children: set[str] = set()  # paths something was ever added under

    @classmethod
    def read(cls, name: str, layers: Iterable[Callable[[], BinaryIO]]) -> MergedFS:
        fs = cls(name)
        for index, opener in enumerate(layers):
            fs._apply(index, opener)
            fs.layers = index + 1
        return fs

    def copy(self, name: str) -> MergedFS:
        other = MergedFS(name)
        other.nodes = dict(self.nodes)
        other._has_children = set(self._has_children)
        other.layers = self.layers
        return other

    def _remove_lower(self, path: str, layer: int, *, keep_self: bool = False) -> None:
        for p in [p for p, n in self.nodes.items() if n.layer < layer and hidden(p, path, keep_self)]:
            del self.nodes[p]

    def _apply(self, index: int, opener: Callable[[], BinaryIO]) -> None:
        with opener() as raw:
            try:
                with layer_tar(raw) as archive:
                    for member in archive:
                        self._member(index, member)
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise ImageError(f"{self.name}: layer {index} is not a readable tar ({exc})") from None

    def _member(self, index: int, member: tarfile.TarInfo) -> None:
        path = normalize(member.name, what=f"{self.name}: layer {index} entry")
        kind = _KINDS.get(member.type)
        if kind is None:
            return
        data = None
        size = member.size if kind is Kind.FILE else 0
        if kind is Kind.FILE:
            data = (index, member.name)
        elif kind is Kind.HARDLINK:
            target = self.nodes.get(normalize(member.linkname, what=f"{self.name}: hardlink"))
            if target is None or target.data is None:
                raise ImageError(f"{self.name}: layer {index}: hardlink {member.name!r} to missing {member.linkname!r}")
            data, kind, size = target.data, Kind.FILE, target.entry.size
        entry = Entry(
            path=path, kind=kind, mode=member.mode & 0o7777, uid=member.uid, gid=member.gid, mtime=int(member.mtime),
            size=size, linkname=member.linkname if kind is Kind.SYMLINK else "",
            devmajor=member.devmajor, devminor=member.devminor,
        )
        self.apply(index, entry, data)

    def apply(self, index: int, entry: Entry, data: tuple[int, str] | None = None) -> None:
        """Lay one entry of layer ``index`` over the filesystem (whiteouts included)."""
        path = entry.path
        whiteout = whiteout_of(path)
        if whiteout is not None:
            self._remove_lower(whiteout[0], index, keep_self=whiteout[1])
            return
        if not path:
            return
        if entry.kind is not Kind.DIR and path in self._has_children:
            self._remove_lower(path, index + 1)  # a non-directory replaces a whole subtree
            self._has_children.discard(path)
        self._has_children.update(parents(path))
        self.nodes[path] = Node(entry, index, data)

    # ---- lookups

    def resolve(self, path: str, *, follow_final: bool = True) -> str:
        """The real path of ``path`` in the image, following symlinks inside the image only."""
        done: list[str] = []
        pending = [p for p in path.split("/") if p not in ("", ".")]
        hops = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if not done:
                    raise InputError(f"{self.name}: path {path!r} climbs above the image root")
                done.pop()
                continue
            candidate = "/".join([*done, part])
            node = self.nodes.get(candidate)
            if node is not None and node.entry.kind is Kind.SYMLINK and (pending or follow_final):
                hops += 1
                if hops > _MAX_LINKS:
                    raise InputError(f"{self.name}: too many levels of symbolic links resolving {path!r} (a loop?)")
                target = node.entry.linkname
                if target.startswith("/"):
                    done = []
                pending = [p for p in target.split("/") if p not in ("", ".")] + pending
                continue
            done.append(part)
        return "/".join(done)

    def get(self, path: str) -> Node | None:
        return self.nodes.get(path)

    def subtree(self, path: str) -> list[Node]:
        prefix = path + "/"
        return [n for p, n in sorted(self.nodes.items()) if p.startswith(prefix)]

    def extract(self, wanted: Iterable[Node], openers: list[Callable[[], BinaryIO]], spool: str) -> dict[tuple[int, str], str]:
        """Write the bytes of the wanted files to ``spool``; one file per distinct origin."""
        by_layer: dict[int, set[str]] = {}
        for node in wanted:
            if node.data is not None:
                by_layer.setdefault(node.data[0], set()).add(node.data[1])
        written: dict[tuple[int, str], str] = {}
        for index in sorted(by_layer):
            names = by_layer[index]
            with openers[index]() as raw:
                with layer_tar(raw) as archive:
                    for member in archive:
                        if member.name in names and member.isfile():
                            dest = os.path.join(spool, f"{len(written):08d}")
                            src = archive.extractfile(member)
                            assert src is not None
                            with open(dest, "wb") as out:
                                while chunk := src.read(1 << 20):
                                    out.write(chunk)
                            written[(index, member.name)] = dest
        return written
