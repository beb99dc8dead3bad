"""Real Debian packages for the package tests, and a real repository made from them.

Packages come from the machine's own apt sources with ``apt-get download`` (the closed set
apt itself computes for an empty system), cached under pytest's cache directory so a
session downloads them once. The repository is what a Debian mirror serves: ``pool/`` plus
``dists/SUITE/main/binary-ARCH/Packages{,.gz,.xz}`` from ``dpkg-scanpackages`` and a
``Release`` with their hashes from ``apt-ftparchive release``. It is read from the
directory or served over HTTP on 127.0.0.1 by a server that stops with its fixture.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import lzma
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.tools import require, unavailable

SUITE = "stable"
COMPONENT = "main"
WANTED = ("libc6", "libssl3", "ca-certificates", "tzdata", "busybox-static")


def _run(*args: str, cwd: Path | None = None, timeout: float = 600) -> str:
    res = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        unavailable(f"{' '.join(args[:3])} failed (no network or apt sources?): {res.stderr.strip()[-400:]}")
    return res.stdout


def _private_apt(root: Path, arch: str) -> list[str]:
    """apt options for another architecture: its own lists, cache and status, never the machine's
    dpkg configuration (no ``dpkg --add-architecture``)."""
    for d in ("lists/partial", "cache/archives/partial", "etc/apt.conf.d", "etc/preferences.d"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "status").touch()
    sources = root / "etc" / "sources.list"
    if not sources.exists():
        lines = [line for line in Path("/etc/apt/sources.list").read_text().splitlines()
                 if line.startswith("deb ")] if Path("/etc/apt/sources.list").exists() else []
        extra = Path("/etc/apt/sources.list.d")
        for f in sorted(extra.glob("*.sources")) if extra.is_dir() else []:
            for text in re.split(r"\n\s*\n", f.read_text()):  # deb822: one stanza per source
                uris, suites, comps = (re.search(rf"^{k}:\s*(.+)$", text, re.M) for k in ("URIs", "Suites", "Components"))
                if uris and suites and comps:
                    lines += [f"deb {u} {s} {comps[1]}" for u in uris[1].split() for s in suites[1].split()]
        sources.write_text("\n".join(lines) + "\n")
    return ["-o", f"APT::Architecture={arch}", "-o", "APT::Architectures::=", "-o", f"APT::Architectures::={arch}",
            "-o", f"Dir::State::Lists={root / 'lists'}", "-o", f"Dir::State::status={root / 'status'}",
            "-o", f"Dir::Cache={root / 'cache'}", "-o", f"Dir::Etc::sourcelist={sources}",
            "-o", "Dir::Etc::sourceparts=-", "-o", f"Dir::Etc::parts={root / 'etc/apt.conf.d'}",
            "-o", f"Dir::Etc::preferencesparts={root / 'etc/preferences.d'}"]


def download(dest: Path, arch: str = "amd64", wanted: tuple[str, ...] = WANTED) -> list[Path]:
    """The wanted packages and everything they depend on, as .deb files in ``dest`` (cached)."""
    require("apt-get")
    done = dest / ".complete"
    if done.exists():
        return sorted(dest.glob("*.deb"))
    dest.mkdir(parents=True, exist_ok=True)
    private = dest / ".apt"
    options = _private_apt(private, arch)
    native = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    if arch != native or not list(Path("/var/lib/apt/lists").glob("*Packages*")):
        _run("apt-get", *options, "update", timeout=900)
    else:
        options = ["-o", f"Dir::State::status={private / 'status'}"]
    plan = _run("apt-get", *options, "-s", "install", "--no-install-recommends", *wanted)
    pins = [f"{m[1]}:{m[3]}={m[2]}" if m[3] != "all" else f"{m[1]}={m[2]}"
            for m in re.finditer(r"^Inst (\S+) \((\S+) .*\[(\S+)\]\)", plan, re.M)]
    if not pins:
        unavailable(f"apt-get -s install {' '.join(wanted)} planned nothing:\n{plan[-400:]}")
    _run("apt-get", *options, "download", *pins, cwd=dest)
    done.touch()
    return sorted(dest.glob("*.deb"))


def make_repo(debs: list[Path], root: Path, arches: tuple[str, ...] = ("amd64",)) -> Path:
    """A Debian repository of ``debs`` in ``root`` (per architecture, Packages in three
    compressions; one Release over them all)."""
    require("dpkg-scanpackages")
    require("apt-ftparchive")
    pool = root / "pool" / COMPONENT
    pool.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        target = pool / deb.name
        if not target.exists():
            os.link(deb, target) if deb.stat().st_dev == root.stat().st_dev else shutil.copyfile(deb, target)
    for arch in arches:
        binary = root / "dists" / SUITE / COMPONENT / f"binary-{arch}"
        binary.mkdir(parents=True, exist_ok=True)
        packages = _run("dpkg-scanpackages", "--multiversion", "--arch", arch, "pool", cwd=root).encode()
        (binary / "Packages").write_bytes(packages)
        (binary / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
        (binary / "Packages.xz").write_bytes(lzma.compress(packages))
    release = _run("apt-ftparchive", "-o", f"APT::FTPArchive::Release::Suite={SUITE}",
                   "-o", f"APT::FTPArchive::Release::Architectures={' '.join(arches)}",
                   "-o", f"APT::FTPArchive::Release::Components={COMPONENT}",
                   "release", f"dists/{SUITE}", cwd=root)
    (root / "dists" / SUITE / "Release").write_text(release)
    return root


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """``root`` over HTTP on 127.0.0.1 (an ephemeral port) until the block ends."""
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        _Quiet.requests.append(self.path)


def make_deb(out_dir: Path, name: str, version: str = "1.0", arch: str = "amd64", *,
             files: dict[str, bytes | str] | None = None, links: dict[str, str] | None = None,
             hardlinks: dict[str, str] | None = None, fields: dict[str, str] | None = None,
             conffiles: tuple[str, ...] = (), compression: str = "xz") -> Path:
    """A small real package built by dpkg-deb: ``files`` maps paths to contents, ``links``
    symlinks to targets, ``hardlinks`` new paths to existing files of ``files``."""
    require("dpkg-deb")
    root = out_dir / f".build-{name}-{version}-{arch}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "DEBIAN").mkdir(parents=True)
    for path, content in (files or {}).items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
        target.chmod(0o755 if "bin/" in path else 0o644)
    for path, target_name in (links or {}).items():
        link = root / path.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target_name)
    for path, existing in (hardlinks or {}).items():
        link = root / path.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        os.link(root / existing.lstrip("/"), link)
    control = {"Package": name, "Version": version, "Architecture": arch, "Maintainer": "lamina tests <t@example.org>",
               "Description": "a test package\n built by the lamina tests", **(fields or {})}
    (root / "DEBIAN" / "control").write_text("".join(f"{k}: {v}\n" for k, v in control.items()))
    if conffiles:
        (root / "DEBIAN" / "conffiles").write_text("".join(f"{c}\n" for c in conffiles))
    out = out_dir / f"{name}_{version}_{arch}.deb"
    res = subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    shutil.rmtree(root)
    return out


def minbase(dest: Path, suite: str = "bookworm") -> Path:
    """A ``debootstrap --variant=minbase`` root filesystem (what debian:SUITE-slim is made
    from) as a reproducibly packed tarball, cached in ``dest``."""
    tarball = dest / f"{suite}-minbase.tar.gz"
    if tarball.exists():
        return tarball
    debootstrap = require("debootstrap")
    mirror = "http://deb.debian.org/debian"
    root = dest / f".{suite}-root"
    shutil.rmtree(root, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    _run(debootstrap, "--variant=minbase", suite, str(root), mirror, timeout=1800)
    # What debian:*-slim leaves out too: apt's lists and caches, docs are kept (as slim does).
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (root / junk).glob("*"):
            if item.is_file():
                item.unlink()
    tmp = tarball.with_suffix(".part")
    _run("tar", "--sort=name", "--numeric-owner", "--mtime=@0", "--clamp-mtime", "-czf", str(tmp), "-C", str(root), ".",
         timeout=600)
    tmp.rename(tarball)
    shutil.rmtree(root)
    return tarball


def cache_dir(config: object, name: str) -> Path:
    """pytest's cache directory (downloads survive sessions), or a fresh one under -p no:cacheprovider."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir(name))
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"{name}-"))
