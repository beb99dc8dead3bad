"""The up-to-date check of a ``lamina build`` command line, made before the CLI is loaded.

lamina.uptodate decides from the build spec whether the outputs are up to date; reading the
spec takes click, attrs and the model, two thirds of a 12,000-input no-op. So each time it
records outputs for a command line, it also remembers that command line's walk here: every
path it stat'd, in order, and which files it found absent. A later run of the very same
command line, in the same working directory, with the same environment and the same lamina,
that finds the same stats everywhere is up to date without parsing anything. It stats those
paths and lists no directory: a file added to or removed from a directory changes that
directory's mtime and ctime, which are among the stats.

Why that is enough: the spec a command line means is decided by its arguments, the working
directory, the environment and lamina's code (all in the key), and the files it reads: the
spec file (a top, so stat'd), whether a lamina.lock lies beside it and, for a command line
with neither a spec file nor layers, whether a lamina.toml lies in the working directory
(the absence of each, checked). Only builds whose every input is such a file are remembered
(uptodate decides): no registry image, no apt package, no machine-wide CA bundle or
zoneinfo, whose choice depends on other files.

What this module imports is what a no-op needs and nothing else: no pathlib, no attrs.
Anything unexpected in a record means "not known here": the full check then runs.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import re
from array import array
from collections.abc import Iterable, Sequence
from itertools import chain

from lamina.home import cache_root, read_capped, replace_file

RECORD = 1  # this module's record format
MAX_RECORD = 1 << 20  # a record is a few hundred bytes; more is not ours
MAX_PATHS = 256 << 20  # the paths of a million inputs; a larger list is not read (the full check runs)

# Variables that differ between runs of one build and that lamina never reads: Make's own
# recursion flags, a shell's bookkeeping. Every other variable is part of the key, so that a
# change to one lamina does read (SOURCE_DATE_EPOCH, LAMINA_*, XDG_CACHE_HOME, HOME, ...)
# can never leave an old output up to date.
_VOLATILE = frozenset({"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "MAKE_TERMOUT", "MAKE_TERMERR",
                       "SHLVL", "_", "OLDPWD", "PWD", "COLUMNS", "LINES"})


_CODE: list[str] = []  # code_id, once per process


def code_id() -> str:
    """lamina's own code: a change to the builder must not leave old outputs up to date."""
    if _CODE:
        return _CODE[0]
    from lamina.version import __version__

    h = hashlib.sha256(__version__.encode())
    root = os.path.dirname(os.path.abspath(__file__))  # the lamina package
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(directory, name))
                h.update(f"{directory}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    _CODE.append(h.hexdigest())
    return _CODE[0]


def stats_digest(paths: Sequence[str], stats: Iterable[os.stat_result]) -> str:
    """Every input's path and stat (mode, size, mtime, ctime, inode, device), in one digest:
    equal, and no content needs a look. Packed as 64-bit integers, not formatted."""
    h = hashlib.sha256("\0".join(paths).encode(errors="surrogateescape"))  # no path holds NUL
    numbers = list(chain.from_iterable(map(_SIX, stats)))
    try:
        h.update(array("q", numbers).tobytes())
    except OverflowError:  # an inode or device number of 2**63 or more (some network filesystems)
        h.update(" ".join(map(str, numbers)).encode())
    return h.hexdigest()


_SIX = operator.attrgetter("st_mode", "st_size", "st_mtime_ns", "st_ctime_ns", "st_ino", "st_dev")


def stat_list(st: os.stat_result) -> list[int]:
    """A file's stat as the records keep it: (mode, size, mtime, ctime, inode, device)."""
    return list(_SIX(st))


_OUTPUT_OPTIONS = ("--output", "--metadata-file", "--depfile", "--oci-dir")


def _as_path(text: str) -> str:
    """A path spelled as pathlib spells it (``./a//b/`` is ``a/b``; ``..`` is kept: through a
    symlink it is not the parent), so that the command line's words match the record's."""
    parts = [p for p in text.split("/") if p not in ("", ".")]
    return ("/" if text.startswith("/") else "") + "/".join(parts) or "."


def _outputs_named(command: Sequence[str]) -> set[str]:
    """The values of the output options on ``command`` (``-o``, ``--output``, ``--metadata-file``,
    ``--depfile``, ``--oci-dir``), in any of click's spellings."""
    named, args = set(), list(command)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("-o", *_OUTPUT_OPTIONS) and i + 1 < len(args):
            named.add(_as_path(args[i + 1]))
        elif arg.startswith("--") and arg.partition("=")[0] in _OUTPUT_OPTIONS and "=" in arg:
            named.add(_as_path(arg.partition("=")[2]))
        elif arg.startswith("-o") and len(arg) > 2 and not arg.startswith("--"):
            named.add(_as_path(arg[2:]))
    return named


def _touchable(command: Sequence[str], outputs: Iterable[str], touched: Iterable[str]) -> bool:
    """Whether every output a record names, and every file it would touch, is an output the
    command line names (a layout's index.json and directory included): a record is not
    trusted to say which files to touch."""
    named = _outputs_named(command)

    def ok(path: str) -> bool:
        path = _as_path(path)
        sbom = path.removesuffix(".spdx.json") if path.endswith(".spdx.json") else None  # OUT[.PLATFORM].spdx.json
        return (path in named or (path.endswith("/index.json") and path.rpartition("/")[0] in named)
                or "/blobs/sha256/" in path and path.rpartition("/blobs/sha256/")[0] in named  # a layout's: stat'd only
                or sbom is not None and (sbom in named or sbom.rpartition(".")[0] in named))

    outputs = list(outputs)
    return bool(outputs) and all(map(ok, outputs)) and all(map(ok, touched))


def _key(command: Sequence[str]) -> str:
    """The command line, the working directory, the environment and lamina's code, as one
    unambiguous string (JSON) hashed."""
    env = sorted((k, v) for k, v in os.environ.items() if k not in _VOLATILE)
    text = json.dumps([RECORD, code_id(), os.getcwd(), list(command), env], ensure_ascii=False)
    return hashlib.sha256(text.encode(errors="surrogateescape")).hexdigest()[:40]


def _path(command: Sequence[str]) -> str:
    return os.path.join(cache_root(), "uptodate", f"cli-{_key(command)}.json")


def remember(command: Sequence[str], head: str, record: dict[str, object], entries: Sequence[tuple[str, os.stat_result]],
             followed: Iterable[str], absent: Sequence[str], touched: Sequence[str], quiet: bool,
             checked: Iterable[str] = ()) -> None:
    """After uptodate recorded ``record`` (its head file ``head``) for the outputs of ``command``:
    the paths that command line stats (``entries``; those in ``followed`` with ``stat``, the
    rest with ``lstat``), the files whose absence it relied on (a lamina.lock beside the spec,
    a lamina.toml in the working directory), and ``checked``: other files the command line
    names and click checks (``--ca-file``), whose stat must not change either. Best effort."""
    outputs = record["outputs"]
    if not isinstance(outputs, dict) or not _touchable(command, outputs, touched):
        return  # outputs a spec file names: a record is not trusted to say them (_check)
    path = _path(command)
    try:
        paths_id = os.urandom(8).hex()
        replace_file(path.removesuffix(".json") + ".paths",
                     "\0".join([paths_id, *(p for p, _ in entries)]).encode("utf-8", "surrogateescape"))
        replace_file(path, json.dumps({
            "record": RECORD, "head": os.path.basename(head), "settings": record["settings"],
            "fingerprint": record["fingerprint"], "paths_id": paths_id,
            "followed": {p: stat_list(st) for p, st in entries if p in followed},
            "checked": {p: stat_list(os.stat(p)) if os.path.lexists(p) else None for p in checked},
            "absent": list(absent), "touched": list(touched), "quiet": quiet,
        }, separators=(",", ":")).encode())
    except (OSError, ValueError):
        pass


def check(command: Sequence[str]) -> tuple[str, bool] | None:
    """(the digest the outputs hold, whether the command line said --quiet) when ``command``
    was remembered and nothing it reads changed (the outputs' mtimes are then refreshed, as
    uptodate does); None: not known here, for any reason."""
    try:
        return _check(command)
    except Exception:  # noqa: BLE001 - a record this cannot read is no record: the full check runs
        return None


def _check(command: Sequence[str]) -> tuple[str, bool] | None:
    path = _path(command)
    try:
        quick = json.loads(read_capped(path, MAX_RECORD))
    except FileNotFoundError:
        return None
    if not isinstance(quick, dict) or quick.get("record") != RECORD:
        return None
    head_name = quick["head"]
    if not isinstance(head_name, str) or os.sep in head_name or not head_name.endswith(".json"):
        return None
    head_path = os.path.join(os.path.dirname(path), head_name)
    head = json.loads(read_capped(head_path, MAX_RECORD))
    if (not isinstance(head, dict) or head.get("settings") != quick["settings"]
            or head.get("fingerprint") != quick["fingerprint"] or not isinstance(head.get("stats"), str)
            or not isinstance(head.get("outputs"), dict) or not _DIGEST.fullmatch(str(head.get("digest")))):
        return None
    outputs = head["outputs"]
    if not _touchable(command, outputs, quick["touched"]):
        return None  # a record is not trusted to say which files to touch: the command line is
    if any(os.path.isfile(p) for p in quick["absent"]):
        return None
    if {p: stat_list(os.stat(p)) for p in outputs} != outputs:
        return None
    for named, seen in quick["checked"].items():  # as click would find them (a file, not a directory)
        if (stat_list(os.stat(named)) if os.path.lexists(named) else None) != seen:
            return None
    followed = quick["followed"]
    for top, seen in followed.items():  # first the paths the command line names: a rebuilt binary
        if stat_list(os.stat(top)) != seen:  # is found without a stat of every other input
            return None
    paths = read_capped(path.removesuffix(".json") + ".paths", MAX_PATHS).decode("utf-8", "surrogateescape").split("\0")
    if paths[0] != quick["paths_id"]:
        return None  # not the list written with this record
    del paths[0]
    lstat = os.lstat
    stats = [os.stat(p) if p in followed else lstat(p) for p in paths]
    if stats_digest(paths, stats) != head["stats"]:
        return None
    for touched in quick["touched"]:
        os.utime(touched)
    now = {p: stat_list(os.stat(p)) for p in outputs}
    if any(same_file(now[p]) != same_file(seen) for p, seen in outputs.items()):
        return None  # replaced meanwhile (another build): what they hold is not known here
    head["outputs"] = now
    replace_file(head_path, json.dumps(head, separators=(",", ":")).encode())
    return head["digest"], bool(quick["quiet"])


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def same_file(st: list[int]) -> list[int]:
    """Of an output's recorded stat (mode, size, mtime, ctime, inode, device): what says it is
    the same file with the same bytes, whatever touching it changed (mode, size, inode, device)."""
    return [st[0], st[1], st[4], st[5]]
