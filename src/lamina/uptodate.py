"""Up to date means no work: a build whose outputs exist, unchanged since lamina wrote them,
and whose inputs still have the fingerprint recorded for those outputs, writes no byte.

The fingerprint is the sha256 of the build's settings (the spec, the epoch, the working
directory, lamina's own code) and of every input's path, kind, mode and content (a file's
BLAKE3 digest, a symlink's target; lamina.depfile lists the inputs). It is recorded in the cache,
keyed by the outputs' paths, beside each input's stat, so that checking it costs a stat per
input: content is hashed only where the stat changed (touched, rewritten), as git's index
does, and a stat is trusted only once its ctime is older than a second ("racy clean"). Each
output's stat is recorded too: an output changed by anyone but lamina is rebuilt. The
metadata file carries the fingerprint as ``inputs_fingerprint``.

When up to date, the outputs' mtimes are set to now, so that Make, which compares mtimes,
sees them newer than a touched but unchanged input. A registry tag is no file and can move:
a build with one is never up to date. ``--force`` (``force=True``) rebuilds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import attrs

from lamina.depfile import Inputs
from lamina.depfile import inputs as read_inputs
from lamina.errors import LaminaError
from lamina.hashing import file_key
from lamina.home import cache_home, read_capped, remove_files, replace_file
from lamina.quickcheck import MAX_PATHS, MAX_RECORD, code_id, same_file, stat_list, stats_digest
from lamina.spec import BuildSpec, FilesLayer

RECORD = 3  # the record's format
RACY_NS = 1_000_000_000  # a stat whose ctime is younger than this is not trusted next time
_Stat = list[int]  # (mode, size, mtime_ns, ctime_ns, ino, dev)


@attrs.frozen
class Command:
    """The CLI command line a build ran from (its arguments after ``lamina``), for
    lamina.quickcheck: the same line can then be found up to date before the CLI loads."""

    argv: tuple[str, ...]
    spec_path: Path | None
    quiet: bool
    checked: tuple[str, ...] = ()  # other paths it names that click checks (--ca-file): unchanged, or rebuilt


def _keys(found: Inputs) -> list[str]:
    """Each input's stat as one string (mode, size, mtime, ctime, inode, device), made once per
    build: compared with the record, hashed into the stats digest, written to the record."""
    return [f"{st.st_mode}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"
            for _, st in found.entries]


def _hardlinks(found: Inputs) -> str:
    """Which inputs are one file (one inode): ``i=j`` for each input ``i`` that is input ``j``
    written before it. Linking two identical files, or breaking such a link, changes no path,
    mode or content, but changes the layer (tar hardlinks); an inode changes, so this is
    reached, never the remembered fingerprint."""
    first: dict[tuple[int, int], int] = {}
    links = []
    for i, (_, st) in enumerate(found.entries):
        if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            j = first.setdefault((st.st_dev, st.st_ino), i)
            if j != i:
                links.append(f"{i}={j}")
    return " ".join(links)


def settings(spec: BuildSpec, epoch: int) -> str:
    """Everything besides the input files that decides the outputs' bytes."""
    text = f"{RECORD}\0{code_id()}\0{epoch}\0{os.getcwd()}\0{spec!r}"
    return hashlib.sha256(text.encode()).hexdigest()


def outputs(spec: BuildSpec) -> list[Path]:
    """The files whose stat says whether the outputs are as lamina left them."""
    files = [p for p in (spec.output, spec.metadata_file, spec.depfile) if p is not None and str(p) != "-"]
    if spec.oci_dir is not None:
        files.append(spec.oci_dir / "index.json")
    target = spec.output or spec.oci_dir
    if spec.sbom is not None and target is not None and str(target) != "-":  # named as build._sboms names them
        suffixes = [""] if len(spec.platforms) < 2 else ["." + str(p).replace("/", "-") for p in spec.platforms]
        files += [target.with_name(f"{target.name}{suffix}.spdx.json") for suffix in suffixes]
    return files


def _record_path(spec: BuildSpec) -> Path | None:
    if spec.output is None and spec.oci_dir is None or str(spec.output) == "-":
        return None
    key = "\0".join(str(p.absolute()) for p in outputs(spec))
    return cache_home() / "uptodate" / (hashlib.sha256(key.encode()).hexdigest()[:40] + ".json")


