"""Rootfs tarballs for tests: a distribution's account files over the busybox fixture, or a
synthetic Debian-style tree of a few thousand files (owners, modes and account files as a
bookworm rootfs has them), written with Python's tarfile so a test states what is in them."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from pathlib import Path

import attrs

# As Debian's base-passwd writes them (bookworm).
DEBIAN_PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
games:x:5:60:games:/usr/games:/usr/sbin/nologin
man:x:6:12:man:/var/cache/man:/usr/sbin/nologin
lp:x:7:7:lp:/var/spool/lpd:/usr/sbin/nologin
mail:x:8:8:mail:/var/mail:/usr/sbin/nologin
news:x:9:9:news:/var/spool/news:/usr/sbin/nologin
uucp:x:10:10:uucp:/var/spool/uucp:/usr/sbin/nologin
proxy:x:13:13:proxy:/bin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
backup:x:34:34:backup:/var/backups:/usr/sbin/nologin
list:x:38:38:Mailing List Manager:/var/list:/usr/sbin/nologin
irc:x:39:39:ircd:/run/ircd:/usr/sbin/nologin
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
DEBIAN_GROUP = "".join(f"{name}:x:{gid}:\n" for name, gid in (
    ("root", 0), ("daemon", 1), ("bin", 2), ("sys", 3), ("adm", 4), ("tty", 5), ("disk", 6), ("lp", 7), ("mail", 8),
    ("news", 9), ("uucp", 10), ("man", 12), ("proxy", 13), ("kmem", 15), ("dialout", 20), ("fax", 21), ("voice", 22),
    ("cdrom", 24), ("floppy", 25), ("tape", 26), ("sudo", 27), ("audio", 29), ("dip", 30), ("www-data", 33),
    ("backup", 34), ("operator", 37), ("list", 38), ("irc", 39), ("src", 40), ("shadow", 42), ("utmp", 43),
    ("video", 44), ("sasl", 45), ("plugdev", 46), ("staff", 50), ("games", 60), ("users", 100), ("nogroup", 65534)))
# As the busybox image's /etc (no nonroot).
BUSYBOX_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
BUSYBOX_GROUP = "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nmail:x:8:\nwww-data:x:33:\noperator:x:37:\nusers:x:100:\nnogroup:x:65534:\n"


@attrs.frozen
class Member:
    path: str
    kind: str = "file"  # file, dir, symlink, hardlink
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    link: str = ""


def write_rootfs(out: Path, members: Iterable[Member], over: Path | None = None) -> Path:
    """A gzip rootfs tarball: the members of ``over`` (another tarball) first, then ``members``."""
    types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}
    with tarfile.open(out, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        if over is not None:
            with tarfile.open(over) as src:
                for info in src:
                    tar.addfile(info, src.extractfile(info) if info.isfile() else None)
        for m in members:
            info = tarfile.TarInfo(m.path)
            info.type, info.mode, info.uid, info.gid, info.linkname = types[m.kind], m.mode, m.uid, m.gid, m.link
            info.size = len(m.data) if m.kind == "file" else 0
            tar.addfile(info, io.BytesIO(m.data) if m.kind == "file" else None)
    return out


def busybox_with_accounts(testdata_out: Path, out: Path, extra: Iterable[Member] = ()) -> Path:
    """The busybox fixture plus the busybox image's /etc/passwd and /etc/group, and a /tmp of mode 0755."""
    return write_rootfs(out, [
        Member("etc", "dir", mode=0o755), Member("etc/passwd", data=BUSYBOX_PASSWD.encode()),
        Member("etc/group", data=BUSYBOX_GROUP.encode()), Member("tmp", "dir", mode=0o755), *extra,
    ], over=testdata_out / "busybox-rootfs.tar.gz")


