"""The layer cache: a layer whose inputs are unchanged is neither re-tarred nor recompressed.

A layer's key is the sha256 of everything that decides its bytes: each entry's path, kind,
mode, owner, mtime and link target, the BLAKE3 digest of each file's content
(hashing.file_key), the compressor and its settings, and lamina's layer format version.
File content digests are remembered by (device, inode, size, mtime, ctime), as git's index
does, so an unchanged 500 MB tree costs a stat per file, not a read. Blobs live under ``$XDG_CACHE_HOME/lamina/layers`` (renamed
into place whole, so two builds at once are safe; the index is SQLite, which locks), with a
size cap (``LAMINA_CACHE_MAX``, default 5 GiB) enforced least-recently-used first.
A cached layer's bytes are exactly what building it would write (tested).

A cached blob is hashed before it is trusted, once: its (device, inode, size, mtime, ctime)
is then remembered as verified, and a blob whose stat no longer matches is hashed again (any
write changes ctime, which no one can set back). As in git's "racy clean" rule, a stat is
remembered only once its ctime is older than a second, so a write within the same clock tick
cannot go unseen. A blob that fails is removed, with a note, and the layer built again.
A build's private store refers to cached blobs by symlink, so builds never change a cached
inode (a hardlink would change its ctime), and holds a shared flock on each while it lives,
so pruning leaves them alone. Outputs get copies, so nothing a user does to an output can
reach the cache. The cache is optional: a full disk or a broken index costs the saving,
never the build, and leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from lamina.errors import LaminaError
from lamina.hashing import file_key, sha256_file
from lamina.home import cache_home
from lamina.layers.build import Opener
from lamina.layers.entries import Entry, Kind
from lamina.model import Descriptor, Digest, Layer
from lamina.store import hold, open_directory, remove_unless_held

FORMAT = 1  # bump when the tar writer's output changes for the same entries
DEFAULT_MAX = 5 << 30
RACY_NS = 1_000_000_000  # a stat whose ctime is younger than this is not remembered as verified
PARALLEL_HASH_MIN = 1 << 20  # files at least this large are hashed on several threads at once


def cache_root() -> Path:
    return cache_home() / "layers"


def _max_bytes() -> int:
    raw = os.environ.get("LAMINA_CACHE_MAX", "")
    if raw:
        from lamina.registry.api import parse_size

        return parse_size(raw)
    return DEFAULT_MAX


def _fingerprint(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class LayerCache:
    def __init__(self, root: Path | None = None, note: Callable[[str], None] | None = None) -> None:
        self.root = root or cache_root()
        self._note = note or (lambda _: None)
        self._files: dict[tuple[int, int], tuple[int, int, int, str]] | None = None
        self._single = 64  # file digests looked up one query each before the whole table is read
        self._held: list[int] = []  # fds of blobs in use by this build, flocked shared (see prune)
        self.blobs = self.root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        self._clean_tmp()
        self.db = sqlite3.connect(self.root / "index.sqlite", timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # A lost last commit after a power cut costs a saving; a sync per commit cost 3 s of a
        # cold 560 MB build (one commit per remembered file digest). WAL stays consistent.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS layers (key TEXT PRIMARY KEY, record TEXT, digest TEXT, size INTEGER, used INTEGER)")
        if self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='contents'").fetchone() is None:
            # Once, on the first open by a lamina with BLAKE3 content keys (hashing.file_key): the
            # sha256 digests an older one remembered by inode go (not on every open, which would
            # pull the table from under an older lamina sharing this cache).
            self.db.execute("DROP TABLE IF EXISTS files")
        self.db.execute("CREATE TABLE IF NOT EXISTS contents (dev INTEGER, ino INTEGER, size INTEGER, mtime INTEGER, ctime INTEGER, digest TEXT, PRIMARY KEY (dev, ino))")
        self.db.execute("CREATE TABLE IF NOT EXISTS verified (digest TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, size INTEGER, mtime INTEGER, ctime INTEGER)")
        self.db.execute("CREATE TABLE IF NOT EXISTS trees (stamp TEXT PRIMARY KEY, key TEXT, entries TEXT)")

    def _clean_tmp(self) -> None:
        """Temporary blobs of builds killed mid-put (``<hex>.<pid>[.<n>]``)."""
        from lamina.sinks.atomic import owner_gone

        for entry in (self.root / "tmp").iterdir():
            parts = entry.name.split(".")
            if len(parts) >= 2 and parts[1].isdigit() and owner_gone(int(parts[1])):
                entry.unlink(missing_ok=True)

    def close(self) -> None:
        for fd in self._held:
            os.close(fd)
        self._held.clear()
        self.db.close()

    # ---- keys

    def _known(self) -> dict[tuple[int, int], tuple[int, int, int, str]]:
        """Every remembered file digest, read once per build (one query, not one per file)."""
        if self._files is None:
            rows = self.db.execute("SELECT dev, ino, size, mtime, ctime, digest FROM contents")
            self._files = {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in rows}
        return self._files

    def _row(self, st: os.stat_result) -> tuple[int, int, int, str] | None:
        """The remembered (size, mtime, ctime, digest) of a file's inode: the first few a build
        asks about one query each (a rebuild after one file changed asks for one), then every
        row in one query (a tree's worth)."""
        if self._files is None and self._single > 0:
            self._single -= 1
            r = self.db.execute("SELECT size, mtime, ctime, digest FROM contents WHERE dev=? AND ino=?",
                                (st.st_dev, st.st_ino)).fetchone()
            return (r[0], r[1], r[2], r[3]) if r is not None else None
        return self._known().get((st.st_dev, st.st_ino))

    def _note_row(self, st: os.stat_result, digest: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO contents VALUES (?, ?, ?, ?, ?, ?)",
                        (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest))
        if self._files is not None:
            self._files[(st.st_dev, st.st_ino)] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest)

    def file_digest(self, path: str) -> str:
        st = os.stat(path)
        row = self._row(st)
        if row and row[:3] == (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            return row[3]
        try:
            digest = file_key(path)
        except OSError as exc:
            from lamina.errors import InputError

            raise InputError(f"cannot read {path!r}: {exc.strerror}") from None
        self._note_row(st, digest)
        return digest

    def hash_ahead(self, paths: list[str]) -> None:
        """Remember the digests of the large files ``paths`` that the index does not know,
        hashed on several threads at once (hashlib and reads release the GIL; the cold key of a
        tree of big files is all hashing). Only what file_digest would do, in another order; a
        file that cannot be read is left for file_digest to report."""
        todo = []
        for path in dict.fromkeys(paths):
            try:
                st = os.stat(path)
            except OSError:
                continue
            row = self._row(st)
            if st.st_size >= PARALLEL_HASH_MIN and not (row and row[:3] == (st.st_size, st.st_mtime_ns, st.st_ctime_ns)):
                todo.append((path, st))
        if len(todo) < 2:
            return
        from concurrent.futures import ThreadPoolExecutor

        def digest(path: str) -> str | None:
            try:
                return file_key(path)
            except OSError:
                return None

        with ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="lamina-hash") as pool:
            digests = list(pool.map(digest, [path for path, _ in todo]))
        for (_, st), hexdigest in zip(todo, digests):
            if hexdigest is not None:  # stat taken before the read, as file_digest takes it
                self._note_row(st, hexdigest)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction around many remembered file digests (a tree's worth), taking the
        write lock at once: a deferred upgrade can fail at once."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def key_for_entries(self, items: Iterable[tuple[Entry, Opener]], settings: str) -> str:
        items = list(items)
        h = hashlib.sha256(f"lamina-layer-{FORMAT}\0{settings}\0".encode())
        with self.batch():
            self.hash_ahead([entry.source for entry, _ in items  # by the walk's size: small files cost no second stat
                             if entry.kind is Kind.FILE and entry.source and entry.size >= PARALLEL_HASH_MIN])
            for entry, _ in items:
                content = self.file_digest(entry.source) if entry.kind is Kind.FILE and entry.source else ""
                # repr of str and int is exact and stable: a cheap canonical form.
                h.update(repr((entry.path, entry.kind.value, entry.mode, entry.uid, entry.gid, entry.mtime, entry.size,
                               entry.linkname, entry.devmajor, entry.devminor, content)).encode() + b"\n")
        return h.hexdigest()

    def tree(self, stamp: str) -> tuple[str, list[Entry]] | None:
        """The cache key and entries a layer had when its host trees had this stamp
        (sources.files.tree_stamp); None if unknown or unreadable."""
        row = self.db.execute("SELECT key, entries FROM trees WHERE stamp=?", (stamp,)).fetchone()
        if row is None:
            return None
        try:
            kinds = {k.value.decode(): k for k in Kind}
            entries = [Entry(path, kinds[kind], mode, uid, gid, mtime, size, linkname, source=source)
                       for path, kind, mode, uid, gid, mtime, size, linkname, source in json.loads(row[1])]
        except (ValueError, TypeError, KeyError):
            self.db.execute("DELETE FROM trees WHERE stamp=?", (stamp,))
            return None
        return str(row[0]), entries

    def remember_tree(self, stamp: str, key: str, entries: Iterable[Entry]) -> None:
        """Keep a layer's key and entries under its trees' stamp (only entries of host files:
        no device numbers)."""
        rows = [[e.path, e.kind.value.decode(), e.mode, e.uid, e.gid, e.mtime, e.size, e.linkname, e.source]
                for e in entries]
        self.db.execute("INSERT OR REPLACE INTO trees VALUES (?, ?, ?)", (stamp, key, json.dumps(rows, separators=(",", ":"))))

    def key_for_tarball(self, path: str, settings: str) -> str:
        return hashlib.sha256(f"lamina-tarball-{FORMAT}\0{settings}\0{self.file_digest(path)}".encode()).hexdigest()

    # ---- records

    def get(self, key: str) -> tuple[Layer, Path] | None:
        row = self.db.execute("SELECT record FROM layers WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        try:
            record = json.loads(row[0])
            layer = Layer(Descriptor.from_json(record["descriptor"]), Digest.parse(record["diff_id"]),
                          record["uncompressed_size"], record["entry_count"], record["created_by"])
        except (ValueError, KeyError, TypeError, LaminaError) as exc:
            # Another lamina version's record, or a damaged one: it costs the saving, never the build.
            self.db.execute("DELETE FROM layers WHERE key=?", (key,))
            self._note(f"layer cache: dropped an unreadable record ({type(exc).__name__}); building the layer again")
            return None
        digest = layer.descriptor.digest
        blob = self.blobs / digest.hex
        try:
            st = os.stat(blob)
        except FileNotFoundError:
            self.db.execute("DELETE FROM layers WHERE key=?", (key,))
            return None
        if st.st_size != layer.descriptor.size:
            self._evict(digest, f"{st.st_size} bytes, not {layer.descriptor.size}")
            return None
        if not self._verified(digest.hex, st):
            if sha256_file(str(blob)) != digest.hex:
                self._evict(digest, "its bytes do not match its digest")
                return None
            if time.time_ns() - st.st_ctime_ns > RACY_NS:
                self._remember(digest.hex, st)
        if not self._hold(blob, st):
            return None  # pruned meanwhile
        self.db.execute("UPDATE layers SET used=(SELECT COALESCE(MAX(used), 0) + 1 FROM layers) WHERE key=?", (key,))
        return layer, blob

    def _verified(self, hexdigest: str, st: os.stat_result) -> bool:
        row = self.db.execute("SELECT dev, ino, size, mtime, ctime FROM verified WHERE digest=?", (hexdigest,)).fetchone()
        return row is not None and tuple(row) == _fingerprint(st)

    def _hold(self, blob: Path, st: os.stat_result) -> bool:
        """A shared flock on a blob this build uses, so prune leaves it (opening changes no
        ctime); False if it is no longer the blob that was checked."""
        return hold(blob, self._held) == st.st_ino

    def _remember(self, hexdigest: str, st: os.stat_result) -> None:
        self.db.execute("INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?, ?, ?)", (hexdigest, *_fingerprint(st)))

    def _evict(self, digest: Digest, why: str) -> None:
        (self.blobs / digest.hex).unlink(missing_ok=True)
        self.db.execute("DELETE FROM layers WHERE digest=?", (digest.hex,))
        self.db.execute("DELETE FROM verified WHERE digest=?", (digest.hex,))
        self._note(f"cached layer {digest} was corrupt ({why}); removed it, building the layer again")

    def put(self, key: str, layer: Layer, blob: Path) -> None:
        """Keep a layer just built. A filesystem error (a full disk) is noted, never raised: the
        cache is optional, and the temporary blob is removed."""
        hexdigest = layer.descriptor.digest.hex
        target = self.blobs / hexdigest
        tmp = self.root / "tmp" / f"{hexdigest}.{os.getpid()}"
        try:
            if not target.exists():
                # A hardlink when the build's store is on the same filesystem: store blobs reach
                # outputs only by copy (sinks), so nothing a user does to an output reaches here.
                try:
                    os.link(blob, tmp)
                except OSError:
                    shutil.copyfile(blob, tmp)
                os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._note(f"layer cache: cannot keep a layer ({exc.strerror or exc}); building without caching it")
            return
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
        try:
            directory = open_directory(self.root.parent, self.root.name, "blobs", "sha256")
        except OSError as exc:  # a symlink planted there: nothing it points to is removed
            self._note(f"cannot prune {self.blobs}: {exc.strerror}; no blob removed")
            return removed, freed
        try:
            for name in os.listdir(directory):
                if name not in keep:
                    freed += remove_unless_held(directory, name) or 0
        finally:
            os.close(directory)
        self.db.execute("DELETE FROM verified WHERE digest NOT IN (SELECT digest FROM layers)")
        self.db.execute("DELETE FROM trees WHERE key NOT IN (SELECT key FROM layers)")
        return removed, freed

    def stats(self) -> tuple[int, int]:
        count = self.db.execute("SELECT COUNT(*) FROM layers").fetchone()[0]
        size = sum(b.stat().st_size for b in self.blobs.iterdir())
        return count, size
