"""Base images (``--from``) and the images of ``--copy-from``: parse, open, select one image.

Forms, as skopeo names them: ``scratch``; ``docker-archive:PATH[:REF|@N]``;
``oci-archive:PATH[:REF]``; ``oci:DIR[:REF]``; or a bare path whose kind is detected.
REF matches ``org.opencontainers.image.ref.name``, the containerd image name, or a docker
``RepoTags`` entry; an index resolves to the manifest for the build's platform, with
containerd's normalisation (arm64 = arm64/v8, amd64 = amd64/v1).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from lamina.errors import ImageError, UsageError
from lamina.image import Image
from lamina.model import Descriptor, Platform, Reference

if TYPE_CHECKING:  # the archive reader, for builds that open an image (every build wants DEFAULT_PLATFORM)
    from lamina.sources.archive import Entry, ImageSource


FILE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def looks_like_file(text: str) -> bool:
    """A path by its spelling (``./x``, ``/x``, ``~/x``, ``x.tar``, ``x.tgz:REF``, ``x.tar@N``), existing or not."""
    if text.startswith(("/", ".", "~")):
        return True
    path = text.split("@", 1)[0]
    prefixes = [path] + [path[:i] for i, c in enumerate(path) if c == ":"]
    return any(p.endswith(FILE_SUFFIXES) for p in prefixes)


def is_registry_ref(text: str) -> bool:
    """``docker://REF``, or a valid image reference that is not spelled like a file and names none.

    A missing ``base.tar`` must be "no such file", never a lookup of docker.io/library/base.tar.
    """
    if text.startswith("docker://"):
        return True
    if looks_like_file(text) or text.startswith(("oci:", "oci-archive:", "docker-archive:")) or os.path.exists(text):
        return False
    try:
        Reference.parse(text)
    except UsageError:
        return False
    return not os.path.exists(text.split("@", 1)[0].rsplit(":", 1)[0])


DEFAULT_PLATFORM = Platform("linux", "amd64")  # the one default, as docker's on amd64 hosts

_TRANSPORTS = ("docker-archive", "oci-archive", "oci")


@attrs.frozen
class BaseRef:
    """A parsed base reference: where the archive is and which image in it."""

    transport: str  # one of _TRANSPORTS, or "" to detect
    path: str
    ref: str = ""
    index: int | None = None
    text: str = ""
    digest: str = ""  # PATH@sha256:… selects (and pins) a manifest or index by digest

    @classmethod
    def parse(cls, text: str) -> BaseRef:
        transport, sep, rest = text.partition(":")
        if not sep or transport not in _TRANSPORTS:
            transport, rest = "", text
        if not rest:
            raise UsageError(f"bad image {text!r}: expected [docker-archive:|oci-archive:|oci:]PATH[:REF]")
        path, ref, index, digest = rest, "", None, ""
        pinned = re.match(r"^(.*)@(sha256:[0-9a-f]{64})$", rest)
        match = re.match(r"^(.*)@(\d+)$", rest)
        if pinned:
            path, digest = pinned[1], pinned[2]
        elif match and transport in ("docker-archive", ""):
            path, index = match[1], int(match[2])
        elif ":" in rest and not os.path.exists(rest):
            # REF may hold ':' itself (name:tag): the path is the shortest prefix that exists.
            cuts = [i for i, c in enumerate(rest) if c == ":"]
            cut = next((i for i in cuts if os.path.exists(rest[:i])), cuts[-1])
            path, ref = rest[:cut], rest[cut + 1:]
        if not path:
            raise UsageError(f"bad image {text!r}: no path")
        return cls(transport, path, ref, index, text, digest)

    def __str__(self) -> str:
        return self.text or self.path


def _matches(name: str, wanted: str) -> bool:
    if name == wanted:
        return True
    try:
        return str(Reference.parse(name)) == str(Reference.parse(wanted))
    except UsageError:
        return False


def _select_entry(source: ImageSource, ref: BaseRef) -> Entry:
    from lamina.sources.archive import Entry, entries, is_index, manifests

    found = entries(source)
    if not found:
        raise ImageError(f"{ref}: the archive holds no image")
    if ref.digest:
        for entry in found:
            if entry.descriptor is not None and str(entry.descriptor.digest) == ref.digest:
                return entry
            if entry.descriptor is not None and is_index(entry.descriptor):
                for child in manifests(source, entry.descriptor):
                    if str(child.digest) == ref.digest:
                        return Entry(entry.names, descriptor=child)
        raise ImageError(f"{ref}: no manifest or index with digest {ref.digest} in the archive")
    if ref.index is not None:
        if ref.index >= len(found):
            raise ImageError(f"{ref}: the archive holds {len(found)} image(s); @{ref.index} is out of range")
        return found[ref.index]
    if ref.ref:
        hits = [e for e in found if any(_matches(n, ref.ref) for n in e.names)]
        if not hits:
            names = sorted({n for e in found for n in e.names}) or ["(none)"]
            raise ImageError(f"{ref}: no image named {ref.ref!r} (the archive has: {', '.join(names)})")
        return hits[0]
    distinct = {(e.descriptor.digest if e.descriptor else e.docker.get("Config") if e.docker else None) for e in found}
    if len(distinct) > 1:
        listing = "; ".join(f"@{i} {e.describe()}" for i, e in enumerate(found))
        raise ImageError(f"{ref}: the archive holds {len(found)} images; pick one with :REF or @N ({listing})")
    return found[0]


def platform_matches(have: Platform, want: Platform) -> bool:
    """containerd's rule, simplified: same os and arch; a wanted variant must match."""
    norm_have = _normal(have)
    norm_want = _normal(want)
    if (norm_have.os, norm_have.architecture) != (norm_want.os, norm_want.architecture):
        return False
    return not norm_want.variant or norm_have.variant == norm_want.variant


