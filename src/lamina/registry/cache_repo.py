"""The remote layer cache: a fleet of runners shares built layers through an OCI registry.

Every lamina user already runs a registry; it is the distributed store, so there is no cache
service of lamina's own. An entry is a small OCI artifact manifest (``artifactType``
ARTIFACT_TYPE, the empty config) tagged ``lamina-layer-<key>``, whose one layer is the layer
blob and whose annotations carry the key, the diff_id, the uncompressed size and the
creation time. The key is the local cache's key (inputs, epoch, compressor and settings,
layer format), plus the CPU family for gzip, because ISA-L's output may differ between
x86-64 and arm64 (zstd entries are shared across families).

After the local cache misses, the build looks the key up. On a hit whose bytes the build
needs (a tarball, an OCI layout, an SBOM) the blob is downloaded, its digest and diff_id
verified as it streams, into the local cache. A build that only pushes never downloads it:
the push mounts it from the cache repository (or, to another registry, fetches it then).
An entry whose blob is missing, whose size or digest does not match, or that is malformed,
is ignored with a note and the layer is built. Entries for built layers are uploaded only
after the whole build has succeeded; read-only mode never writes.

Trust: whoever can write the cache repository chooses the layer contents of every runner
that reads it (a blob's digest proves it is the blob the entry names, not that the entry is
honest). Give untrusted branches ``--cache-repo-readonly``, or no cache repository.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import platform as host_platform
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import attrs

from lamina.errors import LaminaError, RegistryError, UsageError
from lamina.layers.compression import Compression, describe
from lamina.layers.origins import BUILT, LOCAL, REMOTE, LayerLog
from lamina.model import Descriptor, Digest, Layer, Reference, mediatypes
from lamina.model.canonical import loads
from lamina.store import BlobStore

ARTIFACT_TYPE = "application/vnd.dev.lamina.layer-cache.v1"
EMPTY = b"{}"  # the empty config of an artifact (mediatypes.EMPTY)
TAG_PREFIX = "lamina-layer-"
MAX_PRUNED_TAGS = 100_000  # cache entries one prune reads (a tag list is at most 1,000 pages)
KEY = "dev.lamina.cache.key"
DIFF_ID = "dev.lamina.cache.diff-id"
UNCOMPRESSED = "dev.lamina.cache.uncompressed-size"
ENTRIES = "dev.lamina.cache.entry-count"

def cpu_family() -> str:
    """The CPU family whose ISA-L code paths made a gzip layer (x86-64, arm64, ...)."""
    machine = host_platform.machine().lower()
    return {"x86_64": "x86-64", "amd64": "x86-64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine or "unknown")


def remote_key(local_key: str, compression: Compression) -> str:
    family = cpu_family() if compression is Compression.GZIP else "any"
    return hashlib.sha256(f"lamina-remote-1\0{local_key}\0{family}".encode()).hexdigest()


def parse_cache_repo(text: str) -> Reference:
    """``REGISTRY/REPO`` (no tag, no digest: lamina names the entries)."""
    ref = Reference.parse(text)
    if "@" in text or text.rsplit("/", 1)[-1].count(":") or "/" not in text:
        raise UsageError(f"bad cache repository {text!r}: expected REGISTRY/REPOSITORY (no tag or digest)")
    return ref


def _layer_descriptor(compression: Compression, digest: Digest, size: int) -> Descriptor:
    """A layer descriptor exactly as build_layer writes it: only digest and size come from the entry."""
    annotations = {mediatypes.COMPRESSOR: describe(compression)} if compression is not Compression.NONE else None
    return Descriptor(compression.media_type, digest, size, annotations=annotations)


def entry_manifest(key: str, layer: Layer, created: str) -> bytes:
    """The cache entry for ``layer``: an artifact manifest, canonical JSON."""
    annotations = {KEY: key, DIFF_ID: str(layer.diff_id), mediatypes.CREATED: created}
    if layer.uncompressed_size is not None:
        annotations[UNCOMPRESSED] = str(layer.uncompressed_size)
    if layer.entry_count is not None:
        annotations[ENTRIES] = str(layer.entry_count)
    doc = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": mediatypes.EMPTY, "digest": str(Digest.of_bytes(EMPTY)), "size": len(EMPTY)},
        "layers": [Descriptor(layer.descriptor.media_type, layer.descriptor.digest, layer.descriptor.size).to_json()],
        "annotations": annotations,
    }
    from lamina.model import canonical

    return canonical.dumps(doc)


class _Poisoned(Exception):
    """A cache entry that must not be used (the message says why)."""


def _not_an_entry(doc: Any, key: str) -> str | None:
    """Why ``doc`` is not lamina's cache entry for ``key``; None when it is. What a lookup
    requires before it reads an entry, and what a prune requires before it deletes one."""
    if not isinstance(doc, dict) or doc.get("artifactType") != ARTIFACT_TYPE:
        return "not a lamina cache entry"
    notes = doc.get("annotations")
    if not isinstance(notes, dict):
        return "malformed"
    if notes.get(KEY) != key:
        return f"it names key {str(notes.get(KEY))[:80]!r}"
    return None


def parse_entry(data: bytes, key: str, compression: Compression, created_by: str) -> Layer:
    """The layer a cache entry names, or _Poisoned: an entry is data from whoever wrote the repository."""
    try:
        doc = loads(data)
    except (ValueError, UnicodeDecodeError):
        raise _Poisoned("not JSON") from None
    why = _not_an_entry(doc, key)
    if why is not None:
        raise _Poisoned(why)
    notes, layers = doc["annotations"], doc.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        raise _Poisoned("malformed")
    try:
        desc = Descriptor.from_json(layers[0])
        diff_id = Digest.parse(str(notes.get(DIFF_ID)))
        size = int(notes[UNCOMPRESSED]) if str(notes.get(UNCOMPRESSED, "")).isdigit() else None
        count = int(notes[ENTRIES]) if str(notes.get(ENTRIES, "")).isdigit() else None
    except (LaminaError, ValueError, TypeError):
        raise _Poisoned("malformed layer descriptor or diff_id") from None
    if desc.media_type != compression.media_type:
        raise _Poisoned(f"its layer is {desc.media_type[:80]}, not {compression.media_type}")
    return Layer(_layer_descriptor(compression, desc.digest, desc.size), diff_id, size, count, created_by)


class _Chunks(io.RawIOBase):
    """An iterator of byte chunks as a readable file."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            try:
                self._left = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


