"""Bases from a registry: manifests and blobs fetched into a local content-addressed cache.

The cache (``$XDG_CACHE_HOME/lamina/images``, default ``~/.cache/lamina/images``) is an OCI
layout's ``blobs/`` directory plus ``refs.json`` (tag → digest). Every blob is verified by
digest before it is renamed into place, so the cache never holds a wrong byte. A reference
pinned by digest whose blobs are cached needs no network at all; a tag is looked up, and
when the registry cannot be reached the last digest seen for it is used (and said).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lamina.errors import DigestMismatch, ImageError, UsageError
from lamina.model import Descriptor, Digest, Platform, Reference, mediatypes
from lamina.registry.client import Registry, RegistryError
from lamina.store import BlobStore

ACCEPT = ", ".join([mediatypes.OCI_INDEX, mediatypes.OCI_MANIFEST, mediatypes.DOCKER_MANIFEST_LIST,
                    mediatypes.DOCKER_MANIFEST])


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lamina" / "images"


def is_registry_ref(text: str) -> bool:
    """``docker://REF``, or a valid image reference whose path part is not a local file."""
    if text.startswith("docker://"):
        return True
    if text.startswith(("/", ".", "oci:", "oci-archive:", "docker-archive:")) or os.path.exists(text):
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
            return json.loads((self.root / "refs.json").read_text())
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
        data = response.content
        digest = Digest(hashlib.sha256(data).hexdigest())
        if expected is not None and digest != expected:
            raise DigestMismatch(f"{self.registry.host}/{self.repository}: manifest {reference} has digest {digest}")
        media_type = response.headers.get("content-type", "").split(";")[0] or _media_type(data)
        self.store.put_bytes(data)
        return Descriptor(media_type, digest, len(data))

    def _cached_descriptor(self, digest: Digest) -> Descriptor:
        data = self.store.path(digest).read_bytes()
        return Descriptor(_media_type(data), digest, len(data))

    def blob(self, desc: Descriptor) -> None:
        if self.store.has(desc.digest):
            return
        response = self.registry.request("GET", f"/v2/{self.repository}/blobs/{desc.digest}",
                                         what=f"get blob {desc.digest}", scopes=self._scopes, stream=True)
        try:
            with self.store.writer() as (out, named):
                h = hashlib.sha256()
                for chunk in response.iter_bytes(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
                if h.hexdigest() != desc.digest.hex:
                    raise DigestMismatch(f"{self.registry.host}/{self.repository}: blob {desc.digest} does not match its digest")
                named.append(desc.digest)
        finally:
            response.close()


def _media_type(data: bytes) -> str:
    try:
        doc = json.loads(data)
    except json.JSONDecodeError:
        raise ImageError("a cached manifest is not JSON") from None
    if doc.get("mediaType"):
        return str(doc["mediaType"])
    return mediatypes.OCI_INDEX if "manifests" in doc else mediatypes.OCI_MANIFEST


def fetch(text: str, platform: Platform | None, registry_for: object, note: object = None) -> tuple[Path, Descriptor]:
    """Make the image named by ``text`` available in the cache; return the cache and its top descriptor."""
    ref = Reference.parse(text.removeprefix("docker://"))
    registry: Registry = registry_for(ref.registry)  # type: ignore[operator]
    puller = Puller(registry, ref.repository, note)
    key = f"{ref.name}:{ref.tag}" if ref.tag else ""
    expected = Digest.parse(ref.digest) if ref.digest else None
    try:
        top = puller.manifest(ref.digest or ref.tag, expected)
        if key and not expected:
            puller._remember(key, top)
        desc = top
        chosen = _choose(puller, top, platform, text)
        manifest = json.loads(puller.store.path(chosen.digest).read_bytes())
        blobs = [Descriptor.from_json(manifest["config"]), *(Descriptor.from_json(d) for d in manifest.get("layers", []))]
        with ThreadPoolExecutor(4, thread_name_prefix="lamina-pull") as pool:
            for future in [pool.submit(puller.blob, b) for b in blobs]:
                future.result()
    except RegistryError as exc:
        cached = puller._refs().get(key) if key else None
        if cached is None:
            raise
        desc = Descriptor.from_json(cached)  # type: ignore[arg-type]
        if callable(note):
            note(f"{text}: registry unreachable ({exc}); using the cached {desc.digest}")
    finally:
        registry.close()
    return puller.root, desc


def _choose(puller: Puller, top: Descriptor, platform: Platform | None, text: str) -> Descriptor:
    if top.media_type not in mediatypes.INDEX_TYPES:
        return top
    from lamina.sources.base import platform_matches

    doc = json.loads(puller.store.path(top.digest).read_bytes())
    children = [Descriptor.from_json(m) for m in doc.get("manifests", [])]
    want = platform or Platform("linux", "amd64")
    for child in children:
        if child.platform is not None and platform_matches(child.platform, want):
            puller.manifest(str(child.digest), child.digest)
            return child
    have = ", ".join(sorted({str(c.platform) for c in children if c.platform})) or "none"
    raise ImageError(f"{text}: no image for platform {want} (available: {have})")
