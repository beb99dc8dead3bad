"""A finished layer: every digest and size known, nothing left to compute."""

from __future__ import annotations

import attrs

from lamina.model.descriptor import Descriptor
from lamina.model.digest import Digest


@attrs.frozen
class Layer:
    descriptor: Descriptor
    diff_id: Digest
    uncompressed_size: int | None  # None for a base layer passed through unread
    entry_count: int | None
    created_by: str
