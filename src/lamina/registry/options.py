"""How to reach registries (kept apart from the client so building imports no HTTP stack)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from lamina.registry.client import Registry


@attrs.frozen
class Options:
    insecure: tuple[str, ...] = ()
    ca_file: str | None = None
    chunk_size: int | None = None
    debug: Callable[[str], None] | None = None
    progress: Callable[[str], None] | None = None

    def registry(self, host: str) -> Registry:
        from lamina.registry.client import Registry

        return Registry(host, insecure=host in self.insecure, ca_file=self.ca_file, debug=self.debug)
