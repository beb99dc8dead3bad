"""Debian repositories without apt: Release → Packages → a closed set of packages → verified .debs.

A source is ``URL|DIR SUITE COMPONENT``, the one-line form of sources.list. Its
``dists/SUITE/InRelease`` (or ``Release``) lists the sha256 and size of every index; the
``Packages`` index (``.xz``, ``.gz`` or plain, whichever Release lists) is accepted only if it
matches. Each package is then fetched into the cache and accepted only if its bytes match the
``SHA256`` of its stanza. The OpenPGP signature of InRelease is not checked: the caller is told
so once (pin packages with ``lamina lock`` and ``--hermetic`` for a build that trusts nothing).

Resolution follows Depends and Pre-Depends (alternatives in order, version constraints,
virtual packages through Provides) to a closed set, leaving out what the base image's dpkg
status already has. The highest version of each name wins; ``NAME=VERSION`` pins one.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs

from lamina.errors import DigestMismatch, InputError, UsageError
from lamina.hashing import sha256_file

MAX_RELEASE = 16 << 20
MAX_PACKAGES = 1 << 30  # a decompressed Packages index (Debian main/amd64 is ~50 MiB)
MAX_DEB = 4 << 30
_TIMEOUT = 60
_PACKAGE = re.compile(r"^([a-z0-9][a-z0-9+.-]+)(?:=([A-Za-z0-9.+~:-]+))?$")
_RELATION = re.compile(r"^([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\s*(?:\(\s*(<<|<=|=|>=|>>|<|>)\s*([^)\s]+)\s*\))?$")


@attrs.frozen
class AptSource:
    url: str  # http(s)://… or a local directory
    suite: str
    component: str
    keyring: str = ""  # an OpenPGP keyring (binary, as /usr/share/keyrings has) the Release must be signed by

    def __str__(self) -> str:
        return f"{self.url} {self.suite} {self.component}"


def parse_apt_source(*parts: str) -> AptSource:
    if len(parts) != 3 or not all(parts):
        raise UsageError(f"bad --apt-source {' '.join(parts)!r}: expected URL|DIR SUITE COMPONENT")
    url, suite, component = parts
    for value in (suite, component):
        if not re.match(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", value) or ".." in value.split("/"):
            raise UsageError(f"bad --apt-source {' '.join(parts)!r}: {value!r} is not a suite or component name")
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url) and not url.startswith(("http://", "https://")):
        raise UsageError(f"bad --apt-source {url!r}: lamina reads http://, https:// or a directory")
    return AptSource(url, suite, component)


def parse_package(text: str) -> str:
    if not _PACKAGE.match(text):
        raise UsageError(f"bad --package {text!r}: expected NAME or NAME=VERSION")
    return text


# ---- dpkg versions (deb-version(7))


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return -1 if ac < bc else 1
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return -1 if first_diff < 0 else 1
    return 0


def _split(version: str) -> tuple[int, str, str]:
    epoch, sep, rest = version.partition(":")
    if not sep:
        epoch, rest = "0", version
    upstream, sep, revision = rest.rpartition("-")
    if not sep:
        upstream, revision = rest, ""
    return int(epoch) if epoch.isdigit() else 0, upstream, revision


def compare_versions(a: str, b: str) -> int:
    """dpkg's order of two versions: -1, 0 or 1."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def satisfies(version: str, op: str, wanted: str) -> bool:
    c = compare_versions(version, wanted)
    return {"<<": c < 0, "<": c <= 0, "<=": c <= 0, "=": c == 0, ">=": c >= 0, ">": c >= 0, ">>": c > 0}[op]


@attrs.frozen
class Relation:
    name: str
    op: str = ""
    version: str = ""

    def __str__(self) -> str:
        return f"{self.name} ({self.op} {self.version})" if self.op else self.name


