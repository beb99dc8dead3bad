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
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lamina.sources.base import DEFAULT_PLATFORM, platform_matches
from lamina.home import cache_home
from lamina.errors import DigestMismatch, ImageError, RegistryError, UsageError
from lamina.model import Descriptor, Digest, Platform, Reference, mediatypes
from lamina.registry.client import Registry, printable
from lamina.store import BlobStore

ACCEPT = ", ".join([mediatypes.OCI_INDEX, mediatypes.OCI_MANIFEST, mediatypes.DOCKER_MANIFEST_LIST,
                    mediatypes.DOCKER_MANIFEST])


def cache_dir() -> Path:
    return cache_home() / "images"


FILE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def looks_like_file(text: str) -> bool:
    """A path by its spelling (``./x``, ``/x``, ``~/x``, ``x.tar``, ``x.tgz:REF``, ``x.tar@N``), existing or not."""
    if text.startswith(("/", ".", "~")):
        return True
    path = text.split("@", 1)[0]
    prefixes = [path] + [path[:i] for i, c in enumerate(path) if c == ":"]
    return any(p.endswith(FILE_SUFFIXES) for p in prefixes)


def is_registry_ref(text: str) -> bool:
    """``docker://REF``, or a valid image reference that is not spelled like a file and names none.

    A missing ``base.tar`` must be "no such file", never a lookup of docker.io/library/base.tar.
    """
    if text.startswith("docker://"):
        return True
    if looks_like_file(text) or text.startswith(("oci:", "oci-archive:", "docker-archive:")) or os.path.exists(text):
        return False
    try:
        Reference.parse(text)
    except UsageError:
        return False
    return not os.path.exists(text.split("@", 1)[0].rsplit(":", 1)[0])


class Puller:
    def __init__(self, registry: Registry, repository: str, note: object = None) -> None:
        self.registry = registry
        self.repository = repository
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
            refs: dict[str, dict[str, object]] = json.loads((self.root / "refs.json").read_text())
            return refs
        except (OSError, json.JSONDecodeError):
            return {}

    def _remember(self, key: str, desc: Descriptor) -> None:
        from lamina.sinks.atomic import atomic_file

        refs = self._refs()
        refs[key] = desc.to_json()
        with atomic_file(self.root / "refs.json") as out:
            out.write(json.dumps(refs, sort_keys=True, indent=1).encode())

    def manifest(self, reference: str, expected: Digest | None) -> Descriptor:
        """Fetch (or find cached) the manifest or index named by a tag or digest."""
        if expected is not None and self.store.has(expected):
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
        self.store.put_bytes(data)
        return Descriptor(media_type, digest, len(data))

    def _cached_descriptor(self, digest: Digest) -> Descriptor:
        data = self.store.path(digest).read_bytes()
        return Descriptor(_media_type(document(data, f"cached manifest {digest}")), digest, len(data))

    def blob(self, desc: Descriptor) -> None:
        if self.store.has(desc.digest):
            return
        chunks = self.registry.download(f"/v2/{self.repository}/blobs/{desc.digest}", what=f"get blob {desc.digest}",
                                        scopes=self._scopes, size=desc.size)
        with self.store.writer() as (out, named):
            h = hashlib.sha256()
            for chunk in chunks:  # never more than desc.size bytes
                h.update(chunk)
                out.write(chunk)
            if h.hexdigest() != desc.digest.hex:
                raise DigestMismatch(f"{self.registry.host}/{self.repository}: blob {desc.digest} does not match its digest")
            named.append(desc.digest)


def document(data: bytes, what: str) -> dict[str, Any]:
    """A manifest or index as a JSON object, or an ImageError that says what it is instead."""
    try:
        doc = json.loads(data)
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


def fetch(text: str, platform: Platform | None, registry_for: object, note: object = None) -> tuple[Path, Descriptor]:
    """Make the image named by ``text`` available in the cache; return the cache and its top descriptor."""
    ref = Reference.parse(text.removeprefix("docker://"))
    registry: Registry = registry_for(ref.registry)  # type: ignore[operator]
    puller = Puller(registry, ref.repository, note)
    key = f"{ref.name}:{ref.tag}" if ref.tag else ""
    expected = Digest.parse(ref.digest) if ref.digest else None
    cached = puller._refs().get(key) if key else None  # what the tag named when last pulled whole
    try:
        top = puller.manifest(ref.digest or ref.tag, expected)
        desc = top
        chosen = _choose(puller, top, platform, text)
        what = f"{text}: manifest {chosen.digest}"
        manifest = document(puller.store.path(chosen.digest).read_bytes(), what)
        if "config" not in manifest:
            raise ImageError(f"{what} has no config (is it an image manifest?)")
        blobs = [*descriptors(manifest, "config", what), *descriptors(manifest, "layers", what)]
        with ThreadPoolExecutor(4, thread_name_prefix="lamina-pull") as pool:
            for future in [pool.submit(puller.blob, b) for b in blobs]:
                future.result()
        if key and not expected:  # only once every blob is in: a tag never names a half-pulled image
            puller._remember(key, top)
    except RegistryError as exc:
        if cached is None:
            raise
        desc = Descriptor.from_json(cached)
        if callable(note):
            note(f"{text}: registry unreachable ({exc}); using the cached {desc.digest}")
    finally:
        registry.close()
    return puller.root, desc


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
