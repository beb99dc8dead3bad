"""Host files and trees, and files from other images → entries, with Dockerfile COPY semantics.

A destination ending in ``/`` means "into this directory"; a directory source copies its
contents; the source path itself is followed if it is a symlink, but symlinks inside a
tree stay symlinks; files sharing an inode within one layer become tar hardlinks to the
first path in sorted order; missing parents become 0755 root-owned directories, while
parents the base image already has keep the base's metadata, and a destination under a
base symlink (``/bin`` → ``usr/bin``) is resolved inside the base as docker does.
Host entries get the build's epoch as mtime (set, not clamped: host mtimes never leak);
entries from images keep theirs, clamped to it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import stat
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, BinaryIO

import attrs

from lamina.errors import InputError
from lamina.layers.entries import Entry, Kind, normalize
from lamina.sources.rootfs import WHITEOUT, MergedFS, Node

if TYPE_CHECKING:
    from typing import Protocol

    from lamina.layers.build import Opener

    class Walked(Protocol):
        """A walk of the host inputs, taken once per build (lamina.depfile.Inputs)."""

        @property
        def taken_ns(self) -> int: ...

        def listing(self, directory: str) -> list[tuple[str, str, os.stat_result]] | None: ...

        def stat(self, path: str) -> os.stat_result | None: ...


@attrs.frozen
class AddSpec:
    """One ``--add SRC:DST[:MODE]`` (or a spec file entry)."""

    src: str
    dst: str
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    sha256: str | None = None  # hermetic pin of the source's content
    key: str = ""  # the source as the user wrote it: how lamina.lock names it
    # A spec entry's per-platform sources: ((platform, path), ...); src is then a placeholder.
    per_platform: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        """For history: the source's base name only, so where the checkout lives never
        reaches the digest (an absolute path from a Makefile would otherwise)."""
        mode = f" (mode {self.mode:04o})" if self.mode is not None else ""
        return f"{os.path.basename(os.path.normpath(self.src))} -> {self.dst}{mode}"


@attrs.frozen
class CopyFromSpec:
    """One ``--copy-from IMAGE:SRC:DST`` (spec: ``{from, src, dst}``): COPY --from."""

    image: str
    src: str
    dst: str
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    sha256: str | None = None  # hermetic pin of the image archive
    key: str = ""

    def describe(self) -> str:
        return f"{self.src} from {os.path.basename(self.image.rstrip('/'))} -> {self.dst}"


Source = AddSpec | CopyFromSpec


@attrs.define
class LayerContext:
    """What every layer of one build shares: workdir, epoch, the base's filesystem, images."""

    workdir: str = ""
    epoch: int = 0
    base: MergedFS | None = None
    # Returns the merged filesystem of an image named in --copy-from, plus its layer openers.
    open_image: Callable[[str], tuple[MergedFS, list[Callable[[], BinaryIO]]]] | None = None
    spool: str = ""
    shuffle: bool = False  # walk directories in random order (--check-reproducible proves it does not matter)
    # The build's walk of its host inputs (lamina.depfile.Inputs): trees are laid out from the
    # stats it took; None, or a directory it did not list: scandir now.
    walked: Walked | None = None
    # What the image below is (the base's config digest, "" for scratch); None: not known
    # (the essentials layer, on the layers just built), and no tree stamp is taken.
    below: str | None = ""

    def dest(self, path: str) -> str:
        """Resolve a destination's parent directories through the base's symlinks."""
        if self.base is None or not path:
            return path
        head, tail = posixpath.split(path)
        return posixpath.join(self.base.resolve(head), tail) if head else path


@attrs.frozen
class _Found:
    entry: Entry
    inode: tuple[int, int] | None  # files that share bytes: (st_dev, st_ino)


def _error(spec: AddSpec, path: str, exc: OSError) -> InputError:
    return InputError(f"add {spec.src}:{spec.dst}: cannot read {path!r}: {exc.strerror}")


