"""What scratch lacks, generated deterministically: CA certificates, accounts, /tmp, tzdata.

Each is opt-in (``--ca-certs``, ``--accounts``, ``--tmp``, ``--tzdata``) and becomes one
ordinary files layer, placed before the user's layers, so it is cached and shared between
platforms like any other. Generated files are written under the build's work directory.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

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


def _pem_files(paths: tuple[str, ...]) -> list[str]:
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


def ca_bundle(paths: tuple[str, ...]) -> bytes:
    """Every certificate of the inputs, once each, sorted by the sha256 of its DER bytes."""
    certificates: dict[str, bytes] = {}
    for path in _pem_files(paths):
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"--ca-certs {path}: cannot read: {exc.strerror}") from None
        blocks = _PEM.findall(data)
        if not blocks:
            raise InputError(f"--ca-certs {path}: no PEM certificate in this file")
        for block in blocks:
            try:
                der = base64.b64decode(b"".join(block.split()), validate=True)
            except ValueError:
                raise InputError(f"--ca-certs {path}: a certificate block is not valid base64") from None
            certificates[hashlib.sha256(der).hexdigest()] = der
    pems = []
    for key in sorted(certificates):
        b64 = base64.b64encode(certificates[key]).decode()
        lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
        pems.append("-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n")
    return "".join(pems).encode()


def _account(user: str | None) -> tuple[str, int] | None:
    """``--user NAME:UID`` with --accounts adds NAME; root, nonroot and numeric users need nothing."""
    if not user or user in ("root", "nonroot", "0", str(NONROOT_UID)) or user.split(":")[0].isdigit():
        return None
    name, sep, uid = user.partition(":")
    if not sep or not uid.isdigit():
        raise UsageError(f"--user {user}: with --accounts, give a new user as NAME:UID (e.g. app:1000)")
    if not re.match(r"^[a-z_][a-z0-9_-]*$", name):
        raise UsageError(f"--user {user}: {name!r} is not a valid user name")
    return name, int(uid)


def materialize(essentials: Essentials, config: ConfigChanges, root: Path) -> tuple[list[AddSpec], ConfigChanges]:
    """Write the generated files under ``root``; return the entries that add them and the config changes."""
    adds: list[AddSpec] = []
    env: list[tuple[str, str]] = []
    user = config.user
    root.mkdir(parents=True, exist_ok=True)

    def write(name: str, data: bytes, dst: str, mode: int = 0o644) -> None:
        path = root / name
        path.write_bytes(data)
        adds.append(AddSpec(str(path), dst, mode=mode, key=f"<generated {dst}>"))

    if essentials.ca_certs is not None:
        write("ca-certificates.crt", ca_bundle(essentials.ca_certs), BUNDLE)
        if "SSL_CERT_FILE" not in dict(config.env):
            env.append(("SSL_CERT_FILE", BUNDLE))
    if essentials.accounts:
        passwd = ["root:x:0:0:root:/root:/sbin/nologin", f"nonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/sbin/nologin"]
        group = ["root:x:0:", f"nonroot:x:{NONROOT_UID}:"]
        extra = _account(config.user)
        if extra is not None:
            name, uid = extra
            passwd.append(f"{name}:x:{uid}:{uid}:{name}:/home/{name}:/sbin/nologin")
            group.append(f"{name}:x:{uid}:")
            user = name
        write("passwd", ("\n".join(passwd) + "\n").encode(), "/etc/passwd")
        write("group", ("\n".join(group) + "\n").encode(), "/etc/group")
        write("nsswitch.conf", b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n", "/etc/nsswitch.conf")
        for home, uid in (("root", 0), ("home/nonroot", NONROOT_UID)):
            (root / home).mkdir(parents=True, exist_ok=True)
            os.chmod(root / home, 0o700)
            adds.append(AddSpec(str(root / home), f"/{home}", mode=0o700, uid=uid, gid=uid, key=f"<generated /{home}>"))
    if essentials.tmp:
        (root / "tmp").mkdir(exist_ok=True)
        os.chmod(root / "tmp", 0o1777)
        adds.append(AddSpec(str(root / "tmp"), "/tmp", mode=0o1777, key="<generated /tmp>"))
    if essentials.tzdata is not None:
        source = essentials.tzdata or SYSTEM_ZONEINFO
        if not os.path.isdir(source):
            raise InputError(f"--tzdata: {source!r} is not a directory of zoneinfo files")
        adds.append(AddSpec(source, SYSTEM_ZONEINFO, key=source))
    changes = attrs.evolve(config, env=(*env, *config.env), user=user)
    return adds, changes
