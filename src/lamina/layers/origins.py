"""Where each layer of a build came from: built by it, taken from the local cache, or taken
from a cache repository. The metadata file records it per layer. This plain log serves a build
without a cache repository, which so never imports the registry; lamina.registry.cache_repo's
CacheRepo extends it with the lookups and uploads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

import attrs

from lamina.model import Digest, Layer
from lamina.store import BlobStore

BUILT, LOCAL, REMOTE = "built", "local cache", "cache repo"


@attrs.define
class LayerLog:
    """Where each layer of a build came from (for the metadata file); no cache repository."""

    sources: dict[Digest, str] = attrs.field(factory=dict)
    downloaded: int = 0

    def lookup(self, local_key: str, created_by: str, store: BlobStore, put_local: Callable[[Layer], None]) -> Layer | None:
        return None

    def built(self, local_key: str | None, layer: Layer, source: str) -> None:
        self.sources.setdefault(layer.descriptor.digest, source)

    @property
    def mounts(self) -> dict[Digest, tuple[str, ...]]:
        return {}

    def fetch_missing(self, store: BlobStore) -> Callable[[Digest], None] | None:
        return None

    def wrap_push(self, push: Callable[..., Any], store: BlobStore) -> Callable[..., Any]:
        """``push`` (which takes a PushPlan), made to mount this build's cache-repository hits
        (their blobs are not in the store) and to fetch one only if it cannot be mounted."""
        fetch = self.fetch_missing(store)
        if fetch is None or not self.mounts:
            return push

        def fetching(opener: Callable[[Digest], BinaryIO]) -> Callable[[Digest], BinaryIO]:
            def open_blob(digest: Digest) -> BinaryIO:
                fetch(digest)
                return opener(digest)
            return open_blob

        def push_plan(plan: Any, **kw: Any) -> Any:
            return push(attrs.evolve(plan, mounts={**self.mounts, **plan.mounts}, open_blob=fetching(plan.open_blob),
                                     open_unverified=fetching(plan.open_unverified) if plan.open_unverified else None), **kw)
        return push_plan

    def publish(self, store: BlobStore, pushed: str | None) -> int:
        return 0

    def close(self) -> None:
        pass

    def summary(self) -> str | None:
        return None
