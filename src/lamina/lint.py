"""lamina lint: what breaks on a minimal image, found at build time instead of at run time.

Findings have stable ids; errors stop ``lamina build`` (unless ``--no-lint``), warnings are
printed. The filesystem checked is the image's merged filesystem, the same model for a
build and for ``lamina lint IMAGE``; the contents of executables, shared objects and the
account files are read wherever they come from (host files, rootfs tarballs, the base).
Per-file findings (L006-L008) are summarised for people, one line per id (``summarise``).

    L001 error    dynamically linked ELF whose interpreter or library the image lacks
    L002 error    entrypoint/cmd program missing, not executable, or a symlink leaving the image
    L003 error    shell-form command (or sh -c) without /bin/sh
    L004 error    USER name that no /etc/passwd in the image resolves
    L005 warning  TLS-using binary (Go crypto/tls or x509, or libssl) without a CA bundle
    L006 warning  files owned by a uid/gid that /etc/passwd and /etc/group do not list
    L007 warning  world-writable file or directory without the sticky bit
    L008 warning  setuid or setgid file
    L009 error    ELF executable whose machine is not the image's platform
    L010 error    an installed Debian package's Depends/Pre-Depends that no package in the image satisfies
"""

from __future__ import annotations

import fnmatch
import posixpath
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import BinaryIO

import attrs

from lamina.elf import ElfInfo, candidate, mismatch, read_elf  # a struct-based reader, checked against pyelftools in tests
from lamina.errors import InputError, LintError
from lamina.essentials import SYSTEM_BUNDLES
from lamina.layers.entries import Kind, display
from lamina.model import ContainerConfig, Platform
from lamina.sources.rootfs import MergedFS, Node

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
    note: str = ""  # a few words beside the path when findings of one id are summarised (L006: the owner)

    def line(self) -> str:
        return f"{self.id} {self.severity}: {self.path}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "severity": self.severity, "path": display(self.path), "message": display(self.message)}


Opener = Callable[[], BinaryIO]
_MAX_READ = 8 << 20  # account files, CA bundles, ld.so.conf: small, and an image does not choose how much we read


class LintImage:
    """An image's merged filesystem, plus the bytes of the files lint and essentials read.

    One model for a build and for a finished image, so both give the same findings: the
    bytes are taken from ``host`` (the files a build just wrote into a layer, keyed by the
    node's ``data``) and otherwise extracted from the image's layers, each file once.
    """

    def __init__(self, fs: MergedFS, openers: list[Opener], spool: str,
                 host: dict[tuple[int, str], str] | None = None) -> None:
        self.fs = fs
        self._openers = openers
        self._spool = spool
        self._files: dict[tuple[int, str], str] = dict(host or {})

    def node(self, path: str) -> Node | None:
        """The node at ``path``, symlinks followed inside the image; None if absent or unresolvable."""
        try:
            return self.fs.get(self.fs.resolve(path.lstrip("/")))
        except InputError:
            return None

    def exists(self, path: str) -> bool:
        return self.node(path) is not None

    def fetch(self, nodes: Iterable[Node]) -> None:
        """Have the bytes of these regular files on disk: one pass over each layer that holds some."""
        missing = {n.data: n for n in nodes if n.data is not None and n.data not in self._files}
        if missing:
            spool = tempfile.mkdtemp(prefix="lint-", dir=self._spool)  # extract() numbers files from 0 each call
            self._files.update(self.fs.extract(missing.values(), self._openers, spool))

    def fetch_paths(self, paths: Iterable[str]) -> None:
        self.fetch(n for n in map(self.node, paths) if n is not None and n.entry.kind is Kind.FILE)

    def file(self, node: Node) -> str | None:
        """A file on disk with the node's bytes."""
        if node.data is None:
            return None
        self.fetch([node])
        return self._files.get(node.data)

    def read(self, path: str) -> bytes | None:
        """The bytes of a small regular file; None when the image has none there."""
        node = self.node(path)
        if node is None or node.entry.kind is not Kind.FILE:
            return None
        if node.entry.size > _MAX_READ:
            raise InputError(f"{self.fs.name}: /{node.entry.path} is {node.entry.size} bytes; lamina reads at most {_MAX_READ}")
        host = self.file(node)
        if host is None:
            return None
        with open(host, "rb") as f:
            return f.read(_MAX_READ)


def _ids(image: LintImage, path: str, field: int) -> dict[str, int]:
    """name -> numeric field of an /etc/passwd or /etc/group; comments and odd lines skipped."""
    out: dict[str, int] = {}
    for line in (image.read(path) or b"").decode(errors="replace").splitlines():
        parts = line.strip().split(":")
        if len(parts) > field and parts[0] and not parts[0].startswith("#") and parts[field].isdigit():
            out.setdefault(parts[0], int(parts[field]))
    return out


