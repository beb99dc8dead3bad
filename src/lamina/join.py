"""``lamina index``: join images built apart (one per CI runner and architecture) into one
multi-platform image, offline.

Each input's manifests are taken byte for byte (so per-platform digests stay the inputs'),
platforms must not clash, every ELF executable must match its manifest's platform (a
mislabelled arm64 binary in an amd64 manifest is refused, as the build refuses it), and the
new index is composed as ``lamina build`` composes one: the same inputs, the same digest.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina.errors import InputError, UsageError
from lamina.image import Image, ImageIndex, compose_index
from lamina.model import Platform
from lamina.resolve import Resolver
from lamina.sources.archive import layer_openers
from lamina.sources.base import platform_matches


def join(resolver: Resolver, names: Sequence[str], *, check_elf: bool = True) -> ImageIndex:
    """One index of every platform of every named image, in the order given."""
    if not names:
        raise UsageError("lamina index needs at least one image")
    given: list[tuple[Image, str]] = []
    for name in names:
        for image in resolver.all_platforms(name):
            clash = next((n for i, n in given if _same_platform(i.platform, image.platform)), None)
            if clash is not None:
                raise InputError(f"{name}: platform {image.platform} is already given by {clash}; "
                                 "each platform may appear once")
            if check_elf:
                _check_machines(name, image)
            given.append((image, name))
    return compose_index([image for image, _ in given])


def _same_platform(a: Platform, b: Platform) -> bool:
    return platform_matches(a, b) and platform_matches(b, a)


def _check_machines(name: str, image: Image) -> None:
    """Every executable of the image's filesystem is for its platform (lint's L009 check)."""
    import tempfile

    from lamina.lint import LintImage, lint
    from lamina.sources.rootfs import MergedFS

    with tempfile.TemporaryDirectory(prefix="lamina-index-") as spool:
        openers = layer_openers(image)
        fs = MergedFS.read(name, openers)
        wrong = [f for f in lint(LintImage(fs, openers, spool), image.config.config, image.platform) if f.id == "L009"]
    if wrong:
        raise InputError(f"{name}: {image.platform}: {wrong[0].path}: {wrong[0].message}")
