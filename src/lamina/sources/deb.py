"""Debian binary packages (``.deb``) → layer entries, without dpkg and without running anything.

A ``.deb`` is an ar archive of ``debian-binary`` (``2.0``), ``control.tar[.xz|.zst|.gz]``
and ``data.tar[.xz|.zst|.gz]`` (deb(5)). The ar reader here is strict: one malformed
header, an oversized or duplicate member, or a member order deb(5) does not allow is one
clear error naming the file. The data tarball becomes entries through the tarball reader
(the same normalisation as ``--tarball``); what dpkg would have recorded is generated:

- ``/var/lib/dpkg/status.d/NAME``: the control stanza with ``Status: install ok installed``
  (and ``Conffiles``), the distroless convention that syft, trivy and grype read;
- ``/var/lib/dpkg/info/NAME[:ARCH].{list,md5sums,conffiles}``: where ``dpkg-query -L``
  and scanners look for a package's files.

On a base whose ``/lib``, ``/bin`` or ``/sbin`` is a symlink into ``/usr`` (merged-usr),
paths are written through those links, as dpkg's unpack would, so the layer never
replaces the base's symlink with a directory. Maintainer scripts are never run; where one
matters, a one-line note says what it would have done.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import re
import sys
import tarfile
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

import attrs

from lamina.errors import InputError
from lamina.hashing import sha256_stream
from lamina.layers.build import Opener
from lamina.layers.entries import Entry, Kind, normalize, parents
from lamina.sources.dpkg import STATUS_DIR
from lamina.sources.rootfs import MergedFS
from lamina.sources.tarball import _member, _read_errors, open_decompressed

AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60
_MAX_MEMBERS = 16  # deb(5) has three; a few more are tolerated (signatures), never thousands
MAX_CONTROL_FILE = 16 << 20  # one control-archive member (md5sums of a large package is a few MiB)
MAX_DATA = 16 << 30  # the uncompressed data tarball: far beyond any real package, short of a full disk
INFO_DIR = "var/lib/dpkg/info"
_SCRIPTS = ("preinst", "postinst", "prerm", "postrm", "config", "triggers")
_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")

# What a package's maintainer scripts would have done that the image may miss.
SCRIPT_NOTES = {
    "ca-certificates": "its postinst would build /etc/ssl/certs/ca-certificates.crt from /usr/share/ca-certificates; "
                       "lamina runs no scripts: add --ca-certs with the package's PEM files (or --ca-certs alone)",
    "tzdata": "its postinst would set /etc/localtime and /etc/timezone; lamina runs no scripts: set TZ, or add /etc/localtime",
    "libc6": None,  # ld.so.cache is optional: the dynamic loader searches the multiarch directories itself
}

# Debian architecture names of OCI platforms (dpkg-architecture's table, the part images use).
_DEB_ARCH = {("amd64", ""): "amd64", ("arm64", ""): "arm64", ("arm64", "v8"): "arm64", ("arm", "v7"): "armhf",
             ("arm", "v6"): "armel", ("arm", "v5"): "armel", ("386", ""): "i386", ("ppc64le", ""): "ppc64el",
             ("s390x", ""): "s390x", ("riscv64", ""): "riscv64", ("mips64le", ""): "mips64el"}


def _corrupt() -> tuple[type[BaseException], ...]:
    """What a corrupt member raises: the tarball reader's list, plus igzip's own error class
    (isal's IsalError is not an OSError, so tarball._read_errors misses it)."""
    errors = _read_errors()
    if "isal.igzip_lib" in sys.modules:
        errors += (sys.modules["isal.igzip_lib"].IsalError,)
    return errors


def debian_arch(architecture: str, variant: str = "") -> str:
    arch = _DEB_ARCH.get((architecture, variant)) or _DEB_ARCH.get((architecture, ""))
    if arch is None:
        raise InputError(f"no Debian architecture for platform {architecture}{'/' + variant if variant else ''}")
    return arch


@attrs.frozen
class DebFile:
    """One ``--deb FILE`` (spec: ``debs = ["x.deb", {path = "y.deb", sha256 = "…"}]``)."""

    path: str
    sha256: str | None = None
    key: str = ""  # as the user wrote it: how lamina.lock names it


@attrs.frozen
class ArMember:
    name: str
    offset: int
    size: int


def read_ar(f: BinaryIO, name: str) -> list[ArMember]:
    """The members of a common-format ar archive, strictly: any doubt is an InputError."""
    f.seek(0, os.SEEK_END)
    total = f.tell()
    f.seek(0)
    if f.read(len(AR_MAGIC)) != AR_MAGIC:
        raise InputError(f"{name}: not a Debian package (no ar archive header)")
    members: list[ArMember] = []
    pos = len(AR_MAGIC)
    while pos < total:
        if len(members) >= _MAX_MEMBERS:
            raise InputError(f"{name}: corrupt package: more than {_MAX_MEMBERS} ar members")
        f.seek(pos)
        header = f.read(_AR_HEADER)
        if len(header) != _AR_HEADER or header[58:60] != b"`\n":
            raise InputError(f"{name}: corrupt package: bad ar header at offset {pos}")
        try:
            text = header[:58].decode("ascii")
        except UnicodeDecodeError:
            raise InputError(f"{name}: corrupt package: non-ASCII ar header at offset {pos}") from None
        member = text[:16].rstrip(" ")
        member = member[:-1] if member.endswith("/") else member  # GNU ar ends names with '/'
        size_text = text[48:58].rstrip(" ")
        if not member or "/" in member or not size_text.isdigit():
            raise InputError(f"{name}: corrupt package: bad ar member header {text[:16]!r} at offset {pos}")
        size = int(size_text)
        start = pos + _AR_HEADER
        if start + size > total:
            raise InputError(f"{name}: truncated package: member {member!r} needs {size} bytes, "
                             f"{total - start} remain")
        if any(m.name == member for m in members):
            raise InputError(f"{name}: corrupt package: member {member!r} appears twice")
        members.append(ArMember(member, start, size))
        pos = start + size + (size & 1)
    return members


class _Slice(io.RawIOBase):
    """Exactly one ar member's bytes of an open file, nothing before or after."""

    def __init__(self, f: BinaryIO, member: ArMember) -> None:
        self._f = f
        self._pos = member.offset
        self._end = member.offset + member.size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._end - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._pos)
        data = self._f.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _member_stream(f: BinaryIO, member: ArMember) -> BinaryIO:
    """A member as a (decompressed) stream; the compression is detected by magic bytes."""
    return open_decompressed(io.BufferedReader(_Slice(f, member), 1 << 16))


