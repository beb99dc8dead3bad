"""Everything a build reads, and ``--depfile``: that list in Make's syntax, as ``gcc -MD -MP``
writes it, so that Make (or Ninja) rebuilds an image exactly when one of its inputs changes.

The inputs are the spec and its lock, every ``--add`` source (directories walked, as the
build walks them: symlinks inside a tree are not followed), tarballs, the archives and
layouts of the base and ``--copy-from`` images, and the CA and tzdata inputs. Which inputs a
build has is lamina.pins's to say (the one list of a build's inputs); this module walks them.
A registry image named by tag is no file: it leaves the build unpinned (see lamina.uptodate).
"""

from __future__ import annotations

import operator
import os
import re
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

from lamina.errors import InputError, UsageError
from lamina.sources.files import AddSpec, Source
from lamina.spec import BuildSpec, FilesLayer, LayerSpec


@attrs.frozen
class Inputs:
    """What a build reads: each path once, in the order first met, with its stat (``lstat``
    inside a walked tree, ``stat`` for a path the user named, which the build follows)."""

    entries: tuple[tuple[str, os.stat_result], ...]
    pinned: bool  # False: an input (a registry tag) can change without any file changing
    # Each directory the walk listed: its children as (name, path, lstat), sorted by name.
    dirs: dict[str, list[tuple[str, str, os.stat_result]]] = attrs.field(factory=dict, eq=False, repr=False)
    taken_ns: int = 0  # when the walk began: a stat whose ctime is near it may hide a later write
    # The paths the user named that were walked (not met first inside another): their entry is
    # their ``stat``, every other entry an ``lstat``.
    followed: frozenset[str] = frozenset()
    _by_path: dict[str, os.stat_result] = attrs.field(factory=dict, init=False, eq=False, repr=False)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(path for path, _ in self.entries)

    def listing(self, directory: str) -> list[tuple[str, str, os.stat_result]] | None:
        """A directory's children as this walk found them (None: one it did not list), so
        that the build lays out the very stats the fingerprint was taken from, and a tree is
        listed and stat'd once per build."""
        return self.dirs.get(directory)

    def stat(self, path: str) -> os.stat_result | None:
        """The stat this walk took of ``path`` (None: not an input it met)."""
        if not self._by_path:
            self._by_path.update(self.entries)
        return self._by_path.get(path)


def _per_platform(layer: LayerSpec) -> LayerSpec:
    """A spec entry's per-platform table as one source per platform: all are inputs."""
    if not isinstance(layer, FilesLayer) or not any(isinstance(a, AddSpec) and a.per_platform for a in layer.adds):
        return layer
    adds: list[Source] = []
    for add in layer.adds:
        if isinstance(add, AddSpec) and add.per_platform:
            adds.extend(attrs.evolve(add, src=src, per_platform=()) for _, src in add.per_platform)
        else:
            adds.append(add)
    return attrs.evolve(layer, adds=tuple(adds))


def _tops(spec: BuildSpec, spec_path: Path | None) -> Iterator[str | None]:
    """The paths the user named (None: a registry tag)."""
    from lamina.pins import LOCK_NAME, inputs

    if spec_path is not None:
        yield str(spec_path)
        lock = spec_path.parent / LOCK_NAME
        if lock.is_file():
            yield str(lock)
    expanded = attrs.evolve(spec, layers=tuple(_per_platform(layer) for layer in spec.layers))
    for item in inputs(expanded):
        yield item.path
    essentials = spec.essentials
    if essentials.ca_certs is not None:
        from lamina.essentials import pem_files, system_bundle

        for path in essentials.ca_certs or (system_bundle(),):
            yield path
            if os.path.isdir(path):  # certificates are read through the symlinks the walk lstats
                yield from (os.path.realpath(f) for f in pem_files((path,)) if os.path.islink(f))
    if essentials.tzdata is not None:
        from lamina.essentials import SYSTEM_ZONEINFO

        yield essentials.tzdata or SYSTEM_ZONEINFO


_name = operator.attrgetter("name")


def _walk(top: str, into: dict[str, os.stat_result], dirs: dict[str, list[tuple[str, str, os.stat_result]]]) -> None:
    """``top`` and, for a directory, everything under it (by name, depth first) into ``into``,
    and each directory's children into ``dirs``: a stat per entry and as little else as
    Python allows (a no-op rebuild is mostly this)."""
    try:
        st = os.stat(top)
    except OSError as exc:
        raise InputError(f"cannot read {top!r}: {exc.strerror}") from None
    into.setdefault(top, st)
    if not stat.S_ISDIR(st.st_mode):
        return
    isdir, pending = stat.S_ISDIR, [top]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as it:
                found = sorted(it, key=_name)
        except OSError as exc:
            raise InputError(f"cannot read {directory!r}: {exc.strerror}") from None
        subdirs, children = [], []
        for child in found:
            path = child.path
            try:
                child_st = child.stat(follow_symlinks=False)
            except OSError as exc:
                raise InputError(f"cannot read {path!r}: {exc.strerror}") from None
            children.append((child.name, path, child_st))
            into.setdefault(path, child_st)
            if isdir(child_st.st_mode):
                subdirs.append(path)
        dirs[directory] = children
        pending.extend(reversed(subdirs))


