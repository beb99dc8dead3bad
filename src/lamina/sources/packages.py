"""A package layer: ``--deb`` files and ``--package`` names (resolved from the ``[apt]`` sources
for the platform's architecture) → one sorted layer's entries, with dpkg's records."""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from lamina.errors import InputError
from lamina.layers.build import Opener
from lamina.layers.entries import Entry, Kind
from lamina.model import Platform
from lamina.sources import dpkg
from lamina.sources.rootfs import MergedFS

if TYPE_CHECKING:  # apt and deb (9 attrs classes, their regexes) are imported by builds that install packages
    from lamina.sources import apt, deb


def base_status(base: MergedFS | None, read: Callable[[str], bytes | None],
                earlier: list[tuple[str, str]] | None = None) -> apt.Installed:
    """The packages the base image's dpkg status (and distroless status.d) lists, and those
    earlier package layers of this build installed."""
    from lamina.sources import apt

    if base is None:
        return apt.installed_from(earlier or [])
    paths = [p for p in (dpkg.STATUS,) if base.get(p) is not None]
    paths += sorted(p for p, n in base.nodes.items()
                    if posixpath.dirname(p) == dpkg.STATUS_DIR and n.entry.kind is Kind.FILE)
    texts = []
    for path in paths:
        data = read(path)
        if data is not None:
            texts.append((f"/{path}", data.decode("utf-8", "replace")))
    return apt.installed_from([*texts, *(earlier or [])])


def resolve_packages(packages: tuple[str, ...], sources: tuple[apt.AptSource, ...], arch: str,
                     installed: apt.Installed, note: Callable[[str], None]) -> list[apt.Candidate]:
    from lamina.sources import apt

    if not packages:
        return []
    if not sources:
        raise InputError(f"--package {packages[0]}: no apt source to find it in (give --apt-source URL|DIR SUITE COMPONENT)")
    candidates = [c for source in sources for c in apt.read_index(source, arch, note)]
    return apt.resolve(packages, apt.Universe(candidates, arch), installed)


@attrs.define
class Installs:
    """What the package layers of one build installed, per platform: the records lamina.lock
    and the SBOM use, the status stanzas a later layer's resolution counts as installed, and
    which package owns each path, so a later layer cannot silently overwrite an earlier one's."""

    packages: list[apt.Locked] = attrs.field(factory=list)
    status: dict[str, list[tuple[str, str]]] = attrs.field(factory=dict)  # platform -> [(where, stanza)]
    owners: dict[str, dict[str, str]] = attrs.field(factory=dict)  # platform -> path -> package
    said: set[str] = attrs.field(factory=set)  # notes already given (once per build, not per platform)

    def once(self, note: Callable[[str], None]) -> Callable[[str], None]:
        def say(message: str) -> None:
            if message not in self.said:
                self.said.add(message)
                note(message)

        return say


def package_items(debs: tuple[deb.DebFile, ...], packages: tuple[str, ...], sources: tuple[apt.AptSource, ...],
                  platform: Platform, base: MergedFS | None, read_base: Callable[[str], bytes | None],
                  spool: str, epoch: int, stack: contextlib.ExitStack, note: Callable[[str], None],
                  arch_check: bool = True, lock: dict[str, str] | None = None,
                  locked: tuple[apt.Locked, ...] = (), hermetic: bool = False,
                  installs: Installs | None = None, allow_overwrite: bool = False) -> list[tuple[Entry, Opener]]:
    """Every package's entries as one layer; ``installs`` receives what was installed.
    Packages the lock lists for this request and platform are fetched by its URL and sha256,
    without reading any index; ``hermetic`` refuses a request the lock does not list."""
    from lamina.sources import apt, deb

    arch = deb.debian_arch(platform.architecture, platform.variant)
    installs = installs if installs is not None else Installs()
    note = installs.once(note)
    earlier = installs.status.setdefault(str(platform), [])
    files: list[tuple[str, str | None]] = [(d.path, d.sha256 or (lock or {}).get(d.key or d.path)) for d in debs]
    request = apt.request_key(packages)
    pinned = [p for p in locked if p.request == request and p.platform == str(platform)] if packages else []
    origin: dict[str, tuple[str, str]] = {}  # fetched file -> (request, url)
    if pinned:
        for p in pinned:
            path = apt.fetch_url(p.name, p.url, p.sha256, p.size, "lamina.lock")
            files.append((path, p.sha256))
            origin[path] = (request, p.url)
    elif packages and hermetic:
        raise InputError(f"hermetic build refused: packages {request} for {platform} are not in lamina.lock "
                         "(run 'lamina lock')")
    else:
        installed = base_status(base, read_base, earlier)
        for candidate in resolve_packages(packages, sources, arch, installed, note):
            path = apt.fetch(candidate)
            files.append((path, candidate.sha256))
            origin[path] = (request, candidate.url)
    pins = dict(files)
    unpacked = deb.read_packages([p for p, _ in files], spool, stack, epoch, pins.get)
    for u in unpacked:
        if arch_check:
            deb.check_arch(u.deb, arch)
        for line in deb.notes(u.deb):
            note(line)
    owners = installs.owners.setdefault(str(platform), {})
    items = deb.layer_items(unpacked, base, epoch, allow_overwrite, spool=spool, owners=owners)
    for u in unpacked:
        req, url = origin.get(u.deb.path, ("", u.deb.path))
        installs.packages.append(apt.Locked(req, str(platform), u.deb.name, u.deb.version, u.deb.arch, url,
                                            u.deb.sha256, os.path.getsize(u.deb.path)))
        earlier.append((f"{u.deb.name} (an earlier layer)", deb.status_stanza(u.deb, u.conffiles).decode()))
    return items


STATUS_CAP = 64 << 20  # a whole distribution's dpkg status is a few MiB


def purl(name: str, version: str, arch: str) -> str:
    """The package URL scanners use for a Debian package (purl-spec's deb type)."""
    from urllib.parse import quote

    return f"pkg:deb/debian/{quote(name, safe='')}@{quote(version, safe='')}?arch={quote(arch, safe='')}"


def spdx_packages(status: dict[str, bytes], debs: tuple[apt.Locked, ...]) -> list[dict[str, object]]:
    """One SPDX package per installed Debian package (base's and the build's), sorted by name;
    the .deb's sha256 where this build installed it."""
    from lamina.sources import deb

    sums = {(d.name, d.version, d.arch): d.sha256 for d in debs}
    found: dict[tuple[str, str], dict[str, str]] = {}
    for path, data in sorted(status.items()):
        try:
            stanzas = deb.parse_control(data.decode("utf-8", "replace"), f"/{path}")
        except InputError:
            continue  # not lamina's to judge here: lint reports an unreadable status
        for stanza in stanzas:
            if {"Package", "Version", "Architecture"} <= set(stanza) and \
                    stanza.get("Status", "install ok installed").split()[-1:] == ["installed"]:
                found[(stanza["Package"], stanza["Architecture"])] = stanza
    out: list[dict[str, object]] = []
    for n, (key, stanza) in enumerate(sorted(found.items())):
        name, arch, version = stanza["Package"], stanza["Architecture"], stanza["Version"]
        package: dict[str, object] = {
            "SPDXID": f"SPDXRef-DebianPackage-{n}", "name": name, "versionInfo": version,
            "downloadLocation": "NOASSERTION", "filesAnalyzed": False, "comment": f"Debian package, architecture {arch}",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": purl(name, version, arch)}],
        }
        if (name, version, arch) in sums:
            package["checksums"] = [{"algorithm": "SHA256", "checksumValue": sums[(name, version, arch)]}]
        out.append(package)
    return out
