"""The ELF identity of an executable: does this binary run on that platform?

Reads 20 bytes of header (ELF spec: e_ident class and data, then e_machine), enough to tell
an x86-64 ``hello-arm64`` from a real one before the image is built.
"""

from __future__ import annotations

import posixpath
import struct
from typing import Any

import attrs

from lamina.model import Platform

# e_machine values (System V ABI) for each GOARCH; with class (1: 32-bit, 2: 64-bit), data (1: LE, 2: BE).
_ARCH = {
    "amd64": (62, 2, 1, "x86-64"),
    "arm64": (183, 2, 1, "aarch64"),
    "arm": (40, 1, 1, "32-bit ARM"),
    "386": (3, 1, 1, "i386"),
    "ppc64le": (21, 2, 1, "ppc64le"),
    "s390x": (22, 2, 2, "s390x"),
    "riscv64": (243, 2, 1, "riscv64"),
    "mips64le": (8, 2, 1, "mips64le"),
    "loong64": (258, 2, 1, "loongarch64"),
}
_NAMES = {(m, c, d): n for m, c, d, n in _ARCH.values()}

Ident = tuple[int, int, int]  # (e_machine, class, data)


def candidate(path: str, mode: int) -> bool:
    """Whether a regular file is read as a possible ELF (lint's L001/L005/L009, lamina index's
    platform check): anything executable, and shared objects, which need not be. Changing it
    changes what a remembered census holds: bump ``join.CENSUS_FORMAT``."""
    return bool(mode & 0o111) or ".so" in posixpath.basename(path)


def identify(head: bytes) -> Ident | None:
    """(machine, class, data) of an ELF header, or None when this is not a well-formed ELF."""
    if len(head) < 20 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return machine, head[4], head[5]


def describe(ident: Ident) -> str:
    name = _NAMES.get(ident)
    if name:
        return name
    machine, cls, data = ident
    return f"machine {machine}, {32 if cls == 1 else 64}-bit {'little' if data == 1 else 'big'}-endian"


def foreign(ident: Ident, platform: Platform) -> bool:
    """Whether an ELF of this identity cannot run on ``platform`` (False for an architecture
    lamina has no ELF identity for: nothing is refused that cannot be judged)."""
    want = _ARCH.get(platform.architecture)
    return want is not None and ident != want[:3]


def mismatch(head: bytes, platform: Platform) -> str | None:
    """Why this binary cannot run on ``platform``, or None if it can (or is not ELF)."""
    ident = identify(head)
    if ident is None or not foreign(ident, platform):
        return None
    return f"an ELF {describe(ident)} executable, but the image platform is {platform}"


@attrs.frozen
class ElfInfo:
    """What the linter needs to know about one ELF file (read with pyelftools)."""

    interpreter: str | None
    needed: tuple[str, ...]
    search: tuple[str, ...]  # DT_RUNPATH / DT_RPATH directories, $ORIGIN expanded
    go: bool
    tls: bool  # links crypto/tls or crypto/x509 (Go), or libssl


def read_elf(path: str, image_path: str) -> ElfInfo | None:
    """Parse an ELF file on the host; None if it is not one (scripts, data).

    A small struct-based reader of the ELF and program headers, the dynamic segment and the
    section names (System V gABI). pyelftools gives the same answers but took ~12 ms a file,
    10 s for the ~900 shared objects of a /usr tree; this takes well under 1 ms.
    """
    try:
        with open(path, "rb") as f:
            return _parse(f, image_path)
    except (OSError, struct.error, ValueError, IndexError, UnicodeDecodeError):
        return None