def parse_control(text: str, where: str) -> list[dict[str, str]]:
    """deb822 stanzas (control files, Packages, status): field order and continuation lines kept."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            if current:
                stanzas.append(current)
                current, last = {}, ""
            continue
        if line.startswith("#") and not current:
            continue
        if line[0] in " \t":
            if not last:
                raise InputError(f"{where}: line {number}: continuation line without a field")
            current[last] += "\n" + line
            continue
        key, sep, value = line.partition(":")
        if not sep or not key or " " in key:
            raise InputError(f"{where}: line {number}: expected 'Field: value', got {line[:60]!r}")
        if key in current:
            raise InputError(f"{where}: line {number}: field {key!r} given twice")
        current[key] = value.strip()
        last = key
    if current:
        stanzas.append(current)
    return stanzas


@attrs.frozen
class Deb:
    """One package file, read: its control stanza and what dpkg keeps about it."""

    path: str
    sha256: str
    control: dict[str, str]
    conffiles: tuple[str, ...]
    md5sums: bytes | None  # the package's own md5sums member, verbatim
    scripts: tuple[str, ...]  # maintainer scripts it ships (never run)
    data: ArMember

    @property
    def name(self) -> str:
        return self.control["Package"]

    @property
    def version(self) -> str:
        return self.control["Version"]

    @property
    def arch(self) -> str:
        return self.control["Architecture"]

    @property
    def info_name(self) -> str:
        """dpkg's name for the info files: NAME:ARCH for Multi-Arch: same packages."""
        same = self.control.get("Multi-Arch", "") == "same"
        return f"{self.name}:{self.arch}" if same else self.name