def _entry_for(spec: AddSpec, host: str, dest: str, st: os.stat_result, epoch: int) -> _Found:
    """One host path as an entry (built directly: this runs once per file of every tree added)."""
    mode, uid, gid = spec.mode if spec.mode is not None else st.st_mode & 0o7777, spec.uid, spec.gid
    kind = st.st_mode & 0o170000
    if kind == stat.S_IFREG:
        inode = (st.st_dev, st.st_ino) if st.st_nlink > 1 else None
        return _Found(Entry(dest, Kind.FILE, mode, uid, gid, epoch, st.st_size, source=host), inode)
    if kind == stat.S_IFDIR:
        return _Found(Entry(dest, Kind.DIR, mode, uid, gid, epoch), None)
    if kind == stat.S_IFLNK:
        try:
            target = os.readlink(host)
        except OSError as exc:
            raise _error(spec, host, exc) from exc
        return _Found(Entry(dest, Kind.SYMLINK, 0o777, uid, gid, epoch, linkname=target), None)
    if kind == stat.S_IFIFO:
        return _Found(Entry(dest, Kind.FIFO, mode, uid, gid, epoch), None)
    raise InputError(f"add {spec.src}:{spec.dst}: {host!r} is a socket or device; lamina adds files, directories and symlinks")


def _walk(spec: AddSpec, host_dir: str, dest_dir: str, ctx: LayerContext) -> Iterable[_Found]:
    children = ctx.walked.listing(host_dir) if ctx.walked is not None else None
    if children is None:
        try:
            with os.scandir(host_dir) as it:
                found = sorted(it, key=lambda e: e.name)
            children = [(child.name, child.path, child.stat(follow_symlinks=False)) for child in found]
        except OSError as exc:
            raise _error(spec, getattr(exc, "filename", None) or host_dir, exc) from exc
    if ctx.shuffle:
        import random

        children = list(children)
        random.shuffle(children)
    for name, path, st in children:
        dest = f"{dest_dir}/{name}" if dest_dir else name
        yield _entry_for(spec, path, dest, st, ctx.epoch)
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(spec, path, dest, ctx)


@attrs.frozen
class TreeStamp:
    """A layer's host sources by their stats: an equal stamp means equal entries."""

    digest: str
    trusted: bool  # every stat in it was older than a second when the walk began ("racy clean")


def tree_stamp(specs: Iterable[Source], ctx: LayerContext, settings: str) -> TreeStamp | None:
    """The stamp of a layer whose sources are all host paths the build's walk met: every
    source spec, each path's stat (mode, size, mtime, ctime, inode, device, links), the
    layer's context and ``settings``. A rebuild with the stamp it had can take the layer's
    entries and cache key as they were, with no entry built and no file hashed (as git's
    index spares unchanged files). None when a source is not such a path."""
    walked = ctx.walked
    if walked is None or ctx.below is None or ctx.shuffle:
        return None
    parts = [f"lamina-tree-1\0{settings}\0{ctx.workdir}\0{ctx.epoch}\0{ctx.below}\0{os.getcwd()}\n"]
    newest = 0
    for spec in specs:
        if not isinstance(spec, AddSpec):
            return None
        top = walked.stat(spec.src)
        if top is None or stat.S_ISLNK(top.st_mode):  # a symlink met inside another tree: not what the build follows
            return None
        parts.append(f"{spec!r}\0{top.st_mode}:{top.st_size}:{top.st_mtime_ns}:{top.st_ctime_ns}:{top.st_ino}:"
                     f"{top.st_dev}:{top.st_nlink}\n")
        newest = max(newest, top.st_ctime_ns)
        pending = [spec.src] if stat.S_ISDIR(top.st_mode) else []
        while pending:
            children = walked.listing(pending.pop())
            if children is None:
                return None
            for _, path, st in children:
                parts.append(f"{path}\0{st.st_mode}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:"
                             f"{st.st_dev}:{st.st_nlink}\n")
                if st.st_ctime_ns > newest:
                    newest = st.st_ctime_ns
                if stat.S_ISDIR(st.st_mode):
                    pending.append(path)
    digest = hashlib.sha256("".join(parts).encode("utf-8", "surrogateescape")).hexdigest()
    return TreeStamp(digest, newest < walked.taken_ns - 1_000_000_000)