@attrs.frozen
class Fingerprint:
    inputs: Inputs
    settings: str
    contents: tuple[str, ...]  # per input: a file's file_key, a symlink's target, "" for the rest
    digest: str  # sha256:…
    taken_ns: int  # when the stats were read (for the racy-clean rule)
    hashed: int = 0  # inputs whose stat was not the one remembered (so their content was read)
    keys: tuple[str, ...] = ()  # per input: its stat (_keys); empty when not yet made


def fingerprint(found: Inputs, settings_digest: str, previous: dict[str, Any] | None = None,
                file_digest: Callable[[str], str] | None = None, recorded: str | None = None,
                keys: list[str] | None = None, ahead: Callable[[list[str]], None] | None = None) -> Fingerprint:
    """The inputs' fingerprint; ``previous`` (path → [stat key, content]) spares hashing
    unchanged files. ``recorded``: the fingerprint ``previous`` was recorded with; when every
    input has the stat remembered, and there are no others, it is the fingerprint still."""
    previous = previous or {}
    digest_of = file_digest or file_key
    taken = found.taken_ns or time.time_ns()  # when the walk began: a stat taken after it is no older
    keys = keys if keys is not None else _keys(found)
    remembered = [seen[1] if (seen := previous.get(path)) is not None and seen[0] == key else None
                  for (path, _), key in zip(found.entries, keys)]
    if recorded is not None and len(previous) == len(found.entries) and None not in remembered:
        return Fingerprint(found, settings_digest, tuple(cast(list[str], remembered)), recorded, taken, 0, tuple(keys))
    if ahead is not None:  # the files about to be hashed, told first: large ones hashed at once on threads
        ahead([path for (path, st), content in zip(found.entries, remembered) if content is None and stat.S_ISREG(st.st_mode)])
    contents, hashed = [], 0
    for (path, st), content in zip(found.entries, remembered):
        if content is None:
            hashed += 1
            if stat.S_ISREG(st.st_mode):
                try:
                    content = digest_of(path)
                except OSError as exc:
                    from lamina.errors import InputError

                    raise InputError(f"cannot read {path!r}: {exc.strerror}") from None
            elif stat.S_ISLNK(st.st_mode):
                content = "-> " + os.readlink(path)
            else:
                content = ""
        contents.append(content)
    # Three NUL-separated lists (no path or link target holds NUL): paths, modes, contents; and
    # which inputs are one file, which the layer writes as tar hardlinks.
    h = hashlib.sha256(f"{settings_digest}\n".encode())
    h.update("\0".join(path for path, _ in found.entries).encode(errors="surrogateescape") + b"\n")
    h.update(" ".join([str(st.st_mode) for _, st in found.entries]).encode() + b"\n")
    h.update(_hardlinks(found).encode() + b"\n")
    h.update("\0".join(contents).encode(errors="surrogateescape"))
    digest = h.hexdigest()
    return Fingerprint(found, settings_digest, tuple(contents), "sha256:" + digest, taken, hashed, tuple(keys))


def _load(path: Path, *, inputs: bool = True) -> dict[str, Any] | None:
    """The record: a small head (settings, fingerprint, digest, the outputs' stats, a digest of
    every input's stat), and beside it the inputs' stats and contents, which a no-op neither
    reads nor writes (``inputs``: None when the two files do not belong together)."""
    try:
        record = json.loads(read_capped(str(path), MAX_RECORD))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("record") != RECORD:
        return None
    if inputs:
        _load_inputs(path, record)
    return record


def _load_inputs(path: Path, record: dict[str, Any]) -> None:
    """The inputs' part, if it is the one the head names: ``id`` then, NUL-separated (no path,
    stat key or link target holds NUL), path, stat key and content of each input; read as a
    dict path → (stat key, content). Plain fields, not JSON: 12,000 inputs load in a few ms."""
    record["inputs"] = None
    try:
        fields = read_capped(str(_inputs_path(path)), MAX_PATHS).decode("utf-8", "surrogateescape").split("\0")
    except OSError:
        return
    if fields[0] != record.get("inputs_id") or len(fields) % 3 != 1:
        return
    it = iter(fields[1:])
    record["inputs"] = dict(zip(it, zip(it, it)))


def _stats_digest(found: Inputs) -> str:
    return stats_digest([path for path, _ in found.entries], [st for _, st in found.entries])


def _inputs_path(head: Path) -> Path:
    return head.with_name(head.name.removesuffix(".json") + ".inputs")