def open_deb(path: str) -> Deb:
    """Read a package's ar structure and control archive (the data is read when the layer is built)."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot read {path!r}: {exc.strerror}") from None
    with f:
        sha256 = sha256_stream(f)[0]
        members = read_ar(f, path)
        names = [m.name for m in members]
        if len(members) < 3 or names[0] != "debian-binary":
            raise InputError(f"{path}: not a Debian binary package (members: {', '.join(names) or 'none'})")
        f.seek(members[0].offset)
        version = f.read(min(members[0].size, 64))
        if not re.match(rb"^2\.\d+\n", version):
            raise InputError(f"{path}: unsupported package format {version[:16]!r} (lamina reads format 2.x)")
        control = members[1]
        data = members[2]
        if not re.match(r"^control\.tar(\.(gz|xz|zst))?$", control.name) or not re.match(
                r"^data\.tar(\.(gz|xz|zst|bz2))?$", data.name):
            raise InputError(f"{path}: not a Debian binary package (members: {', '.join(names)})")
        files, scripts = _control_files(f, control, path)
    if "control" not in files:
        raise InputError(f"{path}: the control archive has no control file")
    stanzas = parse_control(files["control"].decode("utf-8", "replace"), f"{path}: control")
    if len(stanzas) != 1:
        raise InputError(f"{path}: control file holds {len(stanzas)} stanzas, expected 1")
    fields = stanzas[0]
    for key in ("Package", "Version", "Architecture"):
        if not fields.get(key):
            raise InputError(f"{path}: control file has no {key} field")
    if not _NAME.match(fields["Package"]):
        raise InputError(f"{path}: bad package name {fields['Package']!r}")
    if not re.match(r"^[A-Za-z0-9.+~:-]+$", fields["Version"]) or not re.match(r"^[a-z0-9-]+$", fields["Architecture"]):
        raise InputError(f"{path}: bad version or architecture in the control file")
    conffiles = tuple(line.split()[-1] for line in files.get("conffiles", b"").decode("utf-8", "replace").splitlines()
                      if line.strip())
    return Deb(path, sha256, fields, conffiles, files.get("md5sums"), scripts, data)


def _control_files(f: BinaryIO, member: ArMember, path: str) -> tuple[dict[str, bytes], tuple[str, ...]]:
    files: dict[str, bytes] = {}
    scripts: list[str] = []
    total = 0
    try:
        with tarfile.open(fileobj=_member_stream(f, member), mode="r|") as archive:
            for info in archive:
                total += info.size
                if total > 4 * MAX_CONTROL_FILE:  # a control archive is metadata: never gigabytes to skip through
                    raise InputError(f"{path}: the control archive is larger than {4 * MAX_CONTROL_FILE >> 20} MiB")
                name = normalize(info.name, what=f"{path}: control archive entry")
                if name in _SCRIPTS and info.isfile():
                    scripts.append(name)
                if name in ("control", "conffiles", "md5sums") and info.isfile():
                    if info.size > MAX_CONTROL_FILE:
                        raise InputError(f"{path}: control archive member {name!r} is larger than "
                                         f"{MAX_CONTROL_FILE >> 20} MiB")
                    src = archive.extractfile(info)
                    assert src is not None
                    files[name] = src.read(info.size)
    except InputError:
        raise
    except _corrupt() as exc:
        raise InputError(f"{path}: corrupt control archive ({exc})") from None
    return files, tuple(sorted(scripts))


def spool_data(deb: Deb, spool: str) -> str:
    """The data tarball, decompressed once into the build's spool so entries can be read in any order."""
    os.makedirs(spool, exist_ok=True)
    target = os.path.join(spool, f"deb-{deb.sha256}.tar")
    if os.path.exists(target):
        return target
    written = 0
    try:
        with open(deb.path, "rb") as f, open(target + ".part", "wb") as out:
            src = _member_stream(f, deb.data)
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > MAX_DATA:
                    raise InputError(f"{deb.path}: data archive expands beyond {MAX_DATA >> 30} GiB")
                out.write(chunk)
        os.replace(target + ".part", target)
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"{deb.path}: cannot read the data archive: {exc.strerror or exc}") from None
    except _corrupt() as exc:
        raise InputError(f"{deb.path}: corrupt data archive ({exc})") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(target + ".part")
    return target