@attrs.define
class CacheRepo(LayerLog):
    """One build's use of a cache repository: lookups while building, uploads once it succeeded."""

    target: str = ""  # REGISTRY/REPO
    options: Any = None  # lamina.registry.options.Options
    compression: Compression = Compression.GZIP
    readonly: bool = False
    note: Callable[[str], None] = lambda _: None
    need_bytes: bool = True  # False: the build only pushes, so a hit is mounted, never downloaded
    _pending: list[tuple[str, Layer]] = attrs.field(factory=list)
    _remote_only: dict[Digest, Layer] = attrs.field(factory=dict)  # hits mounted, never downloaded
    _poisoned: set[str] = attrs.field(factory=set)
    _registry: Any = None
    _broken: bool = False
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _warm: threading.Thread | None = None

    @property
    def ref(self) -> Reference:
        return parse_cache_repo(self.target)

    def __attrs_post_init__(self) -> None:
        # Importing the HTTP stack, loading the trust store and probing the scheme take ~0.4 s:
        # done while the first layer's inputs are hashed, not after.
        self._warm = threading.Thread(target=self._connect, name="lamina-cache-repo", daemon=True)
        self._warm.start()

    def _connect(self) -> None:
        try:
            registry = self.options.registry(self.ref.registry)
            registry.base  # noqa: B018 - the scheme probe
            self._registry = registry
        except Exception:  # noqa: BLE001 - said by the first real request, on the build's thread
            pass

    def registry(self) -> Any:
        if self._warm is not None:
            self._warm.join()
        if self._registry is None:
            self._registry = self.options.registry(self.ref.registry)
        return self._registry

    def close(self) -> None:
        if self._warm is not None:
            self._warm.join()
        if self._registry is not None:
            self._registry.close()

    @property
    def _scopes(self) -> tuple[str, ...]:
        return (f"repository:{self.ref.repository}:{'pull' if self.readonly else 'pull,push'}",)

    def _unreachable(self, exc: LaminaError) -> None:
        """The cache only saves time: a cache repository that fails means building, said once."""
        if not self._broken:
            self._broken = True
            self.note(f"cache repository {self.target} unavailable ({exc}); building without it")

    # ---- while building

    def lookup(self, local_key: str, created_by: str, store: BlobStore, put_local: Callable[[Layer], None]) -> Layer | None:
        """The layer of this key from the cache repository, or None (a miss, or an entry not to be used)."""
        if self._broken:
            return None
        key = remote_key(local_key, self.compression)
        tag = TAG_PREFIX + key
        registry, repo = self.registry(), self.ref.repository
        try:
            response = registry.request("GET", f"/v2/{repo}/manifests/{tag}", what=f"look up cache entry {tag}",
                                        scopes=self._scopes, headers={"Accept": mediatypes.OCI_MANIFEST}, ok=(200, 404))
            if response.status_code == 404:
                return None
            layer = parse_entry(response.content, key, self.compression, created_by)
            digest = layer.descriptor.digest
            head = registry.request("HEAD", f"/v2/{repo}/blobs/{digest}", what=f"check cached layer {digest}",
                                    scopes=self._scopes, ok=(200, 404))
            length = head.headers.get("content-length", "")[:20]  # int() of 5,000 digits raises
            named = head.headers.get("docker-content-digest", "").strip()
            if head.status_code == 404:
                raise _Poisoned(f"its layer {digest} is missing")
            if (length.isdigit() and int(length) != layer.descriptor.size) or (named and named != str(digest)):
                raise _Poisoned(f"the registry's blob {digest} does not match the entry's digest and size")
            if self.need_bytes:
                layer = self._download(layer, store)
                put_local(layer)
            else:
                with self._lock:
                    self._remote_only[digest] = layer
        except _Poisoned as why:
            self.note(f"cache entry {tag[:len(TAG_PREFIX) + 12]}… in {self.target} ignored: {why}; building the layer")
            self._poisoned.add(key)  # rebuilt: its entry is replaced (unless read-only)
            return None
        except LaminaError as exc:
            self._unreachable(exc)
            return None
        self.sources[layer.descriptor.digest] = REMOTE
        return layer

    def _download(self, layer: Layer, store: BlobStore) -> Layer:
        """The blob into the build's store, digest and diff_id checked as it streams."""
        from lamina.errors import DigestMismatch
        from lamina.sources.imported import import_layer

        desc = layer.descriptor
        chunks = self.registry().download(f"/v2/{self.ref.repository}/blobs/{desc.digest}", what=f"get cached layer {desc.digest}",
                                          scopes=self._scopes, size=desc.size)
        try:
            got = import_layer(lambda: io.BufferedReader(_Chunks(chunks), 1 << 20), media_type=desc.media_type,
                               digest=desc.digest, diff_id=layer.diff_id, annotations=(), compression=self.compression,
                               store=store, created_by=layer.created_by, name=self.target, note=self.note)
        except DigestMismatch as exc:
            raise _Poisoned(str(exc)) from None
        if got.descriptor.digest != desc.digest or got.descriptor.size != desc.size:
            raise _Poisoned(f"its layer {desc.digest} does not match")
        self.downloaded += desc.size
        return attrs.evolve(layer, uncompressed_size=got.uncompressed_size)

    def built(self, local_key: str | None, layer: Layer, source: str) -> None:
        """A layer built (or taken from the local cache): publish it once the build has succeeded."""
        self.sources.setdefault(layer.descriptor.digest, source)
        if not self.readonly and local_key is not None:
            self._pending.append((remote_key(local_key, self.compression), layer))

    def fetch_missing(self, store: BlobStore) -> Callable[[Digest], None] | None:
        """For a push that could not mount a cached layer (another registry): its bytes, verified, then."""
        def fetch(digest: Digest) -> None:
            layer = self._remote_only.get(digest)
            if layer is None or store.has(digest):
                return
            try:  # as any download of an entry: its digest and diff_id checked as it streams
                self._download(layer, store)
            except _Poisoned as why:
                raise RegistryError(f"{self.target}: cached layer {digest}: {why}") from None
        return fetch

    @property
    def mounts(self) -> dict[Digest, tuple[str, ...]]:
        return {d: (self.ref.repository,) for d in self._remote_only}

    # ---- once the build succeeded

    def publish(self, store: BlobStore, pushed: str | None) -> int:
        """Upload the entries of layers built here that the repository lacks; how many were written."""
        if self.readonly or self._broken or not self._pending:
            return 0
        from concurrent.futures import ThreadPoolExecutor  # with logging: a cache repository's, not every build's

        from lamina.registry.push import Pusher, PushPlan

        registry, repo = self.registry(), self.ref.repository
        pushed_repo = None
        if pushed:
            where = Reference.parse(pushed)
            pushed_repo = where.repository if where.registry == self.ref.registry else None
        created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        empty = Descriptor(mediatypes.EMPTY, Digest.of_bytes(EMPTY), len(EMPTY))
        written = 0

        def one(key: str, layer: Layer) -> int:
            tag = TAG_PREFIX + key
            have = registry.request("HEAD", f"/v2/{repo}/manifests/{tag}", what=f"check cache entry {tag}",
                                    scopes=self._scopes, headers={"Accept": mediatypes.OCI_MANIFEST}, ok=(200, 404))
            if have.status_code == 200 and key not in self._poisoned:
                return 0
            data = entry_manifest(key, layer, created)
            desc = Descriptor(mediatypes.OCI_MANIFEST, Digest.of_bytes(data), len(data))
            blob = Descriptor(layer.descriptor.media_type, layer.descriptor.digest, layer.descriptor.size)

            def open_blob(digest: Digest) -> BinaryIO:
                return io.BytesIO(EMPTY) if digest == empty.digest else open(store.path(digest), "rb")

            plan = PushPlan((empty, blob), ((desc, data),), open_blob,
                            mounts={blob.digest: (pushed_repo,)} if pushed_repo else {})
            Pusher(registry, repo, plan).run(Reference(self.ref.registry, repo, tag))
            return 1

        unique = list({key: (key, layer) for key, layer in self._pending}.values())
        try:
            with ThreadPoolExecutor(4, thread_name_prefix="lamina-cache") as pool:
                for future in [pool.submit(one, key, layer) for key, layer in unique]:
                    written += future.result()
        except (LaminaError, OSError) as exc:
            self.note(f"cache repository {self.target}: could not store an entry ({exc}); the build itself succeeded")
        return written

    def summary(self) -> str | None:
        counts = {BUILT: 0, LOCAL: 0, REMOTE: 0}
        for source in self.sources.values():
            if source in counts:
                counts[source] += 1
        return (f"layers: {counts[BUILT]} built, {counts[LOCAL]} from the local cache, {counts[REMOTE]} from "
                f"{self.target} ({self.downloaded} bytes downloaded)")


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--older-than {text!r}: expected a number of days") from None
    if not 0 <= value <= 100_000:  # also NaN and infinity, which no date arithmetic takes
        raise UsageError(f"--older-than {text!r}: expected a number of days")
    return value