def _write(path: Path, data: object) -> None:
    replace_file(str(path), data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode())


def _layout_blobs(spec: BuildSpec, digest: str) -> list[Path]:
    """The blobs of the image ``digest`` in the spec's OCI layout, as its manifests (and
    indexes) name them: outputs too, whose stats the record keeps, so that a layout with a
    blob deleted or rewritten is not up to date. Empty without a layout, or when it cannot be
    read that far (index.json alone is then compared; the build that follows writes the layout
    whole again)."""
    from lamina.model import Digest
    from lamina.model.canonical import loads

    if spec.oci_dir is None:
        return []
    blobs = spec.oci_dir / "blobs" / "sha256"
    found: list[Path] = []
    documents = [digest]  # manifests and indexes still to read
    try:
        while documents and len(found) <= 10_000:
            found.append(blobs / Digest.parse(documents.pop()).hex)
            doc = loads(read_capped(str(found[-1]), 4 << 20))
            if isinstance(doc.get("manifests"), list):
                documents += [str(d["digest"]) for d in doc["manifests"]]
            else:
                found += [blobs / Digest.parse(str(child["digest"])).hex for child in [doc["config"], *doc["layers"]]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError, LaminaError):
        return []
    return [] if documents else found


def _output_stats(spec: BuildSpec, blobs: Sequence[Path] = ()) -> dict[str, _Stat] | None:
    """The outputs' stats (and those of ``blobs``, a layout's: _layout_blobs), or None when
    one is missing."""
    stats = {}
    for path in [*outputs(spec), *blobs]:
        try:
            stats[str(path)] = stat_list(os.stat(path))
        except OSError:
            return None
    return stats


def _save(spec: BuildSpec, fp: Fingerprint, digest: str, inputs_id: str | None = None,
          stats: str | None = None, command: Command | None = None,
          outputs_now: dict[str, _Stat] | None = None) -> None:
    """Remember ``fp`` for the outputs just written (or refreshed). Best effort: the record
    only saves time, and a missing one means building. ``inputs_id``: the inputs' part
    already on disk, still right (nothing was hashed), kept as it is. ``command``: the CLI
    command line that asked, remembered for lamina.quickcheck when its inputs allow.
    ``outputs_now``: the outputs' stats, when the caller has just taken them."""
    where = _record_path(spec)
    outputs_now = outputs_now or _output_stats(spec, _layout_blobs(spec, digest))
    if where is None or outputs_now is None:
        return
    with contextlib.suppress(OSError):
        where.parent.mkdir(parents=True, exist_ok=True)
        trusted = fp.taken_ns - RACY_NS
        if inputs_id is None:
            keys = fp.keys or tuple(_keys(fp.inputs))
            inputs_id = os.urandom(8).hex()
            fields = [inputs_id]
            for (path, st), key, content in zip(fp.inputs.entries, keys, fp.contents):
                if st.st_ctime_ns < trusted:
                    fields += (path, key, content)
            _write(_inputs_path(where), "\0".join(fields).encode("utf-8", "surrogateescape"))
        racy = any(st.st_ctime_ns >= trusted for _, st in fp.inputs.entries)
        head = {"record": RECORD, "settings": fp.settings, "fingerprint": fp.digest, "digest": digest,
                "outputs": outputs_now, "inputs_id": inputs_id, "stats": None if racy else stats or _stats_digest(fp.inputs)}
        _write(where, head)
        if command is not None and not racy and _named_by_files(spec):
            from lamina import quickcheck
            from lamina.pins import LOCK_NAME
            from lamina.spec import DEFAULT_SPEC

            if command.spec_path is not None:
                absent = [str(command.spec_path.parent / LOCK_NAME)]  # present, it is an input (a top)
            else:
                absent = [DEFAULT_SPEC] if not spec.layers else []  # the CLI would have read one
            quickcheck.remember(command.argv, str(where), head, fp.inputs.entries, fp.inputs.followed,
                                [p for p in absent if not os.path.isfile(p)], [str(p) for p in _touched(spec)],
                                command.quiet, command.checked)


# The fingerprint a check found stale, by what it checked: the build that follows in the same
# process records it instead of walking the inputs a second time.
_stale: dict[tuple[str, Path | None, int], Fingerprint] = {}