def _ld_conf(image: LintImage, path: str, depth: int = 0) -> list[str]:
    """Directories of an ld.so.conf, ``include`` globs followed (as Debian's includes ld.so.conf.d/*.conf)."""
    dirs: list[str] = []
    for raw in (image.read(path) or b"").decode(errors="replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("include") and depth < 4:
            for pattern in line.split()[1:]:
                pattern = posixpath.join(posixpath.dirname("/" + path), pattern).lstrip("/")
                parent = image.fs.resolve(posixpath.dirname(pattern)) if image.exists(posixpath.dirname(pattern)) else ""
                if not parent:
                    continue
                names = sorted(p for p in image.fs.nodes if posixpath.dirname(p) == parent
                               and fnmatch.fnmatchcase(posixpath.basename(p), posixpath.basename(pattern)))
                for name in names:
                    dirs += _ld_conf(image, name, depth + 1)
        elif line.startswith("/"):
            dirs.append(line.lstrip("/"))
    return dirs


def _lib_dirs(image: LintImage, info: ElfInfo, platform: Platform, conf: list[str]) -> list[str]:
    dirs = [d.lstrip("/") for d in info.search]
    triple = _MULTIARCH.get(platform.architecture)
    if triple:
        dirs += [f"lib/{triple}", f"usr/lib/{triple}"]
    return dirs + list(_LIB_DIRS) + conf


def _check_elf(image: LintImage, path: str, info: ElfInfo, platform: Platform, conf: list[str]) -> Iterable[Finding]:
    fix = "link statically (CGO_ENABLED=0, musl-gcc -static) or use a base with glibc"
    if info.interpreter and not image.exists(info.interpreter):
        yield Finding("L001", "error", f"/{path}",
                      f"dynamically linked, needs {info.interpreter} which the image lacks — {fix}")
        return
    dirs = _lib_dirs(image, info, platform, conf)
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


def _check_packages(image: LintImage) -> Iterable[Finding]:
    """Every installed package's declared dependencies, against dpkg's status and status.d."""
    from lamina.sources.dpkg import is_status

    paths = [p for p, n in sorted(image.fs.nodes.items()) if n.entry.kind is Kind.FILE and is_status(p)]
    if not paths:
        return  # no packages: the Debian readers are not even imported
    from lamina.sources.apt import installed_from, parse_relations
    from lamina.sources.deb import parse_control

    try:
        image.fetch_paths(paths)  # one pass over the layers, not one per stanza
        texts = [(p, data.decode("utf-8", "replace")) for p in paths if (data := image.read(p)) is not None]
        installed = installed_from(texts)
        for path, text in texts:
            for stanza in parse_control(text, path):
                if stanza.get("Package") not in installed.versions:
                    continue
                where = f"/{path}: {stanza['Package']}"
                for group in [*parse_relations(stanza.get("Pre-Depends", ""), where),
                              *parse_relations(stanza.get("Depends", ""), where)]:
                    if not any(installed.satisfies(r) for r in group):
                        wanted = " | ".join(str(r) for r in group)
                        yield Finding("L010", "error", f"/{path}", f"package {stanza['Package']} depends on {wanted}, "
                                      "which no package in the image provides — add it with --package or --deb")
    except InputError as exc:  # a status file lamina cannot parse: say so, do not guess
        yield Finding("L010", "error", "/var/lib/dpkg", f"cannot read the package status: {exc}")


def _owner_findings(image: LintImage) -> Iterable[Finding]:
    """L006, when the image has an /etc/passwd: a gid counts as listed by /etc/group or as a
    user's primary group in /etc/passwd."""
    if image.node("etc/passwd") is None:
        return
    uids = set(_ids(image, "etc/passwd", 2).values())
    gids = set(_ids(image, "etc/group", 2).values()) | set(_ids(image, "etc/passwd", 3).values())
    for path, node in sorted(image.fs.nodes.items()):
        uid, gid = node.entry.uid, node.entry.gid
        if uid not in uids or gid not in gids:
            yield Finding("L006", "warning", f"/{path}", f"owned by {uid}:{gid}, which /etc/passwd or /etc/group does not list",
                          note=f"{uid}:{gid}")


_READS = ("etc/passwd", "etc/group", "etc/ld.so.conf")


def reads(path: str, mode: int) -> bool:
    """Whether lint (or the essentials) reads this regular file's bytes: ELF candidates, the
    loader's and the account files, CA bundles. A build keeps copies of these as it streams a
    tarball, so that lint needs no second pass over the layer."""
    return (candidate(path, mode) or path in _READS
            or posixpath.dirname(path) == "etc/ld.so.conf.d" or "/" + path in SYSTEM_BUNDLES)


def lint(image: LintImage, config: ContainerConfig, platform: Platform, ignore: Iterable[str] = ()) -> list[Finding]:
    """Every finding for one platform's image, in a stable order (by check, then by path)."""
    findings: list[Finding] = []
    candidates = {p: n for p, n in sorted(image.fs.nodes.items()) if n.entry.kind is Kind.FILE and n.data is not None
                  and candidate(p, n.entry.mode)}  # the ELF part of reads()
    small = [n for p, n in image.fs.nodes.items() if n.entry.kind is Kind.FILE and posixpath.dirname(p) == "etc/ld.so.conf.d"]
    image.fetch([*candidates.values(), *small, *(n for n in map(image.node, _READS) if n is not None)])  # one pass
    conf = _ld_conf(image, "etc/ld.so.conf")
    elves: dict[str, ElfInfo] = {}
    for path, node in candidates.items():
        host = image.file(node)
        info = read_elf(host, path) if host is not None else None
        if host is None or info is None:
            continue
        elves[path] = info
        findings.extend(_check_elf(image, path, info, platform, conf))
        with open(host, "rb") as f:
            wrong = mismatch(f.read(20), platform)
        if wrong:
            findings.append(Finding("L009", "error", f"/{path}", f"{wrong} — build it for {platform}"))
    findings.extend(_check_command(image, config))
    findings.extend(_check_user(image, config))
    findings.extend(_check_packages(image))
    cert_dirs = ("etc/ssl/certs/", "etc/pki/tls/certs/")  # Go's certDirectories: any file there counts
    has_bundle = (any(image.exists(b) for b in SYSTEM_BUNDLES) or any(e.startswith("SSL_CERT_FILE=") for e in config.env)
                  or any(p.startswith(cert_dirs) and n.entry.kind is Kind.FILE for p, n in image.fs.nodes.items()))
    if not has_bundle:
        for path, info in elves.items():
            if info.tls:
                what = "a Go binary using crypto/tls" if info.go else "a binary linking libssl"
                findings.append(Finding("L005", "warning", f"/{path}", f"{what}, and the image has no CA bundle — add --ca-certs"))
    findings.extend(_owner_findings(image))
    for path, node in sorted(image.fs.nodes.items()):
        e = node.entry
        if e.kind in (Kind.FILE, Kind.DIR) and e.mode & 0o002 and not e.mode & 0o1000:
            findings.append(Finding("L007", "warning", f"/{path}", "world-writable without the sticky bit"))
        if e.kind is Kind.FILE and e.mode & 0o6000:
            findings.append(Finding("L008", "warning", f"/{path}", "setuid/setgid: make sure the image needs it"))
    skip = set(ignore)
    return [f for f in findings if f.id not in skip]


# Findings about single files come in thousands on a distribution's rootfs: a person reads one
# line per id (how many, a few examples); ``--json`` keeps every one.
PER_FILE = {
    "L006": "files owned by a uid or gid that /etc/passwd or /etc/group does not list",
    "L007": "files or directories world-writable without the sticky bit",
    "L008": "setuid or setgid files: make sure the image needs them",
}
EXAMPLES = 3


def summarise(findings: Sequence[tuple[Platform, Finding]]) -> list[tuple[Platform, str]]:
    """The lines a person reads, in the findings' order: each finding on its own line, except
    that the findings of one platform and one per-file id (PER_FILE) share a line."""
    groups: dict[tuple[Platform, str], list[Finding]] = {}
    order: list[tuple[Platform, str] | tuple[Platform, Finding]] = []
    for platform, finding in findings:
        if finding.id not in PER_FILE:
            order.append((platform, finding))
            continue
        key = (platform, finding.id)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(finding)
    lines: list[tuple[Platform, str]] = []
    for platform, item in order:
        if isinstance(item, Finding):
            lines.append((platform, item.line()))
            continue
        group = groups[(platform, item)]
        if len(group) == 1:
            lines.append((platform, group[0].line()))
            continue
        examples = ", ".join(f.path + (f" ({f.note})" if f.note else "") for f in group[:EXAMPLES])
        more = ", …" if len(group) > EXAMPLES else ""
        lines.append((platform, f"{item} {group[0].severity}: {len(group)} {PER_FILE[item]}, e.g. {examples}{more} "
                                "(lamina lint --json IMAGE lists each)"))
    return lines


def check_findings(findings: Sequence[tuple[Platform, Finding]], report: Callable[[str], None]) -> None:
    """The build's lint policy: every finding reported (summarised); errors stop the build
    before anything is written."""
    several = len({platform for platform, _ in findings}) > 1
    for platform, line in summarise(findings):
        report(f"{platform}: {line}" if several else line)
    errors = sum(1 for _, f in findings if f.severity == "error")
    if errors:
        raise LintError(f"lint found {errors} error(s) that would break the image; fix them, --ignore the id, or use --no-lint")


def lint_stored(path: str, ignore: Iterable[str] = ()) -> list[tuple[Platform, Finding]]:
    """Lint a finished image (tarball or layout), every platform."""
    from pathlib import Path

    from lamina.sources.archive import ImageSource, images, layer_openers

    out: list[tuple[Platform, Finding]] = []
    with ImageSource.open(Path(path)) as source, tempfile.TemporaryDirectory(prefix="lamina-lint-") as spool:
        for image in images(source):
            openers = layer_openers(image)
            fs = MergedFS.read(path, openers)
            out.extend((image.platform, f) for f in lint(LintImage(fs, openers, spool), image.config.config, image.platform, ignore))
    return out