@attrs.define
class Unpacked:
    """One package's entries (package paths, in archive order) and its generated dpkg files."""

    deb: Deb
    items: list[tuple[Entry, Opener]]
    md5sums: bytes
    conffiles: dict[str, str]  # conffile -> md5 of its content (md5sums files leave conffiles out)


def unpack(deb: Deb, spool: str, stack: contextlib.ExitStack, epoch: int) -> Unpacked:
    """Entries of the package's data tarball, normalised as any tarball's (tarball._member)."""
    tar_path = spool_data(deb, spool)
    try:
        archive = stack.enter_context(tarfile.open(tar_path, mode="r:"))
        items: list[tuple[Entry, Opener]] = []
        seen: set[str] = set()
        dirs: set[str] = set()
        for member in archive:
            items.extend(_member(deb.path, archive, member, "", epoch, seen, dirs))
    except InputError:
        raise
    except _corrupt() as exc:
        raise InputError(f"{deb.path}: corrupt data archive ({exc})") from None
    md5sums = deb.md5sums if deb.md5sums is not None else _md5sums(items)
    wanted = set(deb.conffiles)
    conffiles = {"/" + e.path: _md5(o) for e, o in items if "/" + e.path in wanted and e.kind is Kind.FILE and o}
    return Unpacked(deb, items, md5sums, conffiles)


def _md5(opener: Callable[[], BinaryIO]) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with opener() as src:
        while chunk := src.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _md5sums(items: list[tuple[Entry, Opener]]) -> bytes:
    """What dpkg writes when a package ships no md5sums: one line per regular file."""
    return "".join(f"{_md5(o)}  {e.path}\n" for e, o in items if e.kind is Kind.FILE and o is not None).encode()


def status_stanza(deb: Deb, conffiles: dict[str, str]) -> bytes:
    """The package's control stanza as dpkg's status file has it: Status after Package, and
    the conffiles with the md5sums of their contents."""
    sums = conffiles
    lines = []
    for key, value in deb.control.items():
        lines.append(f"{key}: {value}" if not value.startswith("\n") else f"{key}:{value}")
        if key == "Package":
            lines.append("Status: install ok installed")
    if deb.conffiles:
        lines.append("Conffiles:")
        lines += [f" {c} {sums.get(c, 'newconffile')}" for c in deb.conffiles]
    return ("\n".join(lines) + "\n").encode()


def file_list(unpacked: Unpacked) -> bytes:
    """``info/NAME.list``: every path of the package, as shipped, the way dpkg-query -L prints it."""
    paths = ["/."] + ["/" + e.path for e, _ in unpacked.items]
    return ("\n".join(paths) + "\n").encode()


def notes(deb: Deb) -> Iterator[str]:
    note = SCRIPT_NOTES.get(deb.name)
    if note and deb.scripts:
        yield f"package {deb.name}: {note}"


# ---- one layer of several packages


