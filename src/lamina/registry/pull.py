"""Bases from a registry: manifests and blobs fetched into a local content-addressed cache.

The cache (``$XDG_CACHE_HOME/lamina/images``, default ``~/.cache/lamina/images``) is an OCI
layout's ``blobs/`` directory plus ``refs.json`` (tag → digest). Every blob is verified by
digest before it is renamed into place, so the cache never holds a wrong byte. A reference
pinned by digest whose blobs are cached needs no network at all; a tag is looked up, and
when the registry cannot be reached the last digest seen for it is used (and said).

What a registry sends is not trusted: a manifest fetched by tag must hash to the
``Docker-Content-Digest`` the registry names, one fetched by digest to that digest; a
manifest that is not a JSON object with the fields lamina reads is an ImageError, never
a crash; blob bodies are cut at their descriptor's size.

A layer is also decompressed and hashed as it downloads (a thread beside each download), and
once its digest has matched, the store records its diff_id (``BlobStore.remember_diff_id``):
the import that follows checks the config's diff_id against that record instead of
decompressing the layer a second time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lamina.model.canonical import loads
from lamina.sources.base import DEFAULT_PLATFORM, platform_matches
from lamina.home import cache_home
from lamina.errors import DigestMismatch, ImageError, LaminaError, OutputError, RegistryError, UsageError
from lamina.model import Descriptor, Digest, Platform, Reference, mediatypes
from lamina.registry.client import Registry, printable
from lamina.store import BlobStore

ACCEPT = ", ".join([mediatypes.OCI_INDEX, mediatypes.OCI_MANIFEST, mediatypes.DOCKER_MANIFEST_LIST,
                    mediatypes.DOCKER_MANIFEST])


def cache_dir() -> Path:
    return cache_home() / "images"


def recorded_layer(digest: Digest, diff_id: Digest) -> tuple[Path, int, bool] | None:
    """The cached blob of ``digest``, its uncompressed size, and whether this process
    downloaded (and so hashed) that very file, if it was recorded as it downloaded to
    decompress to ``diff_id``; a file from an earlier run must be hashed again before use."""
    root = cache_dir()
    if not (root / "diff_ids").is_dir():
        return None
    store = BlobStore(root)
    known = store.known_diff_id(digest)
    if known is None or known[0] != diff_id or not store.has(digest):
        return None
    return store.path(digest), known[1], store.hashed_here(digest)


class Puller:
    def __init__(self, registry: Registry, repository: str, note: object = None, held: list[int] | None = None) -> None:
        self.registry = registry
        self.repository = repository
        # The cached blobs this pull found or wrote, open with a shared flock (BlobStore.hold)
        # until whoever passed the list is done with the image: a prune meanwhile leaves them.
        self.held = held if held is not None else []
        self.root = cache_dir()
        self.store = BlobStore(self.root)
        self.note = note
        layout = self.root / "oci-layout"
        if not layout.exists():
            layout.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
            (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": []}))

    @property
    def _scopes(self) -> tuple[str, ...]:
        return (f"repository:{self.repository}:pull",)

    def _refs(self) -> dict[str, dict[str, object]]:
        try:
            refs = loads((self.root / "refs.json").read_bytes())
        except (OSError, ValueError):
            return {}
        return refs if isinstance(refs, dict) else {}

    def _remember(self, key: str, desc: Descriptor) -> None:
        from lamina.sinks.atomic import atomic_file

        refs = self._refs()
        refs[key] = desc.to_json()
        with atomic_file(self.root / "refs.json") as out:
            out.write(json.dumps(refs, sort_keys=True, indent=1).encode())

    def manifest(self, reference: str, expected: Digest | None) -> Descriptor:
        """Fetch (or find cached) the manifest or index named by a tag or digest."""
        if expected is not None and self.store.hold(expected, self.held):
            return self._cached_descriptor(expected)
        response = self.registry.request(
            "GET", f"/v2/{self.repository}/manifests/{reference}", what=f"get manifest {reference}",
            scopes=self._scopes, headers={"Accept": ACCEPT})
        data = response.content  # capped at MAX_DOCUMENT by the client
        digest = Digest(hashlib.sha256(data).hexdigest())
        where = f"{self.registry.host}/{self.repository}"
        if expected is not None and digest != expected:
            raise DigestMismatch(f"{where}: manifest {reference} has digest {digest}")
        named = response.headers.get("docker-content-digest", "").strip()
        if named.startswith("sha256:") and named != str(digest):
            raise DigestMismatch(f"{where}: manifest {reference} was announced as {printable(named, 80)} but its bytes are {digest}")
        doc = document(data, f"{where}: manifest {reference}")
        media_type = response.headers.get("content-type", "").split(";")[0].strip() or _media_type(doc)
        self._keep(data)
        return Descriptor(media_type, digest, len(data))

    def _keep(self, data: bytes) -> None:
        """A manifest's bytes into the store, held there for this build (see BlobStore.hold)."""
        for _ in range(3):
            if self.store.hold(self.store.put_bytes(data), self.held):
                return
        raise ImageError(f"{self.root}: a manifest was removed from the cache as it was written (a prune?)")

    def _cached_descriptor(self, digest: Digest) -> Descriptor:
        data = self.store.path(digest).read_bytes()
        return Descriptor(_media_type(document(data, f"cached manifest {digest}")), digest, len(data))

    def blob(self, desc: Descriptor, layer: bool = False) -> None:
        """One blob into the cache, verified by digest, and held there for this build; a ``layer``
        also gets its diff_id recorded."""
        for _ in range(3):  # a prune may remove it between the download and the hold
            if self.store.hold(desc.digest, self.held):
                return
            self._download(desc, layer)
        raise ImageError(f"{self.root}: blob {desc.digest} was removed from the cache as it was written (a prune?)")

    def _download(self, desc: Descriptor, layer: bool) -> None:
        chunks = self.registry.download(f"/v2/{self.repository}/blobs/{desc.digest}", what=f"get blob {desc.digest}",
                                        scopes=self._scopes, size=desc.size)
        side = _DiffId(f"{self.registry.host}/{self.repository}: layer {desc.digest}") if layer else None
        try:
            with self.store.writer() as (out, named):
                h = hashlib.sha256()
                for chunk in chunks:  # never more than desc.size bytes
                    h.update(chunk)
                    out.write(chunk)
                    if side is not None:
                        side.feed(chunk)
                if h.hexdigest() != desc.digest.hex:
                    raise DigestMismatch(f"{self.registry.host}/{self.repository}: blob {desc.digest} does not match its digest")
                named.append(desc.digest)
        finally:
            found = side.result() if side is not None else None
        if found is not None:  # the digest matched: these are the bytes that decompressed to found
            self.store.remember_diff_id(desc.digest, *found)