def tracked(spec: BuildSpec, spec_path: Path | None, epoch: int, file_digest: Callable[[str], str] | None = None,
            ahead: Callable[[list[str]], None] | None = None) -> Fingerprint | None:
    """The fingerprint to record for this build's outputs; None when the build is not
    trackable (no output file, or an input that can move: a registry tag)."""
    where = _record_path(spec)
    if where is None:
        return None
    stale = _stale.pop((repr(spec), spec_path, epoch), None)
    if stale is not None:
        return stale
    found = read_inputs(spec, spec_path)
    if not found.pinned:
        return None
    record = _load(where) or {}
    return fingerprint(found, settings(spec, epoch), record.get("inputs"), file_digest, ahead=ahead)


def record(spec: BuildSpec, fp: Fingerprint, digest: str, command: Command | None = None) -> None:
    _save(spec, fp, digest, command=command)


def _named_by_files(spec: BuildSpec) -> bool:
    """Whether every input of ``spec`` is a file its command line (or spec file) names, so
    that lamina.quickcheck's stats decide them all: no registry image (whether a name is one
    depends on whether such a file exists), no apt package, no machine-wide CA bundle or
    zoneinfo (which one depends on what the machine has)."""
    from lamina.sources.files import CopyFromSpec
    from lamina.spec import DebsLayer

    images = [spec.base.image] if spec.base is not None and spec.base.image != "scratch" else []
    images += [source.image for layer in spec.layers if isinstance(layer, FilesLayer)
               for source in layer.adds if isinstance(source, CopyFromSpec)]
    if images:  # the walk of the inputs has asked the same of each (lamina.pins)
        from lamina.sources.base import BaseRef, is_registry_ref

        for image in images:
            if is_registry_ref(image):
                return False
            ref = BaseRef.parse(image)
            if ref.ref or ":" in ref.path:
                return False  # ARCHIVE:REF: where the path ends depends on which prefixes exist
    if any(isinstance(layer, DebsLayer) and layer.packages for layer in spec.layers):
        return False
    return spec.essentials.ca_certs != () and spec.essentials.tzdata != ""


def check(spec: BuildSpec, spec_path: Path | None, epoch: int, command: Command | None = None) -> str | None:
    """The digest the outputs hold when they are up to date (their mtimes then refreshed), else None."""
    where = _record_path(spec)
    previous = _load(where, inputs=False) if where is not None else None
    if where is None or previous is None or previous.get("settings") != settings(spec, epoch):
        return None
    blobs = _layout_blobs(spec, str(previous.get("digest")))  # read once: compared now, and after touching
    if _output_stats(spec, blobs) != previous.get("outputs"):
        return None
    try:
        found = read_inputs(spec, spec_path)
    except LaminaError:
        return None  # the build will say what is wrong
    if not found.pinned:
        return None
    stats = _stats_digest(found)
    if previous.get("stats") is not None and previous["stats"] == stats:
        fp = Fingerprint(found, previous["settings"], (), previous["fingerprint"], found.taken_ns or time.time_ns())
    else:
        keys = _keys(found)
        _load_inputs(where, previous)
        fp = fingerprint(found, previous["settings"], previous.get("inputs"), recorded=previous.get("fingerprint"), keys=keys)
        if fp.digest != previous.get("fingerprint"):
            _stale.clear()
            _stale[(repr(spec), spec_path, epoch)] = fp
            return None
    for path in _touched(spec):
        with contextlib.suppress(OSError):
            os.utime(path)
    now = _output_stats(spec, blobs)
    if now is None or any(same_file(now[p]) != same_file(seen) for p, seen in previous["outputs"].items()):
        return None  # an output was replaced meanwhile (another build): rebuilt, never recorded as this one
    digest = str(previous["digest"])
    _save(spec, fp, digest, inputs_id=previous.get("inputs_id") if fp.hashed == 0 else None, stats=stats,
          command=command, outputs_now=now)
    return digest


def _touched(spec: BuildSpec) -> Iterator[Path]:
    """What Make compares: each output file, the layout's index.json and directory."""
    yield from outputs(spec)
    if spec.oci_dir is not None:
        yield spec.oci_dir


def forget() -> tuple[int, int]:
    """Drop every record (and every command line lamina.quickcheck remembered): the next build
    of any output builds, and records again. (records, bytes) freed; for ``lamina cache prune``."""
    return remove_files(cache_home() / "uptodate", lambda name: name.endswith(".json") and not name.startswith("cli-"))
