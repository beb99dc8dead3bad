"""An image's merged filesystem: layers applied in order, whiteouts honoured.

The one reading of "an image's filesystem": build's lint and essentials, ``inspect``'s size
report, the SBOM and ``diff`` all read layers through ``walk_layer`` and merge them here.
Member names are normalised by ``entries.normalize`` (``./x``, ``x/`` and ``/x`` are one
path). Whiteouts follow the OCI image spec (layer.md): ``.wh.NAME`` hides NAME of lower
layers, ``.wh..wh..opq`` hides a directory's lower contents; a non-directory replaces a
whole subtree. Each node keeps its owning layer and size, and each layer counts the bytes
that later layers delete or overwrite ("wasted").

Built from tar headers in one streaming pass over the layers; file data is fetched in a
second pass only for the files a ``--copy-from`` needs. Paths are resolved inside the
image (symlinks in parents followed relative to the image root, never the host); a loop
or a climb above the root is an error. Lookups are indexed (a children set per directory),
so building, resolving and subtree walks cost what the paths involved cost, never a scan.

New layers pass ``check`` before they are laid: entries that consumers (docker, containerd,
podman, tar) would extract differently or not at all are refused, naming the entry.
"""

from __future__ import annotations

import io
import os
import posixpath
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

import attrs

from lamina.errors import ImageError, InputError, UnsafePathError
from lamina.layers.entries import Entry, Kind, normalize

if TYPE_CHECKING:  # tarfile and the tar reader: for images read from layers, not files from the host
    import tarfile

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_MAX_LINKS = 40  # as Linux's path resolution
NAME_MAX = 255  # bytes in one path component (Linux)
PATH_MAX = 4095  # bytes in a path, without its terminating NUL (Linux)

# Where the bytes of a regular file live: (layer index, member name as stored in the tar).
Origin = tuple[int, str]
# Called for every member of every layer read: (layer index, normalised path, member, archive);
# the data of a regular member (not a hardlink) can be read with archive.extractfile(member)
# until the next member.
Visit = Callable[[int, str, "tarfile.TarInfo", "tarfile.TarFile"], None]


def whiteout_of(path: str) -> tuple[str, bool] | None:
    """What a whiteout entry hides: (directory, True) for an opaque marker, (path, False) for
    ``.wh.NAME``; None for an ordinary entry. The one place whiteout names are read."""
    parent, base = posixpath.split(path)
    if base == OPAQUE:
        return parent, True
    if base.startswith(WHITEOUT):
        return posixpath.join(parent, base[len(WHITEOUT):]), False
    return None


class _Counted(io.RawIOBase):
    """Counts the (uncompressed) bytes read through it."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        from lamina.sources.tarball import read_into  # once per chunk read: nothing beside the copy

        n = read_into(self._inner, buffer)
        self.count += n
        return n


class _Forward(io.RawIOBase):
    """A layer's tar stream as tarfile reads it, seekable forwards: opened ``r:`` rather than
    ``r|``, tarfile skips a member's data in one seek, dropped here a megabyte per read, where
    its stream mode reads it 10 KiB per Python call (30,000 calls to skip a 300 MB layer's
    files). A seek backwards is refused, as the stream mode refuses it; one past the end stops
    there, and tarfile's next read says the data ended early."""

    _DROP = 1 << 20

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self._at = 0
        self._scratch: bytearray | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def readinto(self, buffer: Any) -> int:
        from lamina.sources.tarball import read_into

        n = read_into(self._inner, buffer)
        self._at += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        from lamina.sources.tarball import read_into

        if whence == io.SEEK_CUR:
            offset += self._at
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a layer stream cannot seek from its end")
        if offset < self._at:
            raise io.UnsupportedOperation("a layer stream cannot seek backwards")
        if self._scratch is None:
            self._scratch = bytearray(self._DROP)
        view = memoryview(self._scratch)
        while self._at < offset:
            n = read_into(self._inner, view[: min(self._DROP, offset - self._at)])
            if not n:
                break
            self._at += n
        return self._at


