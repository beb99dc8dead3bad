"""``lamina index``: join images built apart (one per CI runner and architecture) into one
multi-platform image, offline.

Each input's manifests are taken byte for byte (so per-platform digests stay the inputs'),
platforms must not clash, every ELF executable must match its manifest's platform (a
mislabelled arm64 binary in an amd64 manifest is refused, as the build refuses it), and the
new index is composed as ``lamina build`` composes one: the same inputs, the same digest.

The ELF check reads each distinct layer once, however many manifests share it (two images
built from one tree share their layers): one streaming pass, spread over worker threads,
verifies the blob's digest and diff_id, takes a census of the ELF identities of its
executables, and copies the verified blob into the work directory's store, from which the
outputs take it as they take a build's. A manifest whose layers' censuses all fit its
platform passes; any other is judged by lint's own check on its merged filesystem (an upper
layer may delete the offending file), which words the refusal. Censuses are remembered in
the cache by (digest, diff_id), so joining the same layers again reads none of them.
"""

from __future__ import annotations

import functools
import json
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import attrs

from lamina.elf import Ident, candidate, foreign, identify
from lamina.errors import InputError, UsageError
from lamina.home import cache_home, remove_files, replace_file
from lamina.image import Image, ImageIndex, compose_index
from lamina.layers.entries import normalize
from lamina.model import Digest, Layer, Platform
from lamina.resolve import Resolver
from lamina.sources.archive import layer_openers, open_uncompressed
from lamina.sources.base import platform_matches
from lamina.sources.rootfs import member_kind, walk_layer
from lamina.store import BlobStore


def join(resolver: Resolver, names: Sequence[str], *, check_elf: bool = True, store: BlobStore | None = None) -> ImageIndex:
    """One index of every platform of every named image, in the order given. ``store``: the
    work directory's blob store, into which the ELF check's pass copies the blobs it verified,
    so that the outputs copy them from there (by the kernel, as a build's) instead of reading
    and verifying them a second time."""
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
    # Every layer passes once through the verified census, with or without the ELF check: it is
    # where each config's diff_id claim is checked against the bytes (without it, a false one
    # went into the index unseen).
    censuses: dict[tuple[Digest, Digest], Census] = {}
    for i, (image, name) in enumerate(given):
        for layer in image.layers:
            key = (layer.descriptor.digest, layer.diff_id)  # a diff_id claim is verified per config
            if key not in censuses:
                censuses[key] = recalled(layer) or remember(layer, census(image, layer, store))
        if check_elf and not fits([censuses[(layer.descriptor.digest, layer.diff_id)] for layer in image.layers],
                                  image.platform):
            _check_machines(name, image)
        if store is not None and not isinstance(image.blobs, BlobStore) and all(
                store.has(layer.descriptor.digest) for layer in image.layers):
            given[i] = (attrs.evolve(image, blobs=store), name)
    return compose_index([image for image, _ in given])


def _same_platform(a: Platform, b: Platform) -> bool:
    return platform_matches(a, b) and platform_matches(b, a)


@attrs.frozen
class Census:
    """What the platform check needs of one layer: the ELF identities of its executables and
    shared objects (lint's candidates), and whether the layer needs the merged filesystem's
    closer look: a candidate whose bytes are not in the layer's own members read here (a
    sparse file), or a hardlink to a file this layer did not write (a lower layer's, or none)."""

    machines: frozenset[Ident]
    unsure: bool


def census(image: Image, layer: Layer, store: BlobStore | None = None) -> Census:
    """One verified pass over a layer (digest and diff_id checked as bytes stream): the ELF
    header of every candidate regular file, the data of the others skipped. The stored bytes
    are copied into ``store`` as they pass (unless the image's blobs are a store already, or
    it has them), and named there only once the whole pass has verified them."""
    if store is None or isinstance(image.blobs, BlobStore) or store.has(layer.descriptor.digest):
        return _census(image, layer, None)
    with store.writer() as (out, named):
        found = _census(image, layer, out)
        named.append(layer.descriptor.digest)
    return found


