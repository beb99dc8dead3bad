"""Hermetic builds: every input named by its sha256, verified before use; and lamina.lock.

A file's pin is the sha256 of its bytes. A directory's pin is the sha256 of a canonical
listing (sorted relative paths with type, mode, link target and content digest), so
it changes exactly when what --add would copy changes. An image layout directory's pin
is the sha256 of its index.json, which names every manifest by digest (and blobs are
verified on read); an archive file's pin is the sha256 of the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from lamina.errors import InputError, SpecError
from lamina.hashing import sha256_file
from lamina.limits import MAX_SPEC, TooLarge, read_limited
from lamina.sources.base import BaseRef
from lamina.sources.files import AddSpec, CopyFromSpec
from lamina.spec import BuildSpec, DebsLayer, FilesLayer, TarballLayer, shallow_toml

if TYPE_CHECKING:  # a lock file's reader only: listing inputs (--depfile, up to date) needs neither
    from lamina.sources.apt import Locked

LOCK_NAME = "lamina.lock"


def _tree_digest(root: str) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                line = f"l {rel} -> {os.readlink(full)}"
            elif stat.S_ISDIR(st.st_mode):
                line = f"d {rel} {stat.S_IMODE(st.st_mode):04o}"
            elif stat.S_ISREG(st.st_mode):
                line = f"f {rel} {stat.S_IMODE(st.st_mode):04o} {sha256_file(full)}"
            else:  # a FIFO or device: its kind and mode, never its (endless) content
                line = f"o {rel} {st.st_mode:o}"
            h.update(line.encode() + b"\n")
    return h.hexdigest()


def digest_of(path: str) -> str:
    """The pin of one input path (file, directory, or image layout directory)."""
    try:
        if os.path.isdir(path):
            index = os.path.join(path, "index.json")
            return sha256_file(index) if os.path.isfile(index) else _tree_digest(path)
        return sha256_file(path)
    except OSError as exc:
        raise InputError(f"cannot read {path!r} to check its sha256: {exc.strerror}") from exc


@attrs.frozen
class Input:
    key: str  # as written in the spec (or on the command line)
    path: str | None  # where it is on this machine; None for a registry reference
    pin: str | None


def inputs(spec: BuildSpec) -> Iterator[Input]:
    """Every pinnable input of a build, in spec order."""
    if spec.base is not None and spec.base.image != "scratch":
        yield from _image_input(spec.base.key or spec.base.image, spec.base.image, spec.base.sha256)
    for layer in spec.layers:
        if isinstance(layer, TarballLayer):
            yield Input(layer.key or layer.src, layer.src, layer.sha256)
        elif isinstance(layer, DebsLayer):
            for deb in layer.debs:
                yield Input(deb.key or deb.path, deb.path, deb.sha256)
        elif isinstance(layer, FilesLayer):
            for source in layer.adds:
                if isinstance(source, AddSpec):
                    yield Input(source.key or source.src, source.src, source.sha256)
                elif isinstance(source, CopyFromSpec):
                    yield from _image_input(source.key or source.image, source.image, source.sha256)


def _image_input(key: str, image: str, pin: str | None) -> Iterator[Input]:
    from lamina.sources.base import is_registry_ref

    if is_registry_ref(image):
        if "@sha256:" not in image:
            yield Input(key, None, None)  # a registry tag moves: only a digest pins it
        return
    ref = BaseRef.parse(image)
    if not ref.digest:  # image@sha256:… is pinned by its own digest, verified as blobs are read
        yield Input(key, ref.path, pin)


def read_lock(spec_path: Path | None) -> dict[str, str]:
    return _read_lock_file(spec_path)[0]


def read_locked_packages(spec_path: Path | None) -> tuple[Locked, ...]:
    """The ``[[package]]`` entries of lamina.lock: Debian packages as resolved when it was written."""
    return _read_lock_file(spec_path)[1]


_PACKAGE_KEYS = {"request": str, "platform": str, "name": str, "version": str, "architecture": str, "url": str,
                 "sha256": str, "size": int}


def _read_lock_file(spec_path: Path | None) -> tuple[dict[str, str], tuple[Locked, ...]]:
    if spec_path is None:
        return {}, ()
    lock = spec_path.parent / LOCK_NAME
    if not lock.is_file():
        return {}, ()
    import tomllib

    from lamina.sources.apt import Locked

    try:
        with open(lock, "rb") as f:
            data = tomllib.loads(shallow_toml(read_limited(f, MAX_SPEC).decode(), str(lock)))
    except OSError as exc:
        raise SpecError(str(lock), "", f"cannot read: {exc.strerror}") from None
    except TooLarge as exc:
        raise SpecError(str(lock), "", f"{exc}: not a lock file") from None
    except RecursionError:
        raise SpecError(str(lock), "", "not valid TOML: nested too deeply") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(str(lock), "", f"not valid TOML: {exc}") from None
    pins = data.get("inputs", {})
    if not isinstance(pins, dict) or not all(isinstance(v, str) for v in pins.values()):
        raise SpecError(str(lock), "inputs", "expected a table of \"path\" = \"sha256:…\"")
    packages = data.get("package", [])
    if not isinstance(packages, list):
        raise SpecError(str(lock), "package", "expected an array of tables ([[package]])")
    locked = []
    for i, entry in enumerate(packages):
        if not isinstance(entry, dict) or set(entry) != set(_PACKAGE_KEYS):
            raise SpecError(str(lock), f"package[{i}]", f"expected the keys {', '.join(_PACKAGE_KEYS)}")
        for key, kind in _PACKAGE_KEYS.items():
            if not isinstance(entry[key], kind) or isinstance(entry[key], bool):
                raise SpecError(str(lock), f"package[{i}].{key}", f"expected {kind.__name__}")
        digest = entry["sha256"].removeprefix("sha256:")
        if not re.match(r"^[0-9a-f]{64}$", digest):
            raise SpecError(str(lock), f"package[{i}].sha256", f"not a sha256 digest: {entry['sha256']!r}")
        locked.append(Locked(entry["request"], entry["platform"], entry["name"], entry["version"], entry["architecture"],
                             entry["url"], digest, entry["size"]))
    return {k: v.removeprefix("sha256:") for k, v in pins.items()}, tuple(locked)


def verify(spec: BuildSpec, lock: dict[str, str]) -> None:
    """Hermetic mode: every input pinned, every pin matching; all offenders in one error."""
    problems = []
    for item in inputs(spec):
        if item.path is None:
            problems.append(f"{item.key}: a registry image must be pinned by digest (NAME@sha256:…)")
            continue
        pin = item.pin or lock.get(item.key)
        if pin is None:
            problems.append(f"{item.key}: not pinned (add sha256 = \"…\" or run 'lamina lock')")
            continue
        actual = digest_of(item.path)
        if actual != pin:
            problems.append(f"{item.key}: sha256 is {actual}, pinned {pin}")
    if problems:
        raise InputError(f"hermetic build refused: {len(problems)} input(s) unpinned or changed: " + "; ".join(problems))


def write_lock(spec: BuildSpec, spec_path: Path, packages: Sequence[Locked] = ()) -> tuple[Path, int]:
    """``packages``: the Debian packages the build resolves (build.resolve_packages), recorded too."""
    from lamina.sinks.atomic import atomic_file

    pins = {item.key: "sha256:" + digest_of(item.path) for item in inputs(spec) if item.path is not None}
    lines = ["# lamina.lock: sha256 of every input of lamina.toml, written by `lamina lock`.",
             "# With hermetic = true (or --hermetic), a build refuses inputs that differ.", "", "[inputs]"]
    lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(pins.items())]
    for p in sorted(packages, key=lambda p: (p.request, p.platform, p.name)):
        lines += ["", "[[package]]", f"request = {json.dumps(p.request)}", f"platform = {json.dumps(p.platform)}",
                  f"name = {json.dumps(p.name)}", f"version = {json.dumps(p.version)}",
                  f"architecture = {json.dumps(p.arch)}", f"url = {json.dumps(p.url)}",
                  f"sha256 = {json.dumps('sha256:' + p.sha256)}", f"size = {p.size}"]
    path = spec_path.parent / LOCK_NAME
    with atomic_file(path) as out:
        out.write(("\n".join(lines) + "\n").encode())
    return path, len(pins) + len(packages)