class _Ahead(io.BufferedReader):
    """The buffered layer stream, forward only too: io.BufferedReader serves a seek back into
    its buffer without asking _Forward, and tarfile's ``r:`` mode seeks wherever a header's
    size says (a negative size re-read the same header forever; a negative sparse block read
    earlier bytes as a file's). A valid layer is never read backwards."""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        import tarfile

        at = self.tell()
        target = offset + at if whence == io.SEEK_CUR else offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < at:
            raise tarfile.ReadError("a member's size or sparse map points backwards")
        if target >= 1 << 62:  # past any layer, and past what io can seek to (a ValueError)
            raise tarfile.ReadError("unexpected end of data (a member's size runs past the end of the archive)")
        return super().seek(target)


def walk_layer(opener: Callable[[], BinaryIO], what: str,
               visit: Callable[[str, tarfile.TarInfo, tarfile.TarFile], None]) -> int:
    """Stream one stored layer (any compression): ``visit(normalised path, member, archive)`` for
    every member, in order. Returns the layer's uncompressed size."""
    import tarfile

    from lamina.sources.tarball import CheckedHeader, PaddedAtEnd, open_decompressed

    raw = opener()
    try:
        readable: Any = raw if hasattr(raw, "peek") else io.BufferedReader(raw, 1 << 20)  # type: ignore[type-var]
        try:
            plain = _Counted(open_decompressed(readable))
            stream: Any = _Ahead(_Forward(PaddedAtEnd(plain)), 1 << 20)  # type: ignore[arg-type]
            # CheckedHeader: extended headers capped, negative sizes and malformed fields refused.
            with tarfile.open(fileobj=stream, mode="r:", tarinfo=CheckedHeader) as archive:
                last = None
                for member in archive:
                    last = member.name
                    visit(normalize(member.name, what=f"{what} entry"), member, archive)
                # Read to the end, so a verifying opener checks the digest. tarfile takes a corrupt
                # header for the end of the archive: after the end only zero blocks may follow.
                while chunk := archive.fileobj.read(1 << 20):  # type: ignore[union-attr]
                    if chunk.count(0) != len(chunk):
                        raise ImageError(f"{what}: corrupt tar header after member {last!r} (data follows the end of the archive)")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ImageError(f"{what} is not a readable tar ({exc})") from None
    except BaseException:
        try:
            raw.close()  # a verifying stream's complaint on close must not hide the first error
        except Exception:
            pass
        raise
    raw.close()
    return plain.count


def member_kind(member: tarfile.TarInfo, kinds: dict[bytes, Kind], where: str) -> Kind:
    """A layer member's kind (``kinds``: sources.tarball's table of tar types), or ImageError
    for a type docker cannot extract. GNU sparse ('S') is a regular file to docker and to
    tarfile: skipping it hid the file from lint, the SBOM, diff and --copy-from."""
    kind = Kind.FILE if member.isreg() else kinds.get(member.type)
    if kind is None:
        raise ImageError(f"{where}: entry {member.name!r} has unsupported type {member.type!r}")
    return kind


class Node(NamedTuple):
    """One path of the merged filesystem. A named tuple, not an attrs class: a merged
    filesystem makes one per entry of every layer, and a frozen attrs instance costs several
    times a tuple to create (12,000 entries: 45 ms of a rebuild, profiled)."""

    entry: Entry  # path normalised; a hardlink is a FILE with its target's size
    layer: int  # the layer that wrote it
    # (layer index, member name) of the bytes of a regular file; hardlinks share their target's.
    data: Origin | None = None
    # Whose bytes these are, for size accounting: ``data``, or for a file added from the host
    # (no stored member yet) the layer and path that first added them.
    origin: Origin | None = None

    @property
    def size(self) -> int:
        return self.entry.size


