"""Image manifests and indexes (OCI image-spec manifest.md, image-index.md)."""

from __future__ import annotations

from typing import Any

import attrs

from lamina.model import canonical, mediatypes
from lamina.model.descriptor import Descriptor, _freeze


@attrs.frozen
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_freeze)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_bytes(self) -> bytes:
        return canonical.dumps(self.to_json())


@attrs.frozen
class Index:
    manifests: tuple[Descriptor, ...]
    annotations: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_freeze)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_INDEX,
            "manifests": [m.to_json() for m in self.manifests],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_bytes(self) -> bytes:
        return canonical.dumps(self.to_json())
