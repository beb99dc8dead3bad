"""What scratch lacks, generated deterministically: CA certificates, accounts, /tmp, tzdata.

Each is opt-in (``--ca-certs``, ``--accounts``, ``--tmp``, ``--tzdata``) and becomes one
ordinary files layer, the image's last: it amends what the layers below it have (a rootfs's
/etc/passwd keeps its lines, its CA bundle its certificates, its /tmp gets mode 1777), so it
is generated per platform from the image below, and is the same layer, cached and shared,
wherever that image's amended files are the same. Generated files are written under the
build's work directory, in a directory named by their digest.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path
from typing import Protocol

import attrs

from lamina.errors import InputError, UsageError
from lamina.image import ConfigChanges
from lamina.sources.files import AddSpec

BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Where Go (crypto/x509/root_linux.go) and OpenSSL-based distributions keep the bundle.
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
)
SYSTEM_ZONEINFO = "/usr/share/zoneinfo"
NONROOT_UID = 65532  # as distroless
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)


@attrs.frozen
class Essentials:
    ca_certs: tuple[str, ...] | None = None  # None: off; (): the build machine's bundle
    accounts: bool = False
    tmp: bool = False
    tzdata: str | None = None  # None: off; "": the build machine's zoneinfo

    @property
    def wanted(self) -> bool:
        return self.ca_certs is not None or self.accounts or self.tmp or self.tzdata is not None


def system_bundle() -> str:
    env = os.environ.get("SSL_CERT_FILE")
    for path in ((env,) if env else ()) + SYSTEM_BUNDLES:
        if os.path.isfile(path):
            return path
    raise InputError("--ca-certs: no CA bundle on this machine (looked at SSL_CERT_FILE and " + ", ".join(SYSTEM_BUNDLES) + ")")


def pem_files(paths: tuple[str, ...]) -> list[str]:
    """The certificate files --ca-certs reads: each file named, every .pem and .crt under each
    directory named (read through symlinks, as /etc/ssl/certs holds them)."""
    files: list[str] = []
    for path in paths or (system_bundle(),):
        if os.path.isdir(path):
            found = sorted(os.path.join(d, f) for d, _, names in os.walk(path) for f in names if f.endswith((".pem", ".crt")))
            if not found:
                raise InputError(f"--ca-certs {path}: no .pem or .crt files in this directory")
            files.extend(found)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise InputError(f"--ca-certs {path}: no such file or directory")
    return files


def _certificates(name: str, data: bytes, into: dict[str, bytes]) -> int:
    """Add the DER bytes of every PEM certificate in ``data`` to ``into`` (by sha256); how many."""
    blocks = _PEM.findall(data)
    for block in blocks:
        try:
            der = base64.b64decode(b"".join(block.split()), validate=True)
        except ValueError:
            raise InputError(f"{name}: a certificate block is not valid base64") from None
        into[hashlib.sha256(der).hexdigest()] = der
    return len(blocks)


def ca_bundle(paths: tuple[str, ...], below: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    """Every certificate of the inputs and of the image's own bundles (``below``: name, bytes),
    once each, sorted by the sha256 of its DER bytes."""
    certificates: dict[str, bytes] = {}
    for name, data in below:
        _certificates(name, data, certificates)
    for path in pem_files(paths):
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"--ca-certs {path}: cannot read: {exc.strerror}") from None
        if not _certificates(f"--ca-certs {path}", data, certificates):
            raise InputError(f"--ca-certs {path}: no PEM certificate in this file")
    pems = []
    for key in sorted(certificates):
        b64 = base64.b64encode(certificates[key]).decode()
        lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
        pems.append("-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n")
    return "".join(pems).encode()


class Below(Protocol):
    """The image below the essentials layer (lint.LintImage is one), whose files essentials amend."""

    def read(self, path: str) -> bytes | None: ...

    def exists(self, path: str) -> bool: ...

    def fetch_paths(self, paths: tuple[str, ...]) -> None: ...


_ACCOUNT_FILES = ("/etc/passwd", "/etc/group")


def _user(user: str | None) -> tuple[str, int | None] | None:
    """``--user`` as (NAME, UID or None) when --accounts may have to add it; root, nonroot and
    numeric users need nothing."""
    if not user or user.split(":")[0].isdigit():
        return None
    name, sep, uid = user.partition(":")
    if sep and not uid.isdigit():
        raise UsageError(f"--user {user}: with --accounts, give a new user as NAME:UID (e.g. app:1000)")
    builtin = {"root": "0", "nonroot": str(NONROOT_UID)}
    if name in builtin:
        if sep and uid != builtin[name]:
            raise UsageError(f"--user {user}: with --accounts, {name} is uid {builtin[name]}")
        return None
    if not re.match(r"^[a-z_][a-z0-9_-]*$", name):
        raise UsageError(f"--user {user}: {name!r} is not a valid user name")
    return name, int(uid) if sep else None


def configure(essentials: Essentials, config: ConfigChanges) -> ConfigChanges:
    """The config changes essentials make, the same on every platform: SSL_CERT_FILE, and
    ``--user NAME:UID`` becoming USER NAME."""
    env = [("SSL_CERT_FILE", BUNDLE)] if essentials.ca_certs is not None and "SSL_CERT_FILE" not in dict(config.env) else []
    user = config.user
    if essentials.accounts:
        wanted = _user(config.user)
        if wanted is not None:
            user = wanted[0]
    return attrs.evolve(config, env=(*env, *config.env), user=user)


def _fields(line: str) -> list[str]:
    return line.rstrip("\r").split(":")


def _amend(path: str, below: bytes | None, wanted: list[str]) -> bytes | None:
    """An /etc/passwd or /etc/group: the image's lines, every one kept, plus the wanted ones.

    A wanted line already there verbatim is not added again; root is added only when no line
    names it; any other line with the same name or the same id is a clash, an error naming both
    lines. None when nothing changes.
    """
    text = (below or b"").decode("utf-8", "surrogateescape")
    lines = text.splitlines()
    accounts = [_fields(line) for line in lines if line.strip() and not line.startswith(("#", "+", "-"))]
    added: list[str] = []
    for line in wanted:
        name, _, uid = _fields(line)[:3]
        if line in lines or (name == "root" and any(f[0] == "root" for f in accounts)):
            continue
        for fields in accounts:
            same = "name" if fields[0] == name else "id" if len(fields) > 2 and fields[2] == uid else None
            if same:
                raise InputError(f"--accounts: the image's {path} has {':'.join(fields)!r}, which clashes with {line!r} "
                                 f"that --accounts adds (the same {same}) — use the image's accounts (drop --accounts) "
                                 "or another --user NAME:UID")
        added.append(line)
        accounts.append(_fields(line))
    if not added and below is not None:
        return None
    root = [line for line in added if line.startswith("root:")]
    rest = [line for line in added if not line.startswith("root:")]
    return "".join(line + "\n" for line in [*root, *lines, *rest]).encode("utf-8", "surrogateescape")


def materialize(essentials: Essentials, config: ConfigChanges, below: Below, root: Path) -> list[AddSpec]:
    """Write the generated files under ``root`` and return the entries that add them on top of
    ``below``. Equal outputs get equal paths (a directory named by their digest), so the layer
    they make is the same wherever the image below holds the same amended files."""
    reads = (_ACCOUNT_FILES if essentials.accounts else ()) + (SYSTEM_BUNDLES if essentials.ca_certs is not None else ())
    below.fetch_paths(reads)  # one pass over the layers that hold them
    files: list[tuple[str, bytes, str]] = []  # (name under root, bytes, destination)
    dirs: list[tuple[str, str, int, int]] = []  # (name under root, destination, mode, uid)
    if essentials.ca_certs is not None:
        own = tuple((f"the image's {b}", data) for b in SYSTEM_BUNDLES if (data := below.read(b)) is not None)
        files.append(("ca-certificates.crt", ca_bundle(essentials.ca_certs, own), BUNDLE))
    if essentials.accounts:
        passwd = ["root:x:0:0:root:/root:/sbin/nologin", f"nonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/sbin/nologin"]
        group = ["root:x:0:", f"nonroot:x:{NONROOT_UID}:"]
        extra = _user(config.user)
        if extra is not None:
            name, uid = extra
            listed = any(_fields(line)[0] == name for line in (below.read("/etc/passwd") or b"").decode(errors="replace").splitlines())
            if uid is None and not listed:
                raise UsageError(f"--user {name}: the image has no such user; with --accounts, give a new user as NAME:UID "
                                 f"(e.g. {name}:1000)")
            if uid is not None:
                passwd.append(f"{name}:x:{uid}:{uid}:{name}:/home/{name}:/sbin/nologin")
                group.append(f"{name}:x:{uid}:")
        for dst, wanted in (("/etc/passwd", passwd), ("/etc/group", group)):
            amended = _amend(dst, below.read(dst), wanted)
            if amended is not None:
                files.append((dst.rsplit("/", 1)[1], amended, dst))
        if not below.exists("/etc/nsswitch.conf"):
            files.append(("nsswitch.conf", b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n", "/etc/nsswitch.conf"))
        dirs += [(home, f"/{home}", 0o700, uid) for home, uid in (("root", 0), ("home/nonroot", NONROOT_UID))
                 if not below.exists(f"/{home}")]
    if essentials.tmp:
        dirs.append(("tmp", "/tmp", 0o1777, 0))
    digest = hashlib.sha256(repr((files, dirs)).encode()).hexdigest()[:32]
    out = root / digest
    adds: list[AddSpec] = []
    for name, data, dst in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
        adds.append(AddSpec(str(out / name), dst, mode=0o644, key=f"<generated {dst}>"))
    for name, dst, mode, uid in dirs:
        (out / name).mkdir(parents=True, exist_ok=True)
        os.chmod(out / name, mode)
        adds.append(AddSpec(str(out / name), dst, mode=mode, uid=uid, gid=uid, key=f"<generated {dst}>"))
    if essentials.tzdata is not None:
        source = essentials.tzdata or SYSTEM_ZONEINFO
        if not os.path.isdir(source):
            raise InputError(f"--tzdata: {source!r} is not a directory of zoneinfo files")
        adds.append(AddSpec(source, SYSTEM_ZONEINFO, key=source))
    return adds
