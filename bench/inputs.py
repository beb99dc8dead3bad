"""Benchmark inputs, generated once under the scratch dir and reused by later runs.

* a real tree: subsets of /usr (``cp -a``, symlinks kept) filled greedily to a size budget;
* many small files: deterministic pseudo-random text from ``random.Random(42)``;
* the rebuild context: a copy of the tree plus a copy of the hello binary.

Each tree gets a ``.json`` sidecar with its exact size and entry counts; a tree whose
sidecar is missing or was made with other parameters is made again.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

# What the rootfs is made of, as shares of its budget: many small files (docs, locales,
# man pages), shared libraries and interpreters' trees, and executables.
# Sources are taken in this order; a later source skips the earlier ones it contains.
ROOTFS_SOURCES: tuple[tuple[str, float], ...] = (
    ("/usr/share", 0.35), ("/usr/lib/x86_64-linux-gnu", 0.30), ("/usr/lib", 0.15),
    ("/usr/bin", 0.20))
WORDS = ("the of and to in is for on that with as by this be are from at or an it not "
         "config value return import def class self int str none true false if else "
         "while for yield async await error path file data json yaml http server client "
         "lamina layer image digest tar gzip zstd build cache").split()


@dataclass(frozen=True)
class TreeInfo:
    """Exact size of a generated tree and its entry counts. `unique_bytes` counts each
    inode once (what a tar with hardlinks holds); `file_bytes` counts every path."""

    path: str
    params: str
    unique_bytes: int
    file_bytes: int
    files: int
    hardlinked: int  # paths that share their inode with another path of the tree
    dirs: int
    symlinks: int

    def describe(self) -> str:
        links = f", {self.hardlinked:,} of them hardlinked" if self.hardlinked else ""
        return (f"{self.unique_bytes:,} bytes ({self.unique_bytes / 1e6:.1f} MB) of file data in "
                f"{self.files:,} regular files{links}, {self.dirs:,} directories, "
                f"{self.symlinks:,} symlinks")


def tree_info(path: Path, params: str) -> TreeInfo:
    """Walk `path` (not following symlinks) and count what is there."""
    file_bytes = files = dirs = symlinks = unique_bytes = 0
    inodes: dict[int, int] = {}
    for root, dirnames, filenames in os.walk(path):
        dirs += len(dirnames)
        for name in dirnames:
            if os.path.islink(os.path.join(root, name)):  # os.walk lists dir symlinks here
                dirs -= 1
                symlinks += 1
        for name in filenames:
            st = os.lstat(os.path.join(root, name))
            if stat.S_ISLNK(st.st_mode):
                symlinks += 1
            elif stat.S_ISREG(st.st_mode):
                files += 1
                file_bytes += st.st_size
                if st.st_ino not in inodes:
                    unique_bytes += st.st_size
                inodes[st.st_ino] = inodes.get(st.st_ino, 0) + 1
    hardlinked = sum(n for n in inodes.values() if n > 1)
    return TreeInfo(str(path), params, unique_bytes, file_bytes, files, hardlinked, dirs, symlinks)


def _cached(path: Path, params: str) -> TreeInfo | None:
    sidecar = path.with_name(path.name + ".json")
    if not path.exists() or not sidecar.exists():
        return None
    try:
        info = TreeInfo(**json.loads(sidecar.read_text()))
    except (ValueError, TypeError):
        return None
    return info if info.params == params else None


def _record(path: Path, params: str) -> TreeInfo:
    info = tree_info(path, params)
    path.with_name(path.name + ".json").write_text(json.dumps(asdict(info), indent=1))
    return info


def _apparent_size(path: str) -> int:
    """Bytes of regular files under `path` (or of `path`), symlinks not followed; a file
    with n links counts 1/n of its size (its links are usually siblings)."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size // st.st_nlink if stat.S_ISREG(st.st_mode) else 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size // st.st_nlink
    return total


def _pick(path: str, budget: int, picked: list[str], exclude: frozenset[str]) -> int:
    """Greedily take entries of `path` (sorted by name) that fit in `budget`; descend into
    directories too big to take whole; skip `exclude`. Returns the budget left."""
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return budget
    for name in names:
        if budget < (256 << 10):
            break
        child = os.path.join(path, name)
        if child in exclude:
            continue
        try:
            st = os.lstat(child)
        except OSError:
            continue
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            continue  # sockets, fifos, devices: not what a rootfs is made of
        if not os.access(child, os.R_OK):
            continue
        size = _apparent_size(child)
        if size <= budget:
            picked.append(child)
            budget -= size
        elif stat.S_ISDIR(st.st_mode):
            budget = _pick(child, budget, picked, exclude)
    return budget


def make_rootfs(path: Path, size_mb: int) -> TreeInfo:
    """A real tree of about `size_mb` MB copied from /usr, laid out as usr/... under `path`."""
    params = f"rootfs {size_mb} MB from {ROOTFS_SOURCES}"
    if (info := _cached(path, params)) is not None:
        return info
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    picked: list[str] = []
    sources = frozenset(source for source, _ in ROOTFS_SOURCES)
    for source, share in ROOTFS_SOURCES:
        if os.path.isdir(source):
            _pick(source, int(size_mb * 1e6 * share), picked, sources - {source})
    relative = [p.lstrip("/") for p in picked]
    for i in range(0, len(relative), 200):  # cp -a --parents keeps usr/... and symlinks
        subprocess.run(["cp", "-a", "--parents", *relative[i:i + 200], str(path.resolve())],
                       cwd="/", check=True, timeout=1800)
    return _record(path, params)


def make_many_small(path: Path, count: int, seed: int = 42) -> TreeInfo:
    """`count` files of 1-4 KB of pseudo-random text, 100 per directory, two levels deep."""
    params = f"many-small {count} files seed {seed}"
    if (info := _cached(path, params)) is not None:
        return info
    shutil.rmtree(path, ignore_errors=True)
    rng = random.Random(seed)
    for i in range(count):
        directory = path / f"d{i // 1000:03d}" / f"e{(i // 100) % 10}"
        if i % 100 == 0:
            directory.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1024, 4096)
        text = " ".join(rng.choices(WORDS, k=size // 4)).encode()
        (directory / f"f{i:06d}.txt").write_bytes((text * 2)[:size])
    return _record(path, params)


def make_rebuild_context(path: Path, rootfs: Path, hello: Path) -> TreeInfo:
    """A directory holding a copy of the rootfs tree (usr/...) and `hello` beside it."""
    params = f"rebuild: copy of {rootfs} ({_cached_params(rootfs)}) + {hello}"
    if (info := _cached(path, params)) is not None:
        return info
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    for entry in sorted(os.listdir(rootfs)):
        subprocess.run(["cp", "-a", str(rootfs / entry), str(path)], check=True, timeout=1800)
    shutil.copy2(hello, path / "hello")
    return _record(path, params)


def _cached_params(path: Path) -> str:
    sidecar = path.with_name(path.name + ".json")
    try:
        return str(json.loads(sidecar.read_text())["params"])
    except (OSError, ValueError, KeyError):
        return "?"


def append_byte(path: Path) -> None:
    """Change a file the way a rebuild would see it: one more byte at the end."""
    with open(path, "ab") as f:
        f.write(b"\0")