def _parse(f: Any, image_path: str) -> ElfInfo | None:
    head = f.read(64)
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
    if wide:
        phoff, shoff = struct.unpack_from(order + "QQ", head, 32)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(order + "HHHHH", head, 54)
    else:
        phoff, shoff = struct.unpack_from(order + "II", head, 28)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(order + "HHHHH", head, 42)

    def read(offset: int, size: int) -> bytes:
        f.seek(offset)
        data: bytes = f.read(size)
        return data

    loads, interpreter, dynamic = [], None, None
    for i in range(min(phnum, 256)):
        ph = read(phoff + i * phentsize, phentsize)
        if wide:
            p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(order + "IIQQQQ", ph)
        else:
            p_type, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(order + "IIIII", ph)
        if p_type == 1:  # PT_LOAD
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 3:  # PT_INTERP
            interpreter = read(p_offset, p_filesz).split(b"\0", 1)[0].decode()
        elif p_type == 2:  # PT_DYNAMIC
            dynamic = (p_offset, p_filesz)
    needed: list[str] = []
    search: list[str] = []
    if dynamic is not None:
        size = 16 if wide else 8
        raw = read(*dynamic)
        tags = [struct.unpack_from(order + ("qQ" if wide else "iI"), raw, i) for i in range(0, len(raw) - size + 1, size)]
        strtab = next((v for t, v in tags if t == 5), None)  # DT_STRTAB (a virtual address)
        base = next((off + strtab - va for va, off, sz in loads if strtab is not None and va <= strtab < va + sz), None)
        if base is not None:
            def string(offset: int) -> str:
                return read(base + offset, 4096).split(b"\0", 1)[0].decode()

            origin = "/" + image_path.rsplit("/", 1)[0] if "/" in image_path else "/"
            for tag, value in tags:
                if tag == 0:  # DT_NULL
                    break
                if tag == 1:  # DT_NEEDED
                    needed.append(string(value))
                elif tag in (15, 29):  # DT_RPATH, DT_RUNPATH
                    search.extend(p.replace("$ORIGIN", origin) for p in string(value).split(":") if p)
    go = False
    if shoff and shnum and shstrndx < shnum:
        sections = [read(shoff + i * shentsize, shentsize) for i in range(min(shnum, 4096))]
        fmt = order + ("IIQQQQ" if wide else "IIIIII")
        names = struct.unpack_from(fmt, sections[shstrndx])
        names_off, names_size = (names[4], names[5])
        table = read(names_off, min(names_size, 1 << 20))
        for section in sections:
            name_at = struct.unpack_from(order + "I", section)[0]
            if table[name_at : name_at + 14] == b".go.buildinfo\0":
                go = True
                break
    # Only Go binaries are read through (for crypto/tls): a tree of shared objects is not.
    found = _scan(f, (b"crypto/tls.", b"crypto/x509.")) if go else set()
    tls = bool(found) or any(n.startswith("libssl.so") for n in needed)
    return ElfInfo(interpreter, tuple(needed), tuple(search), go, tls)


def _scan(f: object, needles: tuple[bytes, ...]) -> set[bytes]:
    """Which needles occur in the file, read in 1 MiB chunks (flat memory for any size)."""
    f.seek(0)  # type: ignore[attr-defined]
    found: set[bytes] = set()
    keep = max(len(n) for n in needles) - 1
    tail = b""
    while chunk := f.read(1 << 20):  # type: ignore[attr-defined]
        window = tail + chunk
        found.update(n for n in needles if n in window)
        if len(found) == len(needles):
            break
        tail = window[-keep:]
    return found


def go_modules(path: str) -> list[tuple[str, str]] | None:
    """(module path, version) for the main module and each dependency of a Go binary, from the
    build info the Go linker embeds (runtime/debug.BuildInfo; Go >= 1.18 inline format).
    None when the file is not a Go binary with build info."""
    magic = b"\xff Go buildinf:"
    with open(path, "rb") as f:
        data = f.read()  # only for Go binaries named in an SBOM; their size is the binary's
    at = data.find(magic)
    if at < 0 or len(data) < at + 32 or not data[at + 15] & 2:
        return None
    pos = at + 32

    def string() -> str:
        nonlocal pos
        length, shift = 0, 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        text = data[pos : pos + length]
        pos += length
        return text.decode(errors="replace")

    string()  # the Go version
    info = string()
    if len(info) >= 32:
        info = info[16:-16]  # sentinels around the module info
    modules = []
    for line in info.splitlines():
        fields = line.split("\t")
        if fields[0] in ("mod", "dep") and len(fields) >= 3:
            modules.append((fields[1], fields[2]))
        elif fields[0] == "=>" and modules and len(fields) >= 3:
            modules[-1] = (fields[1], fields[2])  # a replacement stands for the module it replaces
    return modules
