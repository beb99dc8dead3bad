"""Content descriptors: how one blob points at another."""

from __future__ import annotations

from typing import Any

import attrs

from lamina.errors import ParseError
from lamina.model.digest import Digest
from lamina.model.platform import Platform


def _freeze(items: dict[str, str] | tuple[tuple[str, str], ...] | None) -> tuple[tuple[str, str], ...]:
    if not items:
        return ()
    pairs = items.items() if isinstance(items, dict) else items
    return tuple(sorted(pairs))


@attrs.frozen
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_freeze)
    platform: Platform | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    @classmethod
    def from_json(cls, data: Any) -> Descriptor:
        """Parse a descriptor someone else wrote; anything malformed is a ParseError."""
        if not isinstance(data, dict):
            raise ParseError(f"a descriptor must be a JSON object, not {type(data).__name__}")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        if not isinstance(media_type, str) or not isinstance(digest, str):
            raise ParseError("a descriptor needs string mediaType and digest")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 1 << 63:  # int64, as the spec says
            shown = str(size)[:40] if isinstance(size, int) else repr(size)[:40]  # an int of 5,000 digits: cut
            raise ParseError(f"descriptor {digest}: size {shown} is not a non-negative 64-bit integer")
        annotations = data.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            raise ParseError(f"descriptor {digest}: annotations must map strings to strings")
        platform = None
        if isinstance(data.get("platform"), dict):
            p = data["platform"]
            fields = [p.get(k, "") for k in ("os", "architecture", "variant")]
            if not all(isinstance(f, str) for f in fields):
                raise ParseError(f"descriptor {digest}: platform fields must be strings")
            platform = Platform(*fields)
        return cls(media_type=media_type, digest=Digest.parse(digest), size=size,
                   annotations=tuple(annotations.items()), platform=platform)