class _Pipe(io.RawIOBase):
    """Chunks handed over from a download thread, read as a file by the diff_id thread (bounded:
    memory stays flat). A reader that gives up stops taking chunks; the feeder never blocks on it."""

    def __init__(self) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue(4)
        self._left = memoryview(b"")
        self._ended = False
        self.abandoned = False

    def feed(self, chunk: bytes | None) -> None:
        while not self.abandoned:
            try:
                self._queue.put(chunk, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def _next(self) -> bool:
        """The next chunk into ``_left`` (waiting for it); False at the end."""
        while not self._left:
            if self._ended:
                return False
            chunk = self._queue.get()
            if chunk is None:
                self._ended = True
                return False
            self._left = memoryview(chunk)
        return True

    def peek(self, size: int = 0) -> bytes:
        """The next bytes, not consumed (what open_decompressed sniffs the compression from)."""
        return bytes(self._left[:max(size, 4096)]) if self._next() else b""

    def readinto(self, buffer: Any) -> int:
        if not self._next():
            return 0
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


class _DiffId:
    """The uncompressed digest and size of the bytes fed to it, computed on a thread of its own
    by the very code an import uses (``open_decompressed``, ``content_digest``); None when they
    do not decompress (the import then says why)."""

    def __init__(self, what: str) -> None:
        self._pipe = _Pipe()
        self._what = what
        self._found: tuple[Digest, int] | None = None
        self._held: list[bytes] = []
        self._size = 0
        self._thread = threading.Thread(target=self._run, name="lamina-diff-id", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from lamina.layers.pipeline import CHUNK
        from lamina.hashing import content_digest
        from lamina.sources.tarball import open_decompressed

        try:  # the pipe read directly (it peeks): the decompressor reads into its own buffer, one copy
            found = content_digest(open_decompressed(self._pipe), self._what)  # type: ignore[arg-type]
            while self._pipe.read(CHUNK):  # bytes after the compressed stream still belong to the blob
                pass
            self._found = found
        except Exception:  # noqa: BLE001 - not decompressible: no record, and the import will say so
            self._found = None
        finally:
            self._pipe.abandoned = True

    def feed(self, chunk: bytes) -> None:
        """Network reads are small (~64 KiB): handed over in pieces of 1 MiB, fewer hand-overs."""
        self._held.append(chunk)
        self._size += len(chunk)
        if self._size >= 1 << 20:
            self._pipe.feed(b"".join(self._held))
            self._held, self._size = [], 0

    def result(self) -> tuple[Digest, int] | None:
        """Ends the stream and waits for the digest. Only meaningful after every byte was fed."""
        if self._held:
            self._pipe.feed(b"".join(self._held))
            self._held, self._size = [], 0
        self._pipe.feed(None)
        self._thread.join()
        return self._found


def document(data: bytes, what: str) -> dict[str, Any]:
    """A manifest or index as a JSON object, or an ImageError that says what it is instead."""
    try:
        doc = loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageError(f"{what} is not JSON ({printable(str(exc))})") from None
    if not isinstance(doc, dict):
        raise ImageError(f"{what} is not a JSON object")
    return doc


def descriptors(doc: dict[str, Any], field: str, what: str) -> list[Descriptor]:
    """``doc[field]``, a descriptor or a list of them; anything malformed is an ImageError."""
    raw = doc.get(field)
    items = [raw] if field == "config" else raw if raw is not None else []
    if not isinstance(items, list):
        raise ImageError(f"{what}: {field!r} is not a list")
    try:
        return [Descriptor.from_json(item) for item in items]
    except (KeyError, TypeError, ValueError, AttributeError, UsageError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ImageError(f"{what}: a descriptor in {field!r} is malformed ({detail})") from None


def _media_type(doc: dict[str, Any]) -> str:
    if isinstance(doc.get("mediaType"), str) and doc["mediaType"]:
        return str(doc["mediaType"])
    return mediatypes.OCI_INDEX if "manifests" in doc else mediatypes.OCI_MANIFEST


def fetch(text: str, platform: Platform | None, registry_for: object, note: object = None,
          held: list[int] | None = None) -> tuple[Path, Descriptor]:
    """Make the image named by ``text`` available in the cache; return the cache and its top
    descriptor. ``held``: receives the open, flocked blobs (see Puller), for the caller to close."""
    ref = Reference.parse(text.removeprefix("docker://"))
    registry: Registry = registry_for(ref.registry)  # type: ignore[operator]
    puller = Puller(registry, ref.repository, note, held)
    key = f"{ref.name}:{ref.tag}" if ref.tag else ""
    expected = Digest.parse(ref.digest) if ref.digest else None
    cached = puller._refs().get(key) if key else None  # what the tag named when last pulled whole
    try:
        desc = _pull(puller, ref.digest or ref.tag, expected, platform, text)
        if key and not expected:  # only once every blob is in: a tag never names a half-pulled image
            puller._remember(key, desc)
    except RegistryError as exc:
        if cached is None:
            raise
        desc = Descriptor.from_json(cached)
        try:  # all in the cache, unless pruned since: held there, with no request
            _pull(puller, str(desc.digest), desc.digest, platform, text)
        except RegistryError:
            raise RegistryError(f"{exc} (and the cache no longer holds all of {text} as last pulled)") from None
        if callable(note):
            note(f"{text}: registry unreachable ({exc}); using the cached {desc.digest}")
    finally:
        registry.close()
    return puller.root, desc


def _pull(puller: Puller, reference: str, expected: Digest | None, platform: Platform | None, text: str) -> Descriptor:
    """The manifest (or index) ``reference`` names, and every blob of the image chosen for
    ``platform``, in the cache and held there for this build; returns the top descriptor."""
    top = puller.manifest(reference, expected)
    chosen = _choose(puller, top, platform, text)
    what = f"{text}: manifest {chosen.digest}"
    manifest = document(puller.store.path(chosen.digest).read_bytes(), what)
    if "config" not in manifest:
        raise ImageError(f"{what} has no config (is it an image manifest?)")
    config, layers = descriptors(manifest, "config", what), descriptors(manifest, "layers", what)
    with ThreadPoolExecutor(4, thread_name_prefix="lamina-pull") as pool:
        futures = [pool.submit(puller.blob, b) for b in config] + [pool.submit(puller.blob, b, True) for b in layers]
        for future in futures:
            future.result()
    return top


def _choose(puller: Puller, top: Descriptor, platform: Platform | None, text: str) -> Descriptor:
    if top.media_type not in mediatypes.INDEX_TYPES:
        return top

    what = f"{text}: index {top.digest}"
    children = descriptors(document(puller.store.path(top.digest).read_bytes(), what), "manifests", what)
    want = platform or DEFAULT_PLATFORM
    for child in children:
        if child.platform is not None and platform_matches(child.platform, want):
            puller.manifest(str(child.digest), child.digest)
            return child
    have = ", ".join(sorted({str(c.platform) for c in children if c.platform})) or "none"
    raise ImageError(f"{text}: no image for platform {want} (available: {have})")


def prune() -> tuple[int, int]:
    """Empty the cache of pulled images, but for the blobs a running build holds (BlobStore.hold);
    (blobs, bytes) removed. The tags remembered for offline use go with their manifests, and
    the diff_id records with their blobs. Directories are opened without following symlinks
    (store.open_directory): a link planted in a shared cache removes nothing outside it."""
    from lamina.sinks.atomic import atomic_file
    from lamina.store import open_directory, remove_unless_held

    root = cache_dir()
    if os.path.islink(root):  # planted: nothing is read, removed or written through it
        raise OutputError(f"cannot prune {root}: it is a symlink, not a directory of lamina's")
    if not (root / "blobs").exists():
        return 0, 0
    try:
        blobs = open_directory(root, "blobs", "sha256")
    except OSError as exc:
        raise OutputError(f"cannot prune {root}/blobs/sha256: {exc.strerror} (not a directory of lamina's)") from None
    removed, freed = 0, 0
    try:
        for name in sorted(os.listdir(blobs)):
            size = remove_unless_held(blobs, name)
            if size is not None:
                removed, freed = removed + 1, freed + size
        left = set(os.listdir(blobs))
    finally:
        os.close(blobs)
    with contextlib.suppress(OSError):
        records = open_directory(root, "diff_ids", "sha256")
        try:
            for name in os.listdir(records):
                if name not in left:
                    with contextlib.suppress(OSError):  # a directory planted there stays
                        os.unlink(name, dir_fd=records)
        finally:
            os.close(records)
    try:
        refs = loads((root / "refs.json").read_bytes())
    except (OSError, ValueError):
        return removed, freed
    if isinstance(refs, dict):
        kept = {k: v for k, v in refs.items() if isinstance(v, dict) and str(v.get("digest", "")).removeprefix("sha256:") in left}
        if kept != refs:
            with contextlib.suppress(LaminaError, OSError):
                with atomic_file(root / "refs.json") as out:
                    out.write(json.dumps(kept, sort_keys=True, indent=1).encode())
    return removed, freed