def _census(image: Image, layer: Layer, copy_to: BinaryIO | None) -> Census:
    from lamina.sources.tarball import _KINDS

    machines: set[Ident] = set()
    heads: dict[str, Ident | None] = {}  # path -> identity of the candidate this layer last wrote there
    written: set[str] = set()  # every path this layer has written so far
    unsure = False
    what = f"{image.describe()}: layer {layer.descriptor.digest}"

    def visit(path: str, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        nonlocal unsure
        member_kind(member, _KINDS, what)  # a type docker cannot extract is refused, as the merged filesystem does
        if member.islnk():  # shares the bytes of a file written before it
            target = normalize(member.linkname, what=f"{what}: hardlink")  # one leaving the root is refused
            if target in heads:
                heads[path] = heads[target]
            else:
                heads.pop(path, None)
                # Not in this layer: a lower layer's file, or none at all; the merged filesystem decides.
                unsure = unsure or candidate(path, member.mode) or target not in written
            written.add(path)
            return
        written.add(path)
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

    walk_layer(functools.partial(open_uncompressed, image, layer, ahead=True, copy_to=copy_to), what, visit)
    return Census(frozenset(machines), unsure)


# A census is a function of a layer's content alone, and a verified pass names that content
# twice: the blob's digest and the diff_id it decompressed to. Keyed by both, a census taken
# once serves every later ``lamina index`` of the layer (a CI re-run, Make joining again after
# one architecture changed) without reading it: the outputs still verify the blob's digest as
# they copy it, and a memo can only say what a full verified pass of those very bytes found.
CENSUS_FORMAT = 2  # bump when what a census holds, or how it is taken, changes
_MEMO_MAX = 1 << 16


def _memo_path(layer: Layer) -> Path:
    blob, diff = layer.descriptor.digest, layer.diff_id
    return cache_home() / "census" / f"{CENSUS_FORMAT}-{blob.algorithm}-{blob.hex}-{diff.algorithm}-{diff.hex}.json"


def recalled(layer: Layer) -> Census | None:
    """The census a verified pass over this layer (this digest and diff_id) took before, if
    the cache has it; anything unreadable is no memo."""
    try:
        with open(_memo_path(layer), "rb") as f:
            doc = json.loads(f.read(_MEMO_MAX))
        machines = frozenset((int(m), int(c), int(d)) for m, c, d in doc["machines"])
        unsure = doc["unsure"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Census(machines, unsure) if isinstance(unsure, bool) else None


def remember(layer: Layer, found: Census) -> Census:
    """Keep a census its verified pass just took (renamed into place whole); the cache is
    optional, so a failure to write costs only the saving."""
    path = _memo_path(layer)
    doc = json.dumps({"machines": sorted(found.machines), "unsure": found.unsure}).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(str(path), doc)
    except OSError:
        pass
    return found


def forget_censuses() -> tuple[int, int]:
    """Drop every census remembered; (memos, bytes) freed; for ``lamina cache prune``."""
    return remove_files(cache_home() / "census", lambda name: name.endswith(".json"))


def fits(censuses: Sequence[Census], platform: Platform) -> bool:
    """Whether a manifest with these layers passes the platform check without a closer look:
    no candidate of any layer is an ELF for another platform, and none was left unread."""
    return not any(c.unsure or any(foreign(m, platform) for m in c.machines) for c in censuses)


def _check_machines(name: str, image: Image) -> None:
    """Every executable of the image's merged filesystem is for its platform (lint's L009 check)."""
    from lamina.lint import LintImage, lint
    from lamina.sources.rootfs import MergedFS

    with tempfile.TemporaryDirectory(prefix="lamina-index-") as spool:
        openers = layer_openers(image)
        fs = MergedFS.read(name, openers)
        wrong = [f for f in lint(LintImage(fs, openers, spool), image.config.config, image.platform) if f.id == "L009"]
    if wrong:
        raise InputError(f"{name}: {image.platform}: {wrong[0].path}: {wrong[0].message}")