def _destination(dst: str, workdir: str, what: str) -> tuple[str, bool]:
    """Normalised destination and whether it names a directory to copy into."""
    full = dst if dst.startswith("/") else posixpath.join(workdir or "/", dst)
    into_dir = dst.endswith(("/", "/.")) or dst == "."
    return normalize(full, what=f"{what}: destination"), into_dir


def collect(spec: AddSpec, ctx: LayerContext) -> list[_Found]:
    """Everything one --add puts in the image, unsorted, without parent directories."""
    try:
        st = os.stat(spec.src)  # the source itself is followed, as docker COPY does
    except OSError as exc:
        raise InputError(f"add {spec.src}:{spec.dst}: cannot read {spec.src!r}: {exc.strerror}") from exc
    if not os.access(spec.src, os.R_OK):
        raise InputError(f"add {spec.src}:{spec.dst}: cannot read {spec.src!r}: Permission denied")
    dest, into_dir = _destination(spec.dst, ctx.workdir, f"add {spec.src}:{spec.dst}")
    if stat.S_ISDIR(st.st_mode):
        dest = ctx.base.resolve(dest) if ctx.base is not None and dest else dest
        found = [_Found(Entry(dest, Kind.DIR, mode=spec.mode or 0o755, uid=spec.uid, gid=spec.gid, mtime=ctx.epoch), None)] if dest else []
        found.extend(_walk(spec, spec.src, dest, ctx))
        return found
    if into_dir:
        name = os.path.basename(os.path.normpath(spec.src))
        dest = f"{dest}/{name}" if dest else name
    return [_entry_for(spec, spec.src, ctx.dest(dest), st, ctx.epoch)]


def _image_entry(spec: CopyFromSpec, node: Node, dest: str, epoch: int, source: str | None) -> Entry:
    e = node.entry
    return attrs.evolve(
        e,
        path=dest,
        mode=spec.mode if spec.mode is not None and e.kind is not Kind.SYMLINK else e.mode,
        uid=e.uid if spec.uid is None else spec.uid,
        gid=e.gid if spec.gid is None else spec.gid,
        mtime=min(e.mtime, epoch),
        source=source,
    )


def collect_from_image(spec: CopyFromSpec, ctx: LayerContext) -> list[_Found]:
    what = f"copy-from {spec.image}:{spec.src}"
    if ctx.open_image is None:
        raise InputError(f"{what}: no image reader")
    fs, openers = ctx.open_image(spec.image)
    src = normalize(spec.src, what=f"{what}: source")
    dest, into_dir = _destination(spec.dst, ctx.workdir, what)
    parent, last = posixpath.split(src)
    globbed = any(c in last for c in "*?[")
    if globbed:
        real_parent = fs.resolve(parent)
        prefix = real_parent + "/" if real_parent else ""
        names = sorted({p[len(prefix):].split("/")[0] for p in fs.nodes if p.startswith(prefix) and p != real_parent})
        sources = [posixpath.join(real_parent, n) for n in names if fnmatch.fnmatchcase(n, last)]
        if not sources:
            raise InputError(f"{what}: nothing in the image matches {spec.src!r}")
        into_dir = True
    else:
        sources = [src]
    selected: list[tuple[Node, str]] = []
    for one in sources:
        # A named source is followed if it is a symlink (as --add does); glob matches are copied as they are.
        real = fs.resolve(one, follow_final=not globbed)
        node = fs.get(real)
        if node is None and real:
            raise InputError(f"{what}: {spec.src!r} does not exist in the image")
        if node is None or node.entry.kind is Kind.DIR:
            base_dest = posixpath.join(dest, posixpath.basename(real)) if len(sources) > 1 else dest
            if base_dest and node is not None:
                selected.append((node, base_dest))
            for child in fs.subtree(real) if real else sorted(fs.nodes.values(), key=lambda n: n.entry.path):
                rel = child.entry.path[len(real) + 1:] if real else child.entry.path
                selected.append((child, f"{base_dest}/{rel}" if base_dest else rel))
        else:
            selected.append((node, posixpath.join(dest, posixpath.basename(real)) if into_dir else dest))
    spooled = fs.extract([n for n, _ in selected], openers, ctx.spool)
    counts: dict[tuple[int, str], int] = {}
    for node, _ in selected:
        if node.data is not None:
            counts[node.data] = counts.get(node.data, 0) + 1
    found = []
    for node, path in selected:
        source = spooled.get(node.data) if node.data is not None else None
        inode = None
        if source is not None and counts[node.data] > 1:  # type: ignore[index]
            st = os.stat(source)
            inode = (st.st_dev, st.st_ino)
        found.append(_Found(_image_entry(spec, node, ctx.dest(path), ctx.epoch, source), inode))
    return found


