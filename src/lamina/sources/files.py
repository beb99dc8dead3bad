"""Host files and trees → entries, with Dockerfile COPY semantics.

A destination ending in ``/`` means "into this directory"; a directory source copies its
contents; the source path itself is followed if it is a symlink, but symlinks inside a
tree stay symlinks; files sharing an inode within one layer become tar hardlinks to the
first path in sorted order; missing parents become 0755 root-owned directories.
Every entry gets the build's epoch as mtime (set, not clamped: host mtimes never leak).
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable, Iterator

import attrs

from lamina.errors import InputError
from lamina.layers.build import Opener
from lamina.layers.entries import Entry, Kind, normalize, parents


@attrs.frozen
class AddSpec:
    """One ``--add SRC:DST[:MODE]`` (or a spec file entry)."""

    src: str
    dst: str
    mode: int | None = None
    uid: int = 0
    gid: int = 0

    def describe(self) -> str:
        """For history: the source's base name only, so where the checkout lives never
        reaches the digest (an absolute path from a Makefile would otherwise)."""
        mode = f" (mode {self.mode:04o})" if self.mode is not None else ""
        return f"{os.path.basename(os.path.normpath(self.src))} -> {self.dst}{mode}"


@attrs.frozen
class _Found:
    entry: Entry
    inode: tuple[int, int] | None  # (st_dev, st_ino) of files with more than one link


def _error(spec: AddSpec, path: str, exc: OSError) -> InputError:
    return InputError(f"add {spec.src}:{spec.dst}: cannot read {path!r}: {exc.strerror}")


def _entry_for(spec: AddSpec, host: str, dest: str, st: os.stat_result, epoch: int) -> _Found:
    mode = spec.mode if spec.mode is not None else stat.S_IMODE(st.st_mode)
    common = {"path": dest, "uid": spec.uid, "gid": spec.gid, "mtime": epoch}
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(host)
        except OSError as exc:
            raise _error(spec, host, exc) from exc
        return _Found(Entry(kind=Kind.SYMLINK, mode=0o777, linkname=target, **common), None)
    if stat.S_ISDIR(st.st_mode):
        return _Found(Entry(kind=Kind.DIR, mode=mode, **common), None)
    if stat.S_ISREG(st.st_mode):
        inode = (st.st_dev, st.st_ino) if st.st_nlink > 1 else None
        return _Found(Entry(kind=Kind.FILE, mode=mode, size=st.st_size, source=host, **common), inode)
    if stat.S_ISFIFO(st.st_mode):
        return _Found(Entry(kind=Kind.FIFO, mode=mode, **common), None)
    raise InputError(f"add {spec.src}:{spec.dst}: {host!r} is a socket or device; lamina adds files, directories and symlinks")


def _walk(spec: AddSpec, host_dir: str, dest_dir: str, epoch: int) -> Iterator[_Found]:
    try:
        with os.scandir(host_dir) as it:
            children = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise _error(spec, host_dir, exc) from exc
    for child in children:
        try:
            st = child.stat(follow_symlinks=False)
        except OSError as exc:
            raise _error(spec, child.path, exc) from exc
        dest = f"{dest_dir}/{child.name}" if dest_dir else child.name
        yield _entry_for(spec, child.path, dest, st, epoch)
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(spec, child.path, dest, epoch)


def collect(spec: AddSpec, *, workdir: str, epoch: int) -> list[_Found]:
    """Everything one --add puts in the image, unsorted, without parent directories."""
    try:
        st = os.stat(spec.src)  # the source itself is followed, as docker COPY does
    except OSError as exc:
        raise InputError(f"add {spec.src}:{spec.dst}: cannot read {spec.src!r}: {exc.strerror}") from exc
    if not os.access(spec.src, os.R_OK):
        raise InputError(f"add {spec.src}:{spec.dst}: cannot read {spec.src!r}: Permission denied")
    dst = spec.dst if spec.dst.startswith("/") else posixpath.join(workdir or "/", spec.dst)
    into_dir = dst.endswith(("/", "/.")) or dst == "."
    dest = normalize(dst, what=f"add {spec.src}:{spec.dst}: destination")
    if stat.S_ISDIR(st.st_mode):
        found = [_Found(Entry(dest, Kind.DIR, mode=spec.mode or 0o755, uid=spec.uid, gid=spec.gid, mtime=epoch), None)] if dest else []
        found.extend(_walk(spec, spec.src, dest, epoch))
        return found
    if into_dir:
        dest = f"{dest}/{os.path.basename(os.path.normpath(spec.src))}" if dest else os.path.basename(os.path.normpath(spec.src))
    return [_entry_for(spec, spec.src, dest, st, epoch)]


def _open(path: str) -> Opener:
    return lambda: open(path, "rb")


def tree_layer(specs: Iterable[AddSpec], *, workdir: str, epoch: int) -> list[tuple[Entry, Opener]]:
    """Merge several adds into one sorted layer; later adds win on the same path."""
    merged: dict[str, _Found] = {}
    for spec in specs:
        for found in collect(spec, workdir=workdir, epoch=epoch):
            merged[found.entry.path] = found
    for path in list(merged):
        for parent in parents(path):
            if parent not in merged:
                merged[parent] = _Found(Entry(parent, Kind.DIR, mode=0o755, mtime=epoch), None)
            elif merged[parent].entry.kind is not Kind.DIR:
                raise InputError(f"{parent!r} is added as a file and also as the parent directory of {path!r}")
    out: list[tuple[Entry, Opener]] = []
    first_of_inode: dict[tuple[int, int], str] = {}
    for path in sorted(merged):
        found = merged[path]
        entry = found.entry
        if found.inode is not None:
            target = first_of_inode.setdefault(found.inode, path)
            if target != path:
                entry = attrs.evolve(entry, kind=Kind.HARDLINK, size=0, linkname=target, source=None)
        out.append((entry, _open(entry.source) if entry.kind is Kind.FILE and entry.source else None))
    return out