def _through_links(path: str, base: MergedFS | None) -> str:
    """Where dpkg would write ``path`` on this base: parent directories that are symlinks in
    the base (merged-usr's /lib -> usr/lib) are followed, inside the image only."""
    if base is None or not path:
        return path
    head, tail = posixpath.split(path)
    if not head:
        return path
    try:
        real = base.resolve(head)
    except InputError:
        return path
    if real == head:
        return path
    node = base.get(real)
    if node is not None and node.entry.kind is not Kind.DIR:
        return path
    return f"{real}/{tail}" if real else tail


def _is_link_dir(path: str, base: MergedFS | None) -> bool:
    """The base has a symlink to a directory here: a package's directory entry must not replace it."""
    if base is None:
        return False
    node = base.get(path)
    if node is None or node.entry.kind is not Kind.SYMLINK:
        return False
    try:
        target = base.get(base.resolve(path))
    except InputError:
        return False
    return target is not None and target.entry.kind is Kind.DIR


def _generated(path: str, data: bytes, epoch: int, spool: str | None) -> tuple[Entry, Opener]:
    """A file lamina writes (dpkg's records). Spooled, it is a host file like --add's, so lint
    can read the status stanzas it checks dependencies with."""
    if spool is None:
        return Entry(path, Kind.FILE, mode=0o644, mtime=epoch, size=len(data)), lambda: io.BytesIO(data)
    os.makedirs(spool, exist_ok=True)
    source = os.path.join(spool, "dpkg-" + hashlib.sha256(data).hexdigest())
    if not os.path.exists(source):
        with open(source + ".part", "wb") as out:
            out.write(data)
        os.replace(source + ".part", source)
    return Entry(path, Kind.FILE, mode=0o644, mtime=epoch, size=len(data), source=source), None


def layer_items(packages: Iterable[Unpacked], base: MergedFS | None, epoch: int,
                allow_overwrite: bool = False, spool: str | None = None,
                owners: dict[str, str] | None = None) -> list[tuple[Entry, Opener]]:
    """All packages' entries and dpkg files as one sorted layer: the same set in any order gives
    the same entries. A file shipped by two packages is an error naming both; ``owners`` maps
    the paths earlier package layers installed to their package (and receives this layer's)."""
    owners = owners if owners is not None else {}
    ordered = sorted(packages, key=lambda u: (u.deb.name, u.deb.arch, u.deb.version))
    names = [(u.deb.name, u.deb.arch) for u in ordered]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise InputError(f"package {twice[0]} ({twice[1]}) is given twice")
    chosen: dict[str, tuple[Entry, Opener, str]] = {}  # path in the image -> (entry, opener, package)
    for unpacked in ordered:
        pkg = unpacked.deb.name
        for entry, opener in unpacked.items:
            if entry.kind is Kind.DIR and _is_link_dir(entry.path, base):
                continue
            path = _through_links(entry.path, base)
            linkname = entry.linkname
            if entry.kind is Kind.HARDLINK:
                linkname = _through_links(linkname, base)
            moved = attrs.evolve(entry, path=path, linkname=linkname)
            if entry.kind is not Kind.DIR and owners.get(path, pkg) != pkg and not allow_overwrite:
                raise InputError(f"packages {owners[path]} (an earlier layer) and {pkg} both install /{path}; "
                                 "lamina does not let one package overwrite another's files (allow_overwrite = true does)")
            if path in chosen:
                other = chosen[path]
                if entry.kind is Kind.DIR and other[0].kind is Kind.DIR:
                    continue  # directories are shared; the first package (by name) decides metadata
                if other[2] == pkg:
                    raise InputError(f"package {pkg}: /{path} appears twice (through a merged-usr link?)")
                if not allow_overwrite:
                    raise InputError(f"packages {other[2]} and {pkg} both install /{path}; "
                                     "lamina does not let one package overwrite another's files (allow_overwrite = true does)")
            chosen[path] = (moved, opener, pkg)
        info = f"{INFO_DIR}/{unpacked.deb.info_name}"
        generated = [
            (f"{STATUS_DIR}/{pkg}", status_stanza(unpacked.deb, unpacked.conffiles)),
            (f"{info}.list", file_list(unpacked)),
            (f"{info}.md5sums", unpacked.md5sums),
        ]
        if unpacked.deb.conffiles:
            generated.append((f"{info}.conffiles", ("\n".join(unpacked.deb.conffiles) + "\n").encode()))
        for path, data in generated:
            real = _through_links(path, base)
            if real in chosen:
                raise InputError(f"package {pkg}: /{real} is a file of package {chosen[real][2]}")
            chosen[real] = (*_generated(real, data, epoch, spool), pkg)
    owners.update((path, pkg) for path, (entry, _, pkg) in chosen.items() if pkg and entry.kind is not Kind.DIR)
    # dpkg's database format: 1 names a Multi-Arch: same package's files NAME:ARCH.list.
    fmt = _through_links(f"{INFO_DIR}/format", base)
    if fmt not in chosen and ordered:
        chosen[fmt] = (*_generated(fmt, b"1\n", epoch, spool), "")
    # Parents that neither the packages nor the base have: 0755 root directories.
    for path in list(chosen):
        for parent in parents(path):
            if parent not in chosen and not (base is not None and _base_dir(base, parent)):
                chosen[parent] = (Entry(parent, Kind.DIR, mode=0o755, mtime=epoch), None, "")
    return _hardlinks_in_order([(e, o) for _, (e, o, _) in sorted(chosen.items())], chosen)