def _next_page(link: str, base: str) -> str:
    """A ``Link: <...>; rel="next"`` target as a path on the registry at ``base``: a path as
    distribution sends it, or an absolute URL on that very origin; anything else unchanged
    (and then refused)."""
    if link.startswith(base.rstrip("/") + "/"):
        return link[len(base.rstrip("/")):]
    return link


def prune(target: str, options: Any, older_than_days: str, *, now: datetime.datetime | None = None) -> tuple[int, int]:
    """Delete cache entries created more than N days ago, by manifest digest; (deleted, kept).

    The layer blobs go when the registry garbage-collects them. A registry that does not
    allow deletes (distribution without ``delete: enabled``) is a RegistryError saying so.
    """
    from lamina.registry.client import printable

    days = _days(older_than_days)
    ref = parse_cache_repo(target)
    registry = options.registry(ref.registry)
    scopes = (f"repository:{ref.repository}:pull,push,delete",)
    limit = (now or datetime.datetime.now(datetime.timezone.utc)) - datetime.timedelta(days=days)
    deleted = kept = 0
    try:
        tags: dict[str, None] = {}  # in order, each once, however often the pages repeat it
        url = f"/v2/{ref.repository}/tags/list?n=1000"
        for _ in range(1000):
            response = registry.request("GET", url, what="list cache entries", scopes=scopes, ok=(200, 404))
            if response.status_code == 404:
                break
            try:
                listed = loads(response.content).get("tags") or []
                if not isinstance(listed, list):
                    raise TypeError
            except (ValueError, AttributeError, TypeError, UnicodeDecodeError):
                raise RegistryError(f"{ref.registry}: list cache entries: the answer is not a tag list") from None
            tags.update((t, None) for t in listed if isinstance(t, str) and re.fullmatch(TAG_PREFIX + "[0-9a-f]{64}", t))
            if len(tags) > MAX_PRUNED_TAGS:
                raise RegistryError(f"{ref.registry}: list cache entries: more than {MAX_PRUNED_TAGS} entries; "
                                    "nothing was deleted")
            link = response.headers.get("link", "")
            match = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', link)
            if not match:
                break
            url = _next_page(match[1], registry.base)
            if not url.startswith(f"/v2/{ref.repository}/tags/list"):  # this registry's tag list, nothing else
                raise RegistryError(f"{ref.registry}: list cache entries: the next page is at {printable(match[1], 80)!r}, "
                                    "not on this repository's tag list")
        for tag in tags:
            response = registry.request("GET", f"/v2/{ref.repository}/manifests/{tag}", what=f"read cache entry {tag}",
                                        scopes=scopes, headers={"Accept": mediatypes.OCI_MANIFEST}, ok=(200, 404))
            if response.status_code == 404:
                continue
            try:
                doc = loads(response.content)
                ours = _not_an_entry(doc, tag.removeprefix(TAG_PREFIX)) is None
                created = datetime.datetime.strptime(doc["annotations"][mediatypes.CREATED],
                                                     "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
            except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
                ours, created = False, None
            # Deleted by digest, which removes every tag on it: only an entry that is lamina's for
            # this very key, never an image someone tagged with an entry's name.
            if not ours or created is None or created > limit:
                kept += 1
                continue
            digest = Digest.of_bytes(response.content)
            gone = registry.request("DELETE", f"/v2/{ref.repository}/manifests/{digest}", what=f"delete cache entry {tag}",
                                    scopes=scopes, ok=(202, 200, 404, 405, 400))
            if gone.status_code in (405, 400) or (gone.status_code == 404 and "UNSUPPORTED" in gone.text):
                raise RegistryError(f"{ref.registry}: this registry does not allow deleting manifests "
                                    f"(distribution needs storage: delete: enabled: true); nothing was deleted"
                                    + (f" after {deleted} entries" if deleted else ""))
            deleted += 1
    finally:
        registry.close()
    return deleted, kept


__all__ = ["ARTIFACT_TYPE", "CacheRepo", "cpu_family", "entry_manifest", "parse_entry", "prune", "remote_key"]