def _parent_entry(path: str, ctx: LayerContext) -> Entry:
    if ctx.base is not None:
        node = ctx.base.get(path)
        if node is not None and node.entry.kind is Kind.DIR:
            return attrs.evolve(node.entry, mtime=min(node.entry.mtime, ctx.epoch))
    return Entry(path, Kind.DIR, mode=0o755, mtime=ctx.epoch)


def _finish(merged: dict[str, _Found], ctx: LayerContext) -> list[tuple[Entry, Opener]]:
    """Add parents, sort, and turn shared inodes into hardlinks to the first path."""
    for path in list(merged):
        # Climb until an ancestor is already there: its own ancestors are then handled too.
        child, parent = path, posixpath.dirname(path)
        while parent:
            found = merged.get(parent)
            if found is not None:
                if found.entry.kind is not Kind.DIR:
                    raise InputError(f"{parent!r} is added as {found.entry.kind.noun} and also as the parent directory of {child!r}")
                break
            merged[parent] = _Found(_parent_entry(parent, ctx), None)
            child, parent = parent, posixpath.dirname(parent)
    out: list[tuple[Entry, Opener]] = []
    first_of_inode: dict[tuple[int, int], str] = {}
    for path in sorted(merged):
        found = merged[path]
        entry = found.entry
        if found.inode is not None:
            target = first_of_inode.setdefault(found.inode, path)
            if target != path:
                entry = attrs.evolve(entry, kind=Kind.HARDLINK, size=0, linkname=target, source=None)
        out.append((entry, None))  # build_layer opens entry.source itself
    return out


def tree_layer(specs: Iterable[Source], ctx: LayerContext) -> list[tuple[Entry, Opener]]:
    """Merge several sources into one sorted layer; later sources win on the same path."""
    merged: dict[str, _Found] = {}
    for spec in specs:
        found = collect(spec, ctx) if isinstance(spec, AddSpec) else collect_from_image(spec, ctx)
        for one in found:
            merged[one.entry.path] = one
    return _finish(merged, ctx)


def removal_layer(paths: Iterable[str], ctx: LayerContext) -> list[tuple[Entry, Opener]]:
    """OCI whiteouts (``.wh.NAME``) that drop paths of the base image."""
    if ctx.base is None:
        raise InputError("--remove: there is no base image to remove files from (the base is scratch)")
    merged: dict[str, _Found] = {}
    for raw in paths:
        path = normalize(raw, what="--remove")
        if not path:
            raise InputError("--remove: cannot remove the image root")
        real = ctx.dest(path)
        if ctx.base.get(real) is None:
            raise InputError(f"--remove {raw}: not in the base image")
        head, name = posixpath.split(real)
        whiteout = posixpath.join(head, WHITEOUT + name)
        merged[whiteout] = _Found(Entry(whiteout, Kind.FILE, mode=0o644, mtime=ctx.epoch), None)
    return _finish(merged, ctx)