def inputs(spec: BuildSpec, spec_path: Path | None = None) -> Inputs:
    """Every file, directory and symlink the build of ``spec`` reads."""
    seen: dict[str, os.stat_result] = {}
    dirs: dict[str, list[tuple[str, str, os.stat_result]]] = {}
    pinned, taken, tops, walked = True, time.time_ns(), [], set()
    for top in _tops(spec, spec_path):
        if top is None:
            pinned = False
            continue
        if top in walked:
            continue
        walked.add(top)
        if top not in seen:
            tops.append(top)  # its entry is its stat
        elif not stat.S_ISLNK(seen[top].st_mode):
            continue  # already walked inside a tree named before it
        else:  # a symlink met inside an earlier tree (lstat'd there): what it points to is read too
            real = os.path.realpath(top)
            if real not in seen:  # its stat: its tree is walked below, by the symlink's name
                try:
                    seen[real] = os.stat(real)
                except OSError as exc:
                    raise InputError(f"cannot read {top!r}: {exc.strerror}") from None
                tops.append(real)
        _walk(top, seen, dirs)
    return Inputs(tuple(seen.items()), pinned, dirs, taken, frozenset(tops))


# What GNU make cannot read in a rule's words, escaped or not (tested with make 4.3; see
# tests/test_depfile.py): ';' starts a recipe, '|' order-only prerequisites, '=' and '&' other
# syntax, a backslash escapes what follows it, a line break ends the rule.
_UNWRITABLE = frozenset(";|=&\\\n\r")
_ESCAPED = frozenset(" \t#$:*?[")  # backslashed, but '$', which is doubled; and '%' in a target


def _escape(path: str, *, target: bool = False) -> str:
    """A path as GNU make reads it in a rule: spaces, tabs, '#', ':' and the wildcard
    characters '*?[' backslashed, '$' doubled, and as a ``target`` '%' backslashed too (a
    pattern there; a prerequisite keeps a backslash before it). A path that make cannot name in a rule is a
    UsageError, before anything is written: written, it would stop or, worse, add rules and
    recipes to every Makefile that includes the depfile (a file named ``x;touch y`` would)."""
    bad = sorted(_UNWRITABLE.intersection(path))
    if bad or path.startswith("~") or (path.endswith(")") and "(" in path):
        what = ("a line break" if {"\n", "\r"} & set(bad) else f"{bad[0]!r}" if bad else "a leading '~' (a home directory to make)" if path.startswith("~")
                else "'NAME(MEMBER)' (an archive member to make)")
        raise UsageError(f"--depfile: {path!r} holds {what}, which a Makefile cannot name; rename it, or build without --depfile")
    escaped = _ESCAPED | {"%"} if target else _ESCAPED
    if escaped.isdisjoint(path):
        return path  # the common case, at a stat's cost for 12k inputs
    return "".join("$$" if c == "$" else "\\" + c if c in escaped else c for c in path)


_SPECIAL = re.compile(r"(?:\./)*\.[A-Z][A-Z_]*")  # .IGNORE, .SECONDEXPANSION, .POSIX, ...: make's own targets


def _not_special(path: str) -> str:
    """A path that make would take for one of its special targets (a file named ``.IGNORE``
    beside the spec: its ``-MP`` line would make every recipe's errors ignored), absolute:
    the same file, and no longer special."""
    return os.path.abspath(path) if _SPECIAL.fullmatch(path) else path


def make_rule(targets: Sequence[Path], found: Inputs) -> bytes:
    """``targets: inputs``, then an empty rule per input (``-MP``), so that deleting an input
    makes Make rebuild instead of failing. Dangling symlinks (which Make cannot stat) are left
    out: their directory is listed, and replacing one changes it."""
    paths = [_not_special(p) for p, st in found.entries if not stat.S_ISLNK(st.st_mode) or os.path.exists(p)]
    head = " ".join(_escape(_not_special(str(t)), target=True) for t in targets) + ":"
    lines = [head + "".join(f" \\\n  {_escape(p)}" for p in paths), ""]
    lines += [f"{_escape(p, target=True)}:" for p in paths]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")  # names as bytes, as the filesystem has them
