"""Inputs that vary by platform: ``{os}``, ``{arch}``, ``{variant}``, ``{platform}`` in source
paths, and a spec entry's per-platform table. Resolved before anything reads a file, so a
platform-independent input resolves to the same spec on every platform, builds to the same
layer, and is stored once."""

from __future__ import annotations

import attrs

from lamina.errors import InputError
from lamina.model import Platform
from lamina.sources.files import AddSpec, CopyFromSpec
from lamina.spec import DebsLayer, FilesLayer, LayerSpec, TarballLayer


def substitute(text: str, platform: Platform) -> str:
    for key, value in (("{os}", platform.os), ("{arch}", platform.architecture),
                       ("{variant}", platform.variant), ("{platform}", str(platform))):
        text = text.replace(key, value)
    return text


def _add(spec: AddSpec, platform: Platform) -> AddSpec:
    if spec.per_platform:
        table = dict(spec.per_platform)
        if str(platform) not in table:
            raise InputError(f"add {spec.key} -> {spec.dst}: no source for platform {platform} "
                             f"(the entry lists {', '.join(table)})")
        return attrs.evolve(spec, src=table[str(platform)], per_platform=())
    return attrs.evolve(spec, src=substitute(spec.src, platform))


def for_platform(layer: LayerSpec, platform: Platform) -> LayerSpec:
    if isinstance(layer, DebsLayer):  # packages are chosen per platform when the layer is built
        return layer
    if isinstance(layer, TarballLayer):
        return attrs.evolve(layer, src=substitute(layer.src, platform))
    adds = tuple(
        _add(a, platform) if isinstance(a, AddSpec) else attrs.evolve(a, image=substitute(a.image, platform))
        for a in layer.adds
    )
    return FilesLayer(adds)


__all__ = ["CopyFromSpec", "for_platform", "substitute"]