def debian_like(out: Path, files: int = 3000) -> Path:
    """A merged-/usr tree shaped like debootstrap's minbase: Debian's account files, root-owned
    files in usr/, setuid/setgid programs, group-owned spool and log files, sticky /tmp."""
    members = [Member(d, "dir", mode=0o755) for d in (
        "etc", "usr", "usr/bin", "usr/sbin", "usr/lib", "usr/lib/x86_64-linux-gnu", "usr/share", "usr/share/doc",
        "var", "var/log", "var/cache", "var/cache/apt", "var/cache/apt/archives", "var/lib", "home", "run")]
    members += [Member("tmp", "dir", mode=0o1777), Member("var/tmp", "dir", mode=0o1777), Member("root", "dir", mode=0o700),
                Member("var/mail", "dir", mode=0o2775, gid=8), Member("var/local", "dir", mode=0o2775, gid=50),
                Member("var/cache/man", "dir", mode=0o755, uid=6, gid=12),
                Member("var/cache/apt/archives/partial", "dir", mode=0o700, uid=42)]
    members += [Member(name, "symlink", mode=0o777, link=f"usr/{name}") for name in ("bin", "sbin", "lib")]
    members += [Member("etc/passwd", data=DEBIAN_PASSWD.encode()), Member("etc/group", data=DEBIAN_GROUP.encode()),
                Member("etc/shadow", data=b"root:*:19000:0:99999:7:::\n", mode=0o640, gid=42),
                Member("etc/ld.so.conf", data=b"include /etc/ld.so.conf.d/*.conf\n"),
                Member("etc/ld.so.conf.d", "dir", mode=0o755),
                Member("etc/ld.so.conf.d/x86_64-linux-gnu.conf", data=b"/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n"),
                Member("var/log/wtmp", mode=0o664, gid=43), Member("var/log/btmp", mode=0o660, gid=43)]
    members += [Member(f"usr/bin/{name}", data=b"#!/bin/sh\n", mode=0o4755) for name in
                ("passwd", "chsh", "chfn", "gpasswd", "newgrp", "su", "mount", "umount")]
    members += [Member(f"usr/bin/{name}", data=b"#!/bin/sh\n", mode=0o2755, gid=42) for name in ("chage", "expiry")]
    members += [Member("usr/sbin/unix_chkpwd", data=b"#!/bin/sh\n", mode=0o2755, gid=42)]
    per = max(1, (files - len(members)) // 3)
    members += [Member(f"usr/bin/tool{i}", data=b"#!/bin/sh\n", mode=0o755) for i in range(per)]
    members += [Member(f"usr/lib/x86_64-linux-gnu/libx{i}.a", data=b"!<arch>\n") for i in range(per)]
    docs = [f"usr/share/doc/pkg{i // 10}" for i in range(0, per, 10)]
    members += [Member(d, "dir", mode=0o755) for d in docs]
    members += [Member(f"{docs[i // 10]}/copyright{i % 10}", data=b"GPL\n") for i in range(per)]
    return write_rootfs(out, members)


def host_debian(out: Path) -> Path | None:
    """A real Debian rootfs made cheaply: the files of this machine's packages of priority
    "required" and everything they depend on, as dpkg lists them (owners and modes as
    installed), with its /etc/passwd and /etc/group. None when this machine has no dpkg."""
    import os
    import shutil
    import subprocess

    if shutil.which("dpkg-query") is None or not os.path.isfile("/etc/debian_version"):
        return None

    def query(fmt: str, *packages: str) -> str:
        return subprocess.run(["dpkg-query", "-W", "-f", fmt, *packages], capture_output=True, text=True).stdout

    todo = [line.split("\t")[0].split(":")[0] for line in query("${Package}\t${Priority}\t${db:Status-Abbrev}\n").splitlines()
            if line.split("\t")[1:] and line.split("\t")[1] == "required" and line.split("\t")[2].startswith("ii")]
    seen: set[str] = set()
    while todo:
        package = todo.pop()
        if package in seen or not query("${Package}", package):
            continue
        seen.add(package)
        for alternatives in query("${Depends}, ${Pre-Depends}", package).split(","):
            name = alternatives.split("|")[0].strip().split(" ")[0].split(":")[0]
            if name:
                todo.append(name)
    paths = {"bin", "sbin", "lib", "lib64", "etc/passwd", "etc/group", "tmp", "var/tmp", "root"}
    listed = subprocess.run(["dpkg", "-L", *sorted(seen)], capture_output=True, text=True).stdout.splitlines()
    for path in listed:
        if path.startswith("/") and path != "/." and not path.startswith(("/usr/share/doc", "/usr/share/man", "/usr/share/locale")):
            real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))  # /bin/sh -> usr/bin/sh
            if os.path.lexists(real):
                paths.add(real.lstrip("/"))
    with tarfile.open(out, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(paths):
            if os.path.lexists("/" + path):
                tar.add("/" + path, arcname=path, recursive=False)
    return out
