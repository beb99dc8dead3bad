"""``lamina index``: join images built apart (one per CI runner and architecture) into one
multi-platform image, offline.

Each input's manifests are taken byte for byte (so per-platform digests stay the inputs'),
platforms must not clash, every ELF executable must match its manifest's platform (a
mislabelled arm64 binary in an amd64 manifest is refused, as the build refuses it), and the
new index is composed as ``lamina build`` composes one: the same inputs, the same digest.

The ELF check reads each distinct layer once, however many manifests share it (two images
built from one tree share their layers): one streaming pass verifies the blob's digest and
diff_id and takes a census of the ELF identities of its executables. A manifest whose
layers' censuses all fit its platform passes; any other is judged by lint's own check on its
merged filesystem (an upper layer may delete the offending file), which words the refusal.
"""

from __future__ import annotations

import functools
import posixpath
import tarfile
from collections.abc import Sequence

import attrs

from lamina.elf import Ident, candidate, foreign, identify
from lamina.errors import InputError, UnsafePathError, UsageError
from lamina.image import Image, ImageIndex, compose_index
from lamina.layers.entries import normalize
from lamina.model import Digest, Layer, Platform
from lamina.resolve import Resolver
from lamina.sources.archive import layer_openers, open_uncompressed
from lamina.sources.base import platform_matches
from lamina.sources.rootfs import walk_layer


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
            given.append((image, name))
    if check_elf:
        censuses: dict[tuple[Digest, Digest], Census] = {}
        for image, name in given:
            for layer in image.layers:
                key = (layer.descriptor.digest, layer.diff_id)  # a diff_id claim is verified per config
                if key not in censuses:
                    censuses[key] = census(image, layer)
            if not fits([censuses[(layer.descriptor.digest, layer.diff_id)] for layer in image.layers], image.platform):
                _check_machines(name, image)
    return compose_index([image for image, _ in given])


def _same_platform(a: Platform, b: Platform) -> bool:
    return platform_matches(a, b) and platform_matches(b, a)


@attrs.frozen
class Census:
    """What the platform check needs of one layer: the ELF identities of its executables and
    shared objects (lint's candidates), and whether some candidate's bytes are not in the
    layer's own members read here (a hardlink to a lower layer's file, a sparse file)."""

    machines: frozenset[Ident]
    unsure: bool


def census(image: Image, layer: Layer) -> Census:
    """One verified pass over a layer (digest and diff_id checked as bytes stream): the ELF
    header of every candidate regular file, the data of the others skipped."""
    machines: set[Ident] = set()
    heads: dict[str, Ident | None] = {}  # path -> identity of the candidate this layer last wrote there
    unsure = False

    def visit(path: str, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        nonlocal unsure
        if member.islnk():  # shares the bytes of a file written before it
            try:
                target = normalize(member.linkname, what="hardlink")
            except UnsafePathError:
                target = ""
            if target in heads:
                heads[path] = heads[target]
            else:
                heads.pop(path, None)
                unsure = unsure or candidate(path, member.mode)
            return
        heads.pop(path, None)
        if not member.isreg() or not candidate(path, member.mode):
            return
        if member.issparse():
            unsure = True
            return
        data = archive.extractfile(member)
        ident = identify(data.read(20)) if data is not None else None
        heads[path] = ident
        if ident is not None:
            machines.add(ident)

    walk_layer(functools.partial(open_uncompressed, image, layer, ahead=True),
               f"{image.describe()}: layer {layer.descriptor.digest}", visit)
    return Census(frozenset(machines), unsure)


def fits(censuses: Sequence[Census], platform: Platform) -> bool:
    """Whether a manifest with these layers passes the platform check without a closer look:
    no candidate of any layer is an ELF for another platform, and none was left unread."""
    return not any(c.unsure or any(foreign(m, platform) for m in c.machines) for c in censuses)


def _check_machines(name: str, image: Image) -> None:
    """Every executable of the image's merged filesystem is for its platform (lint's L009 check)."""
    import tempfile

    from lamina.lint import LintImage, lint
    from lamina.sources.rootfs import MergedFS

    with tempfile.TemporaryDirectory(prefix="lamina-index-") as spool:
        openers = layer_openers(image)
        fs = MergedFS.read(name, openers)
        wrong = [f for f in lint(LintImage(fs, openers, spool), image.config.config, image.platform) if f.id == "L009"]
    if wrong:
        raise InputError(f"{name}: {image.platform}: {wrong[0].path}: {wrong[0].message}")
