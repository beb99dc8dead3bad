"""Content descriptors: how one blob points at another."""

from __future__ import annotations

from typing import Any

import attrs

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
    def from_json(cls, data: dict[str, Any]) -> Descriptor:
        platform = None
        if isinstance(data.get("platform"), dict):
            p = data["platform"]
            platform = Platform(p.get("os", ""), p.get("architecture", ""), p.get("variant", ""))
        return cls(
            media_type=data["mediaType"],
            digest=Digest.parse(data["digest"]),
            size=int(data["size"]),
            annotations=tuple((data.get("annotations") or {}).items()),
            platform=platform,
        )