def _normal(p: Platform) -> Platform:
    try:
        return Platform.parse(str(p))
    except UsageError:
        return p


def open_image(ref: BaseRef, platform: Platform | None) -> tuple[ImageSource, Image]:
    """Open the archive and select one single-platform image (the caller closes the source)."""
    from lamina.sources.archive import ImageSource

    path = Path(ref.path)
    if ref.transport == "oci" and not path.is_dir():
        raise ImageError(f"{ref}: {ref.path!r} is not a directory")
    if ref.transport in ("docker-archive", "oci-archive") and path.is_dir():
        raise ImageError(f"{ref}: {ref.path!r} is a directory, not an archive")
    if not path.exists():
        raise ImageError(f"{ref}: {ref.path!r}: no such file or directory")
    source = ImageSource.open(path)
    try:
        if ref.transport == "docker-archive" and not source.has("manifest.json"):
            raise ImageError(f"{ref}: not a docker archive (no manifest.json)")
        if ref.transport in ("oci", "oci-archive") and not source.has("index.json"):
            raise ImageError(f"{ref}: not an OCI layout (no index.json)")
        entry = _select_entry(source, ref)
        return source, _resolve(source, ref, entry, platform)
    except BaseException:
        source.close()
        raise


def _resolve(source: ImageSource, ref: BaseRef, entry: Entry, platform: Platform | None) -> Image:
    from lamina.sources.archive import is_index, load_docker, load_manifest, manifests

    if entry.docker is not None and ref.transport not in ("oci", "oci-archive"):
        image = load_docker(source, entry.docker, entry.names)
    else:
        assert entry.descriptor is not None
        desc = entry.descriptor
        if is_index(desc):
            candidates = [c for c in manifests(source, desc) if c.platform is not None]
            want = platform or DEFAULT_PLATFORM
            hits = [c for c in candidates if c.platform is not None and platform_matches(c.platform, want)]
            if not hits:
                have = ", ".join(sorted({str(c.platform) for c in candidates})) or "none"
                raise ImageError(f"{ref}: no image for platform {want} (available: {have})")
            desc = hits[0]
        image = load_manifest(source, desc, entry.names)
    if platform is not None and not platform_matches(image.platform, platform):
        raise ImageError(f"{ref}: the image is for {image.platform}, not {platform}")
    return image


def open_descriptor(root: Path, desc: Descriptor, platform: Platform | None, name: str) -> tuple[ImageSource, Image]:
    """An image known by its top descriptor in a layout directory (the registry cache)."""
    from lamina.sources.archive import Entry, ImageSource

    source = ImageSource.open(root)
    try:
        return source, _resolve(source, BaseRef("oci", str(root), text=name), Entry((name,), descriptor=desc), platform)
    except BaseException:
        source.close()
        raise


def open_all(ref: BaseRef) -> tuple[ImageSource, list[Image]]:
    """Every platform of the one image the archive names (for ``lamina index``); the caller
    closes the source."""
    from lamina.sources.archive import ImageSource, load_docker, load_manifest, manifests

    path = Path(ref.path)
    if not path.exists():
        raise ImageError(f"{ref}: {ref.path!r}: no such file or directory")
    source = ImageSource.open(path)
    try:
        entry = _select_entry(source, ref)
        if entry.docker is not None and ref.transport not in ("oci", "oci-archive"):
            return source, [load_docker(source, entry.docker, entry.names)]
        assert entry.descriptor is not None
        return source, [load_manifest(source, desc, entry.names) for desc in manifests(source, entry.descriptor)]
    except BaseException:
        source.close()
        raise
