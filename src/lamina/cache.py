"""The layer cache: a layer whose inputs are unchanged is neither re-tarred nor recompressed.

A layer's key is the sha256 of everything that decides its bytes: each entry's path, kind,
mode, owner, mtime and link target, the sha256 of each file's content, the compressor and
its settings, and lamina's layer format version. File content digests are remembered by
(device, inode, size, mtime, ctime), as git's index does, so an unchanged 500 MB tree costs
a stat per file, not a read. Blobs live under ``$XDG_CACHE_HOME/lamina/layers`` (renamed
into place whole, so two builds at once are safe; the index is SQLite, which locks), with a
size cap (``LAMINA_CACHE_MAX``, default 5 GiB) enforced least-recently-used first.
A cached layer's bytes are exactly what building it would write (tested). Blobs move
between the cache and a build's private store by hardlink; outputs get copies (the kernel's
copy_file_range), so nothing a user does to an output can reach the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from lamina.home import cache_home
from lamina.layers.build import Opener
from lamina.layers.entries import Entry, Kind
from lamina.model import Descriptor, Digest, Layer

FORMAT = 1  # bump when the tar writer's output changes for the same entries
DEFAULT_MAX = 5 << 30


def cache_root() -> Path:
    return cache_home() / "layers"


def _max_bytes() -> int:
    raw = os.environ.get("LAMINA_CACHE_MAX", "")
    if raw:
        from lamina.registry.api import parse_size

        return parse_size(raw)
    return DEFAULT_MAX


class LayerCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_root()
        self._files: dict[tuple[int, int], tuple[int, int, int, str]] | None = None
        self.blobs = self.root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        self.db = sqlite3.connect(self.root / "index.sqlite", timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS layers (key TEXT PRIMARY KEY, record TEXT, digest TEXT, size INTEGER, used INTEGER)")
        self.db.execute("CREATE TABLE IF NOT EXISTS files (dev INTEGER, ino INTEGER, size INTEGER, mtime INTEGER, ctime INTEGER, sha256 TEXT, PRIMARY KEY (dev, ino))")

    def close(self) -> None:
        self.db.close()

    # ---- keys

    def _known(self) -> dict[tuple[int, int], tuple[int, int, int, str]]:
        """Every remembered file digest, read once per build (one query, not one per file)."""
        if self._files is None:
            rows = self.db.execute("SELECT dev, ino, size, mtime, ctime, sha256 FROM files")
            self._files = {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in rows}
        return self._files

    def file_digest(self, path: str) -> str:
        st = os.stat(path)
        row = self._known().get((st.st_dev, st.st_ino))
        if row and row[:3] == (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            return row[3]
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError as exc:
            from lamina.errors import InputError

            raise InputError(f"cannot read {path!r}: {exc.strerror}") from None
        digest = h.hexdigest()
        self.db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                        (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest))
        self._known()[(st.st_dev, st.st_ino)] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest)
        return digest

    def key_for_entries(self, items: Iterable[tuple[Entry, Opener]], settings: str) -> str:
        h = hashlib.sha256(f"lamina-layer-{FORMAT}\0{settings}\0".encode())
        self.db.execute("BEGIN IMMEDIATE")  # take the write lock now: a deferred upgrade can fail at once
        try:
            for entry, _ in items:
                content = self.file_digest(entry.source) if entry.kind is Kind.FILE and entry.source else ""
                # repr of str and int is exact and stable: a cheap canonical form.
                h.update(repr((entry.path, entry.kind.value, entry.mode, entry.uid, entry.gid, entry.mtime, entry.size,
                               entry.linkname, entry.devmajor, entry.devminor, content)).encode() + b"\n")
        finally:
            self.db.execute("COMMIT")
        return h.hexdigest()

    def key_for_tarball(self, path: str, settings: str) -> str:
        return hashlib.sha256(f"lamina-tarball-{FORMAT}\0{settings}\0{self.file_digest(path)}".encode()).hexdigest()

    # ---- records

    def get(self, key: str) -> tuple[Layer, Path] | None:
        row = self.db.execute("SELECT record FROM layers WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        record = json.loads(row[0])
        layer = Layer(Descriptor.from_json(record["descriptor"]), Digest.parse(record["diff_id"]),
                      record["uncompressed_size"], record["entry_count"], record["created_by"])
        blob = self.blobs / layer.descriptor.digest.hex
        if not blob.is_file() or blob.stat().st_size != layer.descriptor.size:
            self.db.execute("DELETE FROM layers WHERE key=?", (key,))
            return None
        self.db.execute("UPDATE layers SET used=(SELECT COALESCE(MAX(used), 0) + 1 FROM layers) WHERE key=?", (key,))
        return layer, blob

    def put(self, key: str, layer: Layer, blob: Path) -> None:
        target = self.blobs / layer.descriptor.digest.hex
        if not target.exists():
            # A hardlink when the build's store is on the same filesystem: store blobs reach
            # outputs only by copy (sinks), so nothing a user does to an output reaches here.
            tmp = self.root / "tmp" / f"{layer.descriptor.digest.hex}.{os.getpid()}"
            try:
                os.link(blob, tmp)
            except OSError:
                shutil.copyfile(blob, tmp)
            os.replace(tmp, target)
        record = {"descriptor": layer.descriptor.to_json(), "diff_id": str(layer.diff_id),
                  "uncompressed_size": layer.uncompressed_size, "entry_count": layer.entry_count,
                  "created_by": layer.created_by}
        self.db.execute("INSERT OR REPLACE INTO layers VALUES (?, ?, ?, ?, (SELECT COALESCE(MAX(used), 0) + 1 FROM layers))",
                        (key, json.dumps(record), layer.descriptor.digest.hex, layer.descriptor.size))
        self.prune(_max_bytes())

    def prune(self, max_bytes: int) -> tuple[int, int]:
        """Drop least-recently-used layers until the blobs fit in ``max_bytes``; (layers, bytes) freed."""
        rows = self.db.execute("SELECT key, digest, size FROM layers ORDER BY used DESC").fetchall()
        total, removed, freed = 0, 0, 0
        keep: set[str] = set()
        for key, digest, size in rows:
            if digest in keep:
                continue
            if total + size <= max_bytes:
                total += size
                keep.add(digest)
                continue
            self.db.execute("DELETE FROM layers WHERE key=?", (key,))
            removed += 1
        for blob in self.blobs.iterdir():
            if blob.name not in keep:
                freed += blob.stat().st_size
                blob.unlink(missing_ok=True)
        return removed, freed

    def stats(self) -> tuple[int, int]:
        count = self.db.execute("SELECT COUNT(*) FROM layers").fetchone()[0]
        size = sum(b.stat().st_size for b in self.blobs.iterdir())
        return count, size