def _base_dir(base: MergedFS, path: str) -> bool:
    node = base.get(path)
    return node is not None and node.entry.kind is Kind.DIR


def _hardlinks_in_order(items: list[tuple[Entry, Opener]], chosen: dict[str, tuple[Entry, Opener, str]]
                        ) -> list[tuple[Entry, Opener]]:
    """In path order a hardlink may come before the file it names: the first path of a group
    then carries the data and the others link to it."""
    out: list[tuple[Entry, Opener]] = []
    seen: set[str] = set()
    promoted: dict[str, str] = {}  # original target -> path now carrying its data
    for entry, opener in items:
        if entry.kind is Kind.HARDLINK:
            target = promoted.get(entry.linkname, entry.linkname)
            if target not in seen:
                original = chosen.get(entry.linkname)
                if original is None or original[0].kind is not Kind.FILE:
                    raise InputError(f"/{entry.path} is a hardlink to /{entry.linkname}, which no package installs as a file")
                promoted[entry.linkname] = entry.path
                entry, opener = attrs.evolve(original[0], path=entry.path), original[1]
            else:
                entry = attrs.evolve(entry, linkname=target)
        elif entry.kind is Kind.FILE and entry.path in promoted:
            entry, opener = attrs.evolve(entry, kind=Kind.HARDLINK, size=0, linkname=promoted[entry.path]), None
        out.append((entry, opener))
        seen.add(entry.path)
    return out


def check_arch(deb: Deb, wanted: str) -> None:
    if deb.arch not in ("all", wanted):
        raise InputError(f"{deb.path}: package {deb.name} is for {deb.arch}, not {wanted}; --no-arch-check allows it")


def read_packages(paths: Iterable[str], spool: str, stack: contextlib.ExitStack, epoch: int,
                  pins: Callable[[str], str | None] = lambda _: None) -> list[Unpacked]:
    """Open, verify (a pinned sha256) and unpack each package file."""
    out = []
    for path in paths:
        deb = open_deb(path)
        pin = pins(path)
        if pin is not None and pin != deb.sha256:
            raise InputError(f"{path}: sha256 is {deb.sha256}, pinned {pin}")
        out.append(unpack(deb, spool, stack, epoch))
    return out