class MergedFS:
    def __init__(self, name: str) -> None:
        self.name = name
        self.layers = 0  # how many layers have been applied
        self.nodes: dict[str, Node] = {}
        # Every directory something lies under (listed or only implied by its children,
        # "" the root) -> the paths directly in it. Lookups walk this, never all nodes.
        self._children: dict[str, set[str]] = {"": set()}
        self.unpacked: list[int] = []  # per layer read: its uncompressed tar size
        self._wasted: list[int] = []
        # Per stored file's bytes: (layer, size) and how many nodes show them.
        self._bytes: dict[Origin, tuple[int, int]] = {}
        self._refs: dict[Origin, int] = {}

    @classmethod
    def read(cls, name: str, layers: Iterable[Callable[[], BinaryIO]], visit: Visit | None = None) -> MergedFS:
        fs = cls(name)
        for index, opener in enumerate(layers):
            fs.read_layer(index, opener, visit)
        return fs

    def read_layer(self, index: int, opener: Callable[[], BinaryIO], visit: Visit | None = None) -> None:
        """Lay a stored layer over the filesystem; ``visit`` sees each member too."""
        from lamina.sources.tarball import _KINDS

        def member(path: str, m: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
            self._member(index, path, m, _KINDS)
            if visit is not None:
                visit(index, path, m, archive)

        self.unpacked.append(walk_layer(opener, f"{self.name}: layer {index}", member))
        self.layers = index + 1

    def copy(self, name: str) -> MergedFS:
        other = MergedFS(name)
        other.nodes = dict(self.nodes)
        other._children = {p: set(c) for p, c in self._children.items()}
        other.layers = self.layers
        other.unpacked = list(self.unpacked)
        other._wasted = list(self._wasted)
        other._bytes = dict(self._bytes)
        other._refs = dict(self._refs)
        return other

    # ---- sizes

    @property
    def size(self) -> int:
        """Bytes of file data a container sees (hardlinked bytes counted once)."""
        return sum(self._bytes[o][1] for o, n in self._refs.items() if n)

    @property
    def wasted(self) -> list[int]:
        """Per layer: the bytes of its files that later entries delete or overwrite."""
        return [self.wasted_in(i) for i in range(self.layers)]

    def wasted_in(self, layer: int) -> int:
        return self._wasted[layer] if layer < len(self._wasted) else 0

    def _waste(self, layer: int, size: int) -> None:
        if layer >= len(self._wasted):
            self._wasted.extend([0] * (layer + 1 - len(self._wasted)))
        self._wasted[layer] += size

    # ---- building

    def _member(self, index: int, path: str, member: tarfile.TarInfo, kinds: dict[bytes, Kind]) -> None:
        kind = member_kind(member, kinds, f"{self.name}: layer {index}")
        linkname = ""
        if kind is Kind.SYMLINK:
            linkname = member.linkname
        elif kind is Kind.HARDLINK:
            linkname = normalize(member.linkname, what=f"{self.name}: hardlink")
        entry = Entry(
            path=path, kind=kind, mode=member.mode & 0o7777, uid=member.uid, gid=member.gid, mtime=int(member.mtime),
            size=member.size if kind is Kind.FILE else 0, linkname=linkname,
            devmajor=member.devmajor, devminor=member.devminor,
        )
        self.apply(index, entry, (index, member.name) if kind is Kind.FILE else None)

    def apply(self, index: int, entry: Entry, data: Origin | None = None) -> None:
        """Lay one entry of layer ``index`` over the filesystem (whiteouts included).
        A regular file without ``data`` (added from the host) owns bytes named by its path."""
        if index >= self.layers:
            self.layers = index + 1
        path = entry.path
        whiteout = whiteout_of(path) if WHITEOUT in path else None
        if whiteout is not None:
            target, opaque = whiteout
            self._prune(target, below=index, with_root=not opaque)
            return
        if not path:
            return
        hardlink = entry.kind is Kind.HARDLINK
        origin = data
        if hardlink:
            linked = self.nodes.get(entry.linkname)
            if linked is None or linked.entry.kind is not Kind.FILE:
                raise ImageError(f"{self.name}: layer {index}: hardlink {path!r} to missing {entry.linkname!r}")
            data, origin = linked.data, linked.origin
            entry = attrs.evolve(entry, kind=Kind.FILE, size=linked.entry.size, linkname="", source=linked.entry.source)
        elif entry.kind is Kind.FILE and data is None:
            origin = (index, "\0" + path)  # a host file's bytes: no tar member name can equal this
        old = self.nodes.get(path)
        if path in self._children and (entry.kind is not Kind.DIR or (old is not None and old.entry.kind is not Kind.DIR)):
            self._prune(path, below=None, with_root=False)  # a non-directory replaces a whole subtree
        if old is not None:
            self._unref(old)
        if origin is not None:
            if not hardlink and origin[0] == index or origin not in self._bytes:
                self._bytes[origin] = (origin[0], entry.size)  # a same-named member before it: wasted above
            self._refs[origin] = self._refs.get(origin, 0) + 1
        self.nodes[path] = Node(entry, index, data, origin)
        self._link(path)

    def _link(self, path: str) -> None:
        """Record path in its parent's children, and the parent in its own, up to a known one."""
        while path:
            parent = path.rpartition("/")[0]
            siblings = self._children.get(parent)
            if siblings is not None:
                siblings.add(path)
                return
            self._children[parent] = {path}
            path = parent

    def _unref(self, node: Node) -> None:
        if node.origin is None:
            return
        left = self._refs[node.origin] - 1
        self._refs[node.origin] = left
        if not left:
            layer, size = self._bytes[node.origin]
            self._waste(layer, size)

    def _prune(self, root: str, *, below: int | None, with_root: bool) -> None:
        """Remove the nodes under ``root`` (and root itself if ``with_root``) written by layers
        before ``below`` (all when None); directories left with nothing in them and no node
        of their own are forgotten."""
        order = self._walk(root)
        if not with_root:
            order = order[1:]
        for path in reversed(order):  # children before their directory
            node = self.nodes.get(path)
            if node is not None and (below is None or node.layer < below):
                del self.nodes[path]
                self._unref(node)
            if path not in self.nodes and not self._children.get(path) and path:
                self._children.pop(path, None)
                parent = self._children.get(path.rpartition("/")[0])
                if parent is not None:
                    parent.discard(path)

    def _walk(self, root: str) -> list[str]:
        """``root`` (if it exists) and every path under it, parents before children."""
        if root not in self.nodes and root not in self._children:
            return []
        order, stack = [], [root]
        while stack:
            path = stack.pop()
            order.append(path)
            stack.extend(self._children.get(path, ()))
        return order

    # ---- consumer-extraction checks

    def check(self, entry: Entry, what: str = "") -> None:
        """Refuse an entry of a new layer that consumers would extract differently (through a
        symlink: docker follows it inside the root, tar writes through it, containerd refuses)
        or not at all (under a regular file, a name over NAME_MAX, a path over PATH_MAX)."""
        where = f"{what}: " if what else ""
        path = entry.path
        if 4 * len(path) > NAME_MAX:  # a character is at most 4 bytes: shorter paths need no count
            raw = path.encode("utf-8", "surrogateescape")
            if len(raw) + 1 > PATH_MAX:
                raise InputError(f"{where}/{path[:60]}...: the path is {len(raw) + 1} bytes; Linux allows {PATH_MAX}")
            parts = raw.split(b"/")
            for part in parts if max(map(len, parts)) > NAME_MAX else ():
                if len(part) > NAME_MAX:
                    raise InputError(f"{where}/{path}: the name {part[:40].decode(errors='replace')}... is {len(part)} bytes; "
                                     f"Linux allows {NAME_MAX}")
        if 4 * len(entry.linkname) > PATH_MAX and len(entry.linkname.encode("utf-8", "surrogateescape")) > PATH_MAX:
            raise InputError(f"{where}/{path}: the link target is over {PATH_MAX} bytes; Linux allows {PATH_MAX}")
        parent = path.rpartition("/")[0]
        while parent:
            node = self.nodes.get(parent)
            if node is not None:
                kind = node.entry.kind
                if kind is Kind.DIR:
                    return
                if kind is Kind.SYMLINK:
                    raise UnsafePathError(
                        f"{where}/{path} would be written through the symlink /{parent} -> {node.entry.linkname}: "
                        "docker, containerd and tar disagree on where it lands; add it at the symlink's target")
                raise InputError(f"{where}/{path} is under /{parent}, which is not a directory "
                                 f"(a {kind.name.lower()} of layer {node.layer})")
            if parent in self._children:
                return  # a directory implied by entries already laid
            parent = parent.rpartition("/")[0]

    def lay(self, index: int, entry: Entry, what: str = "") -> None:
        """``check`` then ``apply``: how every new layer's entries join the tree below them."""
        self.check(entry, what)
        self.apply(index, entry)

    # ---- lookups

    def resolve(self, path: str, *, follow_final: bool = True) -> str:
        """The real path of ``path`` in the image, following symlinks inside the image only."""
        done: list[str] = []  # the real path so far, one string per depth
        pending = [p for p in reversed(path.split("/")) if p not in ("", ".")]  # next part last
        hops = 0
        while pending:
            part = pending.pop()
            if part == "..":
                if not done:
                    raise InputError(f"{self.name}: path {path!r} climbs above the image root")
                done.pop()
                continue
            candidate = f"{done[-1]}/{part}" if done else part
            node = self.nodes.get(candidate)
            if node is not None and node.entry.kind is Kind.SYMLINK and (pending or follow_final):
                hops += 1
                if hops > _MAX_LINKS:
                    raise InputError(f"{self.name}: too many levels of symbolic links resolving {path!r} (a loop?)")
                target = node.entry.linkname
                if target.startswith("/"):
                    done = []
                pending.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
                continue
            done.append(candidate)
        return done[-1] if done else ""

    def get(self, path: str) -> Node | None:
        return self.nodes.get(path)

    def exists(self, path: str) -> bool:
        """Whether ``path`` is in the image as a node or as a directory implied by its contents."""
        return path in self.nodes or path in self._children

    def children(self, path: str) -> list[str]:
        """The paths directly in directory ``path``, sorted."""
        return sorted(self._children.get(path, ()))

    def subtree(self, path: str) -> list[Node]:
        """Every node under ``path`` (not path itself), sorted by path."""
        under = self._walk(path)[1:]
        return [self.nodes[p] for p in sorted(under) if p in self.nodes]

    def files(self) -> dict[str, Node]:
        """The regular files a container sees (hardlinks included), by path."""
        return {p: n for p, n in self.nodes.items() if n.entry.kind is Kind.FILE}

    def extract(self, wanted: Iterable[Node], openers: list[Callable[[], BinaryIO]], spool: str) -> dict[Origin, str]:
        """Write the bytes of the wanted files to ``spool``; one file per distinct origin."""
        by_layer: dict[int, set[str]] = {}
        for node in wanted:
            if node.data is not None:
                by_layer.setdefault(node.data[0], set()).add(node.data[1])
        written: dict[Origin, str] = {}
        for index in sorted(by_layer):
            names = by_layer[index]

            def member(_path: str, m: tarfile.TarInfo, archive: tarfile.TarFile, index: int = index,
                       names: set[str] = names) -> None:
                if m.name in names and m.isfile():
                    dest = os.path.join(spool, f"{len(written):08d}")
                    src = archive.extractfile(m)
                    assert src is not None
                    with open(dest, "wb") as out:
                        while chunk := src.read(1 << 20):
                            out.write(chunk)
                    written[(index, m.name)] = dest

            walk_layer(openers[index], f"{self.name}: layer {index}", member)
        return written
