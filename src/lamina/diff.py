"""lamina diff: why two images that should be the same have different digests.

Config differences first, then layer by layer: the same digest, or the entries that differ
(added, removed, content, mode, owner, mtime, link target, PAX records, order).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import attrs

from lamina.image import Image
from lamina.sources.tarball import layer_tar


@attrs.frozen
class Member:
    index: int
    kind: str
    mode: int
    owner: tuple[int, int]
    mtime: float
    size: int
    link: str
    content: str
    pax: tuple[tuple[str, str], ...]


def _members(open_layer: Callable[[], BinaryIO]) -> dict[str, Member]:
    out: dict[str, Member] = {}
    with open_layer() as raw, layer_tar(raw) as archive:
        for index, m in enumerate(archive):
            digest = ""
            if m.isfile():
                h = hashlib.sha256()
                data = archive.extractfile(m)
                while data is not None and (chunk := data.read(1 << 20)):
                    h.update(chunk)
                digest = h.hexdigest()
            pax = tuple(sorted((k, v) for k, v in m.pax_headers.items() if k not in ("path", "linkpath", "size")))
            out[m.name.rstrip("/")] = Member(index, m.type.decode(errors="replace"), m.mode, (m.uid, m.gid), m.mtime,
                                             m.size, m.linkname, digest, pax)
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
        yield f"  {path}: mtime {a.mtime:g} -> {b.mtime:g}"
    if a.link != b.link:
        yield f"  {path}: link target {a.link!r} -> {b.link!r}"
    if a.pax != b.pax:
        yield f"  {path}: PAX records {dict(a.pax)} -> {dict(b.pax)}"


def diff_images(a: Image, b: Image, open_a: list[Callable[[], BinaryIO]],
                open_b: list[Callable[[], BinaryIO]]) -> list[str]:
    """Every difference, one line each; empty when the images are the same."""
    lines = list(_config_lines(a.config.to_json(), b.config.to_json()))
    for i in range(max(len(a.layers), len(b.layers))):
        if i >= len(a.layers) or i >= len(b.layers):
            which = "second" if i >= len(a.layers) else "first"
            lines.append(f"layer {i}: only in the {which} image")
            continue
        da, db = a.layers[i].descriptor.digest, b.layers[i].descriptor.digest
        if da == db:
            continue
        ma, mb = _members(open_a[i]), _members(open_b[i])
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
        if not detail and a.layers[i].diff_id != b.layers[i].diff_id:
            detail.append("  same entries, different tar bytes (headers or padding)")
        if not detail:
            detail.append("  same content, different compression")
        lines.append(f"layer {i}: {da} -> {db}")
        lines.extend(detail)
    return lines


def diff_refs(first: str, second: str, platform: Any = None, registry: Any = None) -> list[str]:
    """Diff two images named as --from names them (archives, layouts, registry references)."""
    import contextlib

    from lamina.resolve import Resolver

    with contextlib.ExitStack() as stack:
        images = Resolver(stack, platform, registry)
        a, b = images.image(first), images.image(second)
        return diff_images(a, b, images.openers(first), images.openers(second))
