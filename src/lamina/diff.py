"""lamina diff: why two images that should be the same have different digests.

Config differences first, then layer by layer: the same digest, or the entries that differ
(added, removed, content, mode, owner, mtime, link target, PAX records, order).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import attrs

from lamina.sources.rootfs import walk_layer
from lamina.sources.tarball import _KINDS

Opener = Callable[[], BinaryIO]


@attrs.frozen
class Member:
    index: int
    kind: str  # the entry's type, from the typeflag ("0" and "\0" are both a regular file)
    mode: int  # permission bits only: Go's archive/tar (docker) also puts the type bits (0o100000) in the
    #            mode field, GNU tar and lamina do not; the typeflag (kind) already says the type
    owner: tuple[int, int]
    mtime: int
    size: int
    link: str
    content: str
    pax: tuple[tuple[str, str], ...]


@attrs.frozen
class Side:
    """One image as diff reads it: its config and each layer's stored tar stream, plus, when
    known, the layers' stored digests (to tell a compression difference from none)."""

    config: dict[str, Any]
    layers: list[Opener]
    digests: list[str] = attrs.field(factory=list)

    def diff_id(self, i: int) -> str | None:
        ids = (self.config.get("rootfs") or {}).get("diff_ids") or []
        return str(ids[i]) if i < len(ids) else None

    def digest(self, i: int) -> str | None:
        return self.digests[i] if i < len(self.digests) else None


def _members(open_layer: Opener, what: str) -> dict[str, Member]:
    """One layer's members by normalised name (rootfs.walk_layer, the reader every filesystem
    view uses); whiteouts keep their ``.wh.`` names."""
    out: dict[str, Member] = {}

    def visit(path: str, m: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        digest = ""
        if m.isfile():
            h = hashlib.sha256()
            data = archive.extractfile(m)
            while data is not None and (chunk := data.read(1 << 20)):
                h.update(chunk)
            digest = h.hexdigest()
        kind = _KINDS.get(m.type)
        pax = tuple(sorted((k, v) for k, v in m.pax_headers.items() if k not in ("path", "linkpath", "size", "mtime")))
        out[path] = Member(len(out), kind.value.decode() if kind else m.type.decode(errors="replace"), m.mode & 0o7777,
                           (m.uid, m.gid), int(m.mtime), m.size, m.linkname, digest, pax)

    walk_layer(open_layer, what, visit)
    return out


def _config_lines(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key in sorted(set(a) | set(b)):
        if key in ("rootfs",):
            continue
        va, vb = a.get(key), b.get(key)
        if va == vb:
            continue
        if isinstance(va, dict) and isinstance(vb, dict):
            yield from _config_lines(va, vb, f"{prefix}{key}.")
        else:
            yield f"config {prefix}{key}: {json.dumps(va)} -> {json.dumps(vb)}"


def _member_lines(path: str, a: Member, b: Member) -> Iterator[str]:
    if a.kind != b.kind:
        yield f"  {path}: type {a.kind} -> {b.kind}"
    if a.content != b.content:
        yield f"  {path}: content differs ({a.size} -> {b.size} bytes)"
    if a.mode != b.mode:
        yield f"  {path}: mode {a.mode:04o} -> {b.mode:04o}"
    if a.owner != b.owner:
        yield f"  {path}: owner {a.owner[0]}:{a.owner[1]} -> {b.owner[0]}:{b.owner[1]}"
    if a.mtime != b.mtime:
        yield f"  {path}: mtime {a.mtime} -> {b.mtime}"
    if a.link != b.link:
        yield f"  {path}: link target {a.link!r} -> {b.link!r}"
    if a.pax != b.pax:
        yield f"  {path}: PAX records {dict(a.pax)} -> {dict(b.pax)}"


def diff_images(a: Side, b: Side) -> list[str]:
    """Every difference, one line each; empty when the images are the same."""
    lines = list(_config_lines(a.config, b.config))
    for i in range(max(len(a.layers), len(b.layers))):
        if i >= len(a.layers) or i >= len(b.layers):
            which = "second" if i >= len(a.layers) else "first"
            lines.append(f"layer {i}: only in the {which} image")
            continue
        ida, idb = a.diff_id(i), b.diff_id(i)
        da, db = a.digest(i) or ida, b.digest(i) or idb
        if da is not None and da == db:
            continue
        if ida is not None and ida == idb:  # the same tar, stored differently
            lines.append(f"layer {i}: {da or '?'} -> {db or '?'}")
            lines.append("  same content, different compression")
            continue
        ma, mb = _members(a.layers[i], f"first image: layer {i}"), _members(b.layers[i], f"second image: layer {i}")
        detail = []
        for path in sorted(set(ma) | set(mb)):
            if path not in mb:
                detail.append(f"  {path}: removed")
            elif path not in ma:
                detail.append(f"  {path}: added")
            else:
                detail.extend(_member_lines(path, ma[path], mb[path]))
        order_a = [p for p in sorted(ma, key=lambda p: ma[p].index) if p in mb]
        order_b = [p for p in sorted(mb, key=lambda p: mb[p].index) if p in ma]
        if order_a != order_b:
            detail.append("  entry order differs")
        if not detail:
            detail.append("  same entries, different tar bytes (headers or padding)")
        lines.append(f"layer {i}: {da or '?'} -> {db or '?'}")
        lines.extend(detail)
    return lines


def diff_refs(first: str, second: str, platform: Any = None, registry: Any = None) -> list[str]:
    """Diff two images named as --from names them (archives, layouts, registry references)."""
    import contextlib

    from lamina.resolve import Resolver

    with contextlib.ExitStack() as stack:
        images = Resolver(stack, platform, registry)
        sides = []
        for text in (first, second):
            image = images.image(text)
            sides.append(Side(image.config.to_json(), images.openers(text), [str(l.descriptor.digest) for l in image.layers]))
        return diff_images(*sides)
