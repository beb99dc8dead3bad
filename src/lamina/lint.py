"""lamina lint: what breaks on a minimal image, found at build time instead of at run time.

Findings have stable ids; errors stop ``lamina build`` (unless ``--no-lint``), warnings are
printed. The filesystem checked is the image's merged filesystem; file contents are read
where lamina has them (files added from the host or copied out of images, and /etc/passwd
from anywhere).

    L001 error    dynamically linked ELF whose interpreter or library the image lacks
    L002 error    entrypoint/cmd program missing, not executable, or a symlink leaving the image
    L003 error    shell-form command (or sh -c) without /bin/sh
    L004 error    USER name that no /etc/passwd in the image resolves
    L005 warning  TLS-using binary (Go crypto/tls or x509, or libssl) without a CA bundle
    L006 warning  files owned by a uid/gid that /etc/passwd and /etc/group do not list
    L007 warning  world-writable file or directory without the sticky bit
    L008 warning  setuid or setgid file
    L009 error    ELF executable whose machine is not the image's platform
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable

import attrs

from lamina.elf import ElfInfo, mismatch, read_elf  # a struct-based reader, checked against pyelftools in tests
from lamina.errors import InputError
from lamina.essentials import SYSTEM_BUNDLES
from lamina.layers.entries import Kind
from lamina.model import ContainerConfig, Platform
from lamina.sources.rootfs import MergedFS

_LIB_DIRS = ("lib", "usr/lib", "lib64", "usr/lib64", "usr/local/lib")
_MULTIARCH = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu", "arm": "arm-linux-gnueabihf",
              "386": "i386-linux-gnu", "ppc64le": "powerpc64le-linux-gnu", "s390x": "s390x-linux-gnu",
              "riscv64": "riscv64-linux-gnu"}


@attrs.frozen
class Finding:
    id: str
    severity: str  # "error" or "warning"
    path: str
    message: str

    def line(self) -> str:
        return f"{self.id} {self.severity}: {self.path}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "severity": self.severity, "path": self.path, "message": self.message}


@attrs.define
class LintImage:
    """The merged filesystem plus ways to read file contents."""

    fs: MergedFS
    host: dict[str, str]  # image path -> host file with the same bytes
    read_other: Callable[[str], bytes | None] = lambda _: None  # contents lamina has no host copy of

    def read(self, path: str) -> bytes | None:
        if path in self.host:
            try:
                with open(self.host[path], "rb") as f:
                    return f.read()
            except OSError:
                return None
        return self.read_other(path)

    def exists(self, path: str) -> bool:
        try:
            return self.fs.get(self.fs.resolve(path.lstrip("/"))) is not None
        except InputError:
            return False


def _ids(image: LintImage, path: str, field: int) -> dict[str, int]:
    data = image.read(path)
    out: dict[str, int] = {}
    for line in (data or b"").decode(errors="replace").splitlines():
        parts = line.split(":")
        if len(parts) > field and parts[field].isdigit():
            out[parts[0]] = int(parts[field])
    return out


def _lib_dirs(image: LintImage, info: ElfInfo, platform: Platform) -> list[str]:
    dirs = [d.lstrip("/") for d in info.search]
    triple = _MULTIARCH.get(platform.architecture)
    if triple:
        dirs += [f"lib/{triple}", f"usr/lib/{triple}"]
    dirs += list(_LIB_DIRS)
    conf = image.read("etc/ld.so.conf") or b""
    dirs += [line.strip().lstrip("/") for line in conf.decode(errors="replace").splitlines()
             if line.strip().startswith("/")]
    return dirs


def _check_elf(image: LintImage, path: str, info: ElfInfo, platform: Platform) -> Iterable[Finding]:
    fix = "link statically (CGO_ENABLED=0, musl-gcc -static) or use a base with glibc"
    if info.interpreter and not image.exists(info.interpreter):
        yield Finding("L001", "error", f"/{path}",
                      f"dynamically linked, needs {info.interpreter} which the image lacks — {fix}")
        return
    dirs = _lib_dirs(image, info, platform)
    for lib in info.needed:
        if not any(image.exists(posixpath.join(d, lib)) for d in dirs):
            yield Finding("L001", "error", f"/{path}", f"dynamically linked, needs {lib} which the image lacks — {fix}")


def _command(config: ContainerConfig) -> tuple[str, ...]:
    return (*(config.entrypoint or ()), *(config.cmd or ()))


def _check_command(image: LintImage, config: ContainerConfig) -> Iterable[Finding]:
    argv = _command(config)
    if not argv:
        return
    shell_form = (len(argv) == 1 and " " in argv[0]) or (argv[0] in ("/bin/sh", "sh") and "-c" in argv[1:])
    if shell_form and not image.exists("bin/sh"):
        yield Finding("L003", "error", "/bin/sh", f"the command {list(argv)!r} needs a shell, and the image has no /bin/sh "
                      "— give the command as a JSON array of the program and its arguments, or use a base with a shell")
        return
    if shell_form:
        return
    program = argv[0]
    if "/" not in program:
        path_env = next((e.split("=", 1)[1] for e in config.env if e.startswith("PATH=")), "")
        candidates = [posixpath.join(d, program) for d in path_env.split(":") if d]
        found = next((c for c in candidates if image.exists(c)), None)
        if found is None:
            yield Finding("L002", "error", program, "the command's program is not on the image's PATH — add it, or give an absolute path")
            return
        program = found
    try:
        real = image.fs.resolve(program.lstrip("/"))
    except InputError as exc:
        yield Finding("L002", "error", program, f"{exc} — the command's program must resolve inside the image")
        return
    node = image.fs.get(real)
    if node is None:
        yield Finding("L002", "error", program, "the command's program does not exist in the image — add it with --add")
    elif node.entry.kind is not Kind.FILE:
        yield Finding("L002", "error", program, "the command's program is not a regular file")
    elif not node.entry.mode & 0o111:
        yield Finding("L002", "error", program, "the command's program has no execute bit — add it with mode 0755")


def _check_user(image: LintImage, config: ContainerConfig) -> Iterable[Finding]:
    name = config.user.split(":")[0]
    if not name or name.isdigit():
        return
    if name not in _ids(image, "etc/passwd", 2):
        where = "the image's /etc/passwd has no such user" if image.exists("etc/passwd") else "the image has no /etc/passwd"
        yield Finding("L004", "error", "/etc/passwd", f"USER {name!r}: {where} — use --accounts (and --user NAME:UID), or a numeric uid")


def lint(image: LintImage, config: ContainerConfig, platform: Platform, ignore: Iterable[str] = ()) -> list[Finding]:
    findings: list[Finding] = []
    elves: dict[str, ElfInfo] = {}
    for path, host in sorted(image.host.items()):
        node = image.fs.get(path)
        if node is None or node.entry.kind is not Kind.FILE:
            continue
        if node.entry.mode & 0o111 or ".so" in posixpath.basename(path):
            info = read_elf(host, path)
            if info is not None:
                elves[path] = info
                findings.extend(_check_elf(image, path, info, platform))
                with open(host, "rb") as f:
                    wrong = mismatch(f.read(20), platform)
                if wrong:
                    findings.append(Finding("L009", "error", f"/{path}", f"{wrong} — build it for {platform}"))
    findings.extend(_check_command(image, config))
    findings.extend(_check_user(image, config))
    cert_dirs = ("etc/ssl/certs/", "etc/pki/tls/certs/")  # Go's certDirectories: any file there counts
    has_bundle = (any(image.exists(b) for b in SYSTEM_BUNDLES) or any(e.startswith("SSL_CERT_FILE=") for e in config.env)
                  or any(p.startswith(cert_dirs) and n.entry.kind is Kind.FILE for p, n in image.fs.nodes.items()))
    if not has_bundle:
        for path, info in elves.items():
            if info.tls:
                what = "a Go binary using crypto/tls" if info.go else "a binary linking libssl"
                findings.append(Finding("L005", "warning", f"/{path}", f"{what}, and the image has no CA bundle — add --ca-certs"))
    if image.exists("etc/passwd"):
        uids = set(_ids(image, "etc/passwd", 2).values())
        gids = set(_ids(image, "etc/group", 2).values())
        for path, node in sorted(image.fs.nodes.items()):
            if node.entry.uid not in uids or node.entry.gid not in gids:
                findings.append(Finding("L006", "warning", f"/{path}",
                                        f"owned by {node.entry.uid}:{node.entry.gid}, which /etc/passwd or /etc/group does not list"))
    for path, node in sorted(image.fs.nodes.items()):
        e = node.entry
        if e.kind in (Kind.FILE, Kind.DIR) and e.mode & 0o002 and not e.mode & 0o1000:
            findings.append(Finding("L007", "warning", f"/{path}", "world-writable without the sticky bit"))
        if e.kind is Kind.FILE and e.mode & 0o6000:
            findings.append(Finding("L008", "warning", f"/{path}", "setuid/setgid: make sure the image needs it"))
    skip = set(ignore)
    return [f for f in findings if f.id not in skip]


def lint_stored(path: str, ignore: Iterable[str] = ()) -> list[tuple[Platform, Finding]]:
    """Lint a finished image (tarball or layout), every platform: contents are extracted for
    executables, shared objects and the account files only."""
    import tempfile
    from pathlib import Path

    from lamina.sources.archive import ImageSource, images, layer_openers

    out: list[tuple[Platform, Finding]] = []
    with ImageSource.open(Path(path)) as source, tempfile.TemporaryDirectory(prefix="lamina-lint-") as spool:
        for image in images(source):
            openers = layer_openers(image)
            fs = MergedFS.read(path, openers)  # type: ignore[arg-type]
            wanted = [n for p, n in fs.nodes.items() if n.entry.kind is Kind.FILE and n.data is not None and (
                n.entry.mode & 0o111 or ".so" in posixpath.basename(p) or p in ("etc/passwd", "etc/group", "etc/ld.so.conf"))]
            written = fs.extract(wanted, openers, spool)  # type: ignore[arg-type]
            host = {p: written[n.data] for p, n in fs.nodes.items() if n.data in written}
            config = image.config.config
            out.extend((image.platform, f) for f in lint(LintImage(fs, host), config, image.platform, ignore))
    return out