def parse_relations(text: str, where: str) -> list[list[Relation]]:
    """``a (>= 1) | b, c [amd64] <!nocheck>`` → [[a>=1, b], [c]] (architecture lists and build
    profiles are for source packages; a binary package's fields do not carry them)."""
    out = []
    for group in text.split(","):
        group = re.sub(r"\[[^]]*\]|<[^>]*>", "", group.replace("\n", " ")).strip()
        if not group:
            continue
        alternatives = []
        for alt in group.split("|"):
            match = _RELATION.match(alt.strip())
            if match is None:
                raise InputError(f"{where}: cannot parse the relation {alt.strip()!r}")
            alternatives.append(Relation(match[1], match[2] or "", match[3] or ""))
        out.append(alternatives)
    return out


@attrs.frozen
class Locked:
    """One package a build installed, as lamina.lock records it: enough to fetch and verify
    it again without reading any index. ``request`` is the layer's sorted --package list
    ("" for a --deb file)."""

    request: str
    platform: str
    name: str
    version: str
    arch: str
    url: str
    sha256: str
    size: int


def request_key(packages: Iterable[str]) -> str:
    return " ".join(sorted(packages))


# ---- repositories


@attrs.frozen
class Candidate:
    """One package of a repository index."""

    name: str
    version: str
    arch: str
    fields: dict[str, str] = attrs.field(hash=False, eq=False)
    source: AptSource
    filename: str
    sha256: str
    size: int

    @property
    def url(self) -> str:
        return _join(self.source.url, self.filename)

    def relations(self) -> list[list[Relation]]:
        where = f"{self.source}: package {self.name}"
        return [*parse_relations(self.fields.get("Pre-Depends", ""), where),
                *parse_relations(self.fields.get("Depends", ""), where)]

    def provides(self) -> list[Relation]:
        return [alts[0] for alts in parse_relations(self.fields.get("Provides", ""), f"{self.source}: {self.name}")]


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def _join(base: str, relative: str) -> str:
    """``relative`` inside ``base``, never above it (a Filename of ``../../etc/passwd`` is refused)."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or "\x00" in relative:
        raise InputError(f"repository {base}: refusing path {relative!r}")
    clean = "/".join(parts)
    if _is_url(base):
        return base.rstrip("/") + "/" + urllib.parse.quote(clean)
    return os.path.join(base, *parts)


def _read(location: str, cap: int, what: str) -> bytes | None:
    """The bytes at a URL or local path; None when it does not exist; capped."""
    if _is_url(location):
        import urllib.request  # http.client, ssl, email: only when a repository is read over HTTP

        request = urllib.request.Request(location, headers={"User-Agent": "lamina"})
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:  # noqa: S310 (http/https only)
                data: bytes = response.read(cap + 1)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise InputError(f"{what}: {location}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise InputError(f"{what}: {location}: {getattr(exc, 'reason', exc)}") from None
    else:
        try:
            with open(location, "rb") as f:
                data = f.read(cap + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InputError(f"{what}: cannot read {location!r}: {exc.strerror}") from None
    if len(data) > cap:
        raise InputError(f"{what}: {location} is larger than {cap >> 20} MiB")
    return data


def _release_hashes(text: str, where: str) -> dict[str, tuple[str, int]]:
    from lamina.sources.deb import parse_control

    stanzas = parse_control(text, where)
    if not stanzas or "SHA256" not in stanzas[0]:
        raise InputError(f"{where}: no SHA256 list of indexes")
    out = {}
    for line in stanzas[0]["SHA256"].splitlines():
        parts = line.split()
        if len(parts) == 3 and re.match(r"^[0-9a-f]{64}$", parts[0]) and parts[1].isdigit():
            out[parts[2]] = (parts[0], int(parts[1]))
    return out


def _strip_signature(text: str, where: str) -> str:
    """The signed text of an InRelease (RFC 4880 cleartext signature), unverified."""
    lines = text.split("\n")
    if not lines or lines[0].strip() != "-----BEGIN PGP SIGNED MESSAGE-----":
        return text
    try:
        start = lines.index("") + 1
        end = lines.index("-----BEGIN PGP SIGNATURE-----")
    except ValueError:
        raise InputError(f"{where}: malformed cleartext signature") from None
    return "\n".join(line[2:] if line.startswith("- ") else line for line in lines[start:end])


def _verified(keyring: str, where: str, signed: bytes, detached: bytes | None = None) -> str:
    """The text gpgv vouches for: an InRelease's signed part, or a Release with its Release.gpg.
    gpgv runs with a private, empty home, so nothing of the user's GnuPG is read or written."""
    import subprocess
    import tempfile

    if not os.path.isfile(keyring):
        raise InputError(f"{where}: keyring {keyring!r}: no such file")
    with tempfile.TemporaryDirectory(prefix="lamina-gpgv-") as home:
        data = os.path.join(home, "Release")
        with open(data, "wb") as f:
            f.write(signed)
        args = ["gpgv", "--homedir", home, "--keyring", os.path.abspath(keyring)]
        if detached is None:
            args += ["--output", "-", data]
        else:
            sig = os.path.join(home, "Release.gpg")
            with open(sig, "wb") as f:
                f.write(detached)
            args += [sig, data]
        try:
            res = subprocess.run(args, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise InputError(f"{where}: checking the signature needs gpgv, which is not installed") from None
    if res.returncode != 0:
        why = res.stderr.decode("utf-8", "replace").strip().splitlines()
        raise InputError(f"{where}: the Release signature does not verify with {keyring} ({why[-1] if why else 'gpgv failed'})")
    return (res.stdout if detached is None else signed).decode("utf-8", "replace")


def _decompress(data: bytes, name: str, where: str) -> bytes:
    import io

    from lamina.sources.tarball import open_decompressed

    if not name.endswith((".xz", ".gz")):
        return data
    try:
        stream = open_decompressed(io.BufferedReader(io.BytesIO(data)))
        out = stream.read(MAX_PACKAGES + 1)
    except Exception as exc:  # lzma, zlib and EOF errors of a corrupt index
        raise InputError(f"{where}: corrupt {name} ({exc})") from None
    if len(out) > MAX_PACKAGES:
        raise InputError(f"{where}: {name} expands beyond {MAX_PACKAGES >> 20} MiB")
    return out


def read_index(source: AptSource, arch: str, note: Callable[[str], None]) -> list[Candidate]:
    """Every package of one source for one architecture, its index verified against Release."""
    where = f"apt source {source}"
    dist = _join(source.url, f"dists/{source.suite}")
    raw = _read(_join(dist, "InRelease"), MAX_RELEASE, where)
    if raw is not None and source.keyring:
        text = _verified(source.keyring, where, raw)
    elif raw is not None:
        text = _strip_signature(raw.decode("utf-8", "replace"), where)
    else:
        raw = _read(_join(dist, "Release"), MAX_RELEASE, where)
        if raw is None:
            raise InputError(f"{where}: no InRelease or Release under {dist}")
        text = raw.decode("utf-8", "replace")
        if source.keyring:
            signature = _read(_join(dist, "Release.gpg"), MAX_RELEASE, where)
            if signature is None:
                raise InputError(f"{where}: a keyring is given, but the repository has neither InRelease nor Release.gpg")
            _verified(source.keyring, where, raw, signature)
    if not source.keyring:
        note(f"apt source {source}: the Release file's OpenPGP signature is not checked (no --apt-keyring); "
             "its hashes are (pin the packages with lamina lock for a hermetic build)")
    hashes = _release_hashes(text, where)
    base = f"{source.component}/binary-{arch}/Packages"
    for name in (base + ".gz", base + ".xz", base):  # gzip first: igzip reads it 5x faster than xz
        if name not in hashes:
            continue
        digest, size = hashes[name]
        data = _cached_index(digest)
        if data is None:
            data = _read(_join(dist, name), MAX_PACKAGES, where)
            if data is None:
                continue
            if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
                raise DigestMismatch(f"{where}: {name} does not match the sha256 and size the Release file gives")
            _keep_index(digest, data)
        body = _decompress(data, name, where).decode("utf-8", "replace")
        return [_candidate(s, source, where) for s in _index_stanzas(body)]
    raise InputError(f"{where}: the Release file lists no {base}(.xz|.gz) that the repository has")


_INDEX_FIELDS = ("Package", "Version", "Architecture", "Filename", "SHA256", "Size", "Depends", "Pre-Depends", "Provides")
_FIELD = re.compile(r"^(" + "|".join(_INDEX_FIELDS) + r"):[ \t]*(.*(?:\n[ \t].*)*)", re.M)


def _index_stanzas(body: str) -> list[dict[str, str]]:
    """Only the fields resolution needs, from each stanza: a whole Debian main index
    (60,000 stanzas) stays small and quick to read."""
    return [dict(_FIELD.findall(stanza)) for stanza in re.split(r"\n\s*\n", body) if stanza.strip()]


def _index_cache() -> Path:
    return deb_cache().parent / "apt-indexes"


def _cached_index(digest: str) -> bytes | None:
    """An index already fetched, by the sha256 the Release file names (checked again)."""
    path = _index_cache() / digest
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == digest else None


def _keep_index(digest: str, data: bytes) -> None:
    import contextlib

    with contextlib.suppress(OSError):  # the cache only saves time
        root = _index_cache()
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{digest}.{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, root / digest)


def _candidate(fields: dict[str, str], source: AptSource, where: str) -> Candidate:
    for key in ("Package", "Version", "Architecture", "Filename", "SHA256", "Size"):
        if key not in fields:
            raise InputError(f"{where}: package {fields.get('Package', '?')} has no {key} field")
    if not re.match(r"^[0-9a-f]{64}$", fields["SHA256"]) or not fields["Size"].isdigit():
        raise InputError(f"{where}: package {fields['Package']} has a malformed SHA256 or Size")
    return Candidate(fields["Package"], fields["Version"], fields["Architecture"], fields, source,
                     fields["Filename"], fields["SHA256"], int(fields["Size"]))


# ---- installed packages (the base image's dpkg status)


@attrs.frozen
class Installed:
    versions: dict[str, str] = attrs.field(factory=dict)  # name -> version
    provided: dict[str, list[str]] = attrs.field(factory=dict)  # virtual name -> provided versions ("" unversioned)

    def satisfies(self, rel: Relation) -> bool:
        if rel.name in self.versions and (not rel.op or satisfies(self.versions[rel.name], rel.op, rel.version)):
            return True
        return any(not rel.op or (v and satisfies(v, rel.op, rel.version)) for v in self.provided.get(rel.name, []))


def installed_from(texts: Iterable[tuple[str, str]]) -> Installed:
    """What (name, text) dpkg status files say is installed ("install ok installed", or no
    Status at all: the distroless status.d convention)."""
    from lamina.sources.deb import parse_control

    out = Installed()
    for name, text in texts:
        for stanza in parse_control(text, name):
            status = stanza.get("Status", "install ok installed").split()
            if "Package" not in stanza or status[-1:] != ["installed"]:
                continue
            out.versions[stanza["Package"]] = stanza.get("Version", "")
            for rel in parse_relations(stanza.get("Provides", ""), name):
                out.provided.setdefault(rel[0].name, []).append(rel[0].version if rel[0].op == "=" else "")
    return out


# ---- resolution


class Universe:
    """Every candidate of the sources for one architecture, by name and by what it provides."""

    def __init__(self, candidates: Iterable[Candidate], arch: str) -> None:
        self.by_name: dict[str, list[Candidate]] = {}
        self.providers: dict[str, list[tuple[Candidate, str]]] = {}
        for c in candidates:
            if c.arch not in (arch, "all"):
                continue
            self.by_name.setdefault(c.name, []).append(c)
            for rel in c.provides() if "Provides" in c.fields else ():
                self.providers.setdefault(rel.name, []).append((c, rel.version if rel.op == "=" else ""))
        for group in self.by_name.values():
            _sort_desc(group)

    def best(self, rel: Relation) -> Candidate | None:
        for c in self.by_name.get(rel.name, []):
            if not rel.op or satisfies(c.version, rel.op, rel.version):
                return c
        for c, version in sorted(self.providers.get(rel.name, []), key=lambda p: p[0].name):
            if not rel.op or (version and satisfies(version, rel.op, rel.version)):
                return c
        return None


def _sort_desc(group: list[Candidate]) -> None:
    import functools

    def newest_first(a: Candidate, b: Candidate) -> int:
        return compare_versions(b.version, a.version)

    group.sort(key=functools.cmp_to_key(newest_first))


def _chosen_satisfies(chosen: dict[str, Candidate], rel: Relation) -> bool:
    hit = chosen.get(rel.name)
    if hit is not None and (not rel.op or satisfies(hit.version, rel.op, rel.version)):
        return True
    for c in chosen.values():
        for p in c.provides():
            if p.name == rel.name and (not rel.op or (p.op == "=" and satisfies(p.version, rel.op, rel.version))):
                return True
    return False


def resolve(requests: Iterable[str], universe: Universe, installed: Installed) -> list[Candidate]:
    """The closed set of packages that ``requests`` (NAME[=VERSION]) need, minus what is installed."""
    chosen: dict[str, Candidate] = {}
    pending: list[tuple[list[Relation], str]] = []
    for text in requests:
        name, _, version = text.partition("=")
        pending.append(([Relation(name, "=" if version else "", version)], "requested"))
    while pending:
        alternatives, why = pending.pop(0)
        if any(_chosen_satisfies(chosen, r) or installed.satisfies(r) for r in alternatives):
            continue  # chosen already, or the base has it
        picked = next((c for c in (universe.best(r) for r in alternatives) if c is not None), None)
        if picked is None:
            wanted = " | ".join(str(r) for r in alternatives)
            known = universe.by_name.get(alternatives[0].name)
            have = f" (the sources have {', '.join(c.version for c in known)})" if known else ""
            raise InputError(f"cannot resolve {wanted}, needed by {why}: no package in the apt sources provides it{have}")
        if picked.name in chosen:
            other = chosen[picked.name]
            if other.version != picked.version:
                raise InputError(f"{why} needs {' | '.join(str(r) for r in alternatives)}, "
                                 f"but {picked.name} {other.version} was already chosen")
            continue
        chosen[picked.name] = picked
        for group in picked.relations():
            pending.append((group, f"{picked.name} {picked.version}"))
    return [chosen[name] for name in sorted(chosen)]


# ---- fetching


def deb_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lamina" / "debs"


def fetch(candidate: Candidate, cache: Path | None = None) -> str:
    """The package file in the cache, verified by the index's sha256 (a cached file is checked again)."""
    return fetch_url(candidate.name, candidate.url, candidate.sha256, candidate.size, "the index", cache)


def fetch_url(name: str, location: str, sha256: str, size: int, authority: str, cache: Path | None = None) -> str:
    """``location`` into the cache as ``SHA256.deb``, accepted only if it hashes to ``sha256``
    (``authority`` names who said so, for the error)."""
    root = cache or deb_cache()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{sha256}.deb"
    if target.is_file():
        try:
            if sha256_file(str(target)) == sha256:
                return str(target)
            target.unlink()  # a changed byte in the cache: fetch again
        except OSError as exc:
            raise InputError(f"package {name}: cannot read the cached {str(target)!r}: {exc.strerror}") from None
    tmp = root / f".{sha256}.{os.getpid()}.part"
    h = hashlib.sha256()
    total = 0
    try:
        with open(tmp, "wb") as out:
            for chunk in _stream(location, f"package {name}"):
                total += len(chunk)
                if total > min(size, MAX_DEB):
                    raise DigestMismatch(f"package {name}: {location} is larger than {authority} says ({size} bytes)")
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != sha256 or total != size:
            raise DigestMismatch(f"package {name}: {location} has sha256 {h.hexdigest()}, {authority} says {sha256}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return str(target)


def _stream(location: str, what: str) -> Iterable[bytes]:
    if _is_url(location):
        import urllib.request  # http.client, ssl, email: only when a repository is read over HTTP

        request = urllib.request.Request(location, headers={"User-Agent": "lamina"})
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:  # noqa: S310
                while chunk := response.read(1 << 20):
                    yield chunk
        except urllib.error.HTTPError as exc:
            raise InputError(f"{what}: {location}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise InputError(f"{what}: {location}: {getattr(exc, 'reason', exc)}") from None
        return
    try:
        with open(location, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk
    except OSError as exc:
        raise InputError(f"{what}: cannot read {location!r}: {exc.strerror}") from None


__all__ = ["AptSource", "Candidate", "Installed", "Universe", "compare_versions", "fetch", "installed_from",
           "parse_apt_source", "parse_package", "parse_relations", "read_index", "resolve"]
