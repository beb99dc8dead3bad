"""An OCI image layout directory (image-spec image-layout.md): oci-layout, index.json, blobs/.

A new layout is staged whole beside its path and renamed into place. An existing layout is
shared with other images (skopeo, umoci and other builds write there too): this image's blobs
are added, then index.json is rewritten by rename under an flock on ``.lamina.lock``, adding or
replacing this image's tags and keeping every other manifest, blob and file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lamina.errors import OutputError
from lamina.image import Blobs, Built, top_descriptor
from lamina.model import Descriptor, Digest, Reference, canonical, mediatypes
from lamina.model.canonical import loads
from lamina.sinks.atomic import check_replaceable_dir, hold, temp_prefix
from lamina.sinks.blobs import Extra, held_bytes, layer_blobs, write_blob
from lamina.sinks.naming import index_for

OCI_LAYOUT = canonical.dumps({"imageLayoutVersion": mediatypes.OCI_LAYOUT_VERSION})
LOCK = ".lamina.lock"
MAX_INDEX = 64 << 20  # an index.json larger than this is not one lamina will rewrite


def _place(blob: bytes | tuple[Descriptor, Blobs], dst: Path) -> None:
    """One blob as a file: a copy, never a link, for the store's blobs may be links into the
    layer cache, and nothing a user does to an output may reach the cache."""
    with open(dst, "wb") as out:
        if isinstance(blob, bytes):
            out.write(blob)
        else:
            write_blob(blob[1], blob[0], out)
    dst.chmod(0o644)  # fixed modes, whatever the umask


def _fail(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {str(path)!r}: {exc.strerror}")


def merge_manifests(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """index.json's manifests after adding ``new``: an old entry goes when it has one of the new
    ref names (the name is the layout's key, as skopeo and umoci use it), when it is identical
    to a new one, or — for an untagged build — when it is the untagged image a previous
    untagged build left. Every other image and artifact stays."""
    names = {(d.get("annotations") or {}).get(mediatypes.REF_NAME) for d in new} - {None}

    def replaced(desc: dict[str, Any]) -> bool:
        annotations = desc.get("annotations") or {}
        name = annotations.get(mediatypes.REF_NAME)
        if name is not None:
            return name in names
        if desc in new:
            return True
        return not names and not _is_artifact(desc)
    return [d for d in old if not replaced(d)] + new


def _is_artifact(desc: dict[str, Any]) -> bool:
    return "artifactType" in desc or mediatypes.ARTIFACT_TYPE in (desc.get("annotations") or {})


def _subject(layout: Path, desc: dict[str, Any]) -> str | None:
    """The digest an artifact manifest in the layout refers to (its subject), if readable."""
    digest = str(desc.get("digest", ""))
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        return None
    try:
        with open(layout / "blobs" / "sha256" / hexdigest, "rb") as f:
            manifest = loads(f.read(1 << 20))
        return str(manifest["subject"]["digest"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _drop_orphans(layout: Path, old: list[dict[str, Any]], merged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Artifacts (attached SBOMs) of images this build replaced go with them from index.json;
    their blobs stay, as every blob does."""
    gone = {d.get("digest") for d in old} - {d.get("digest") for d in merged}
    if not gone:
        return merged
    return [d for d in merged if not (_is_artifact(d) and _subject(layout, d) in gone)]


@contextlib.contextmanager
def _locked(layout: Path) -> Iterator[None]:
    try:
        fd = os.open(layout / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise _fail(layout, exc) from exc
    try:
        os.fchmod(fd, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_index(layout: Path) -> dict[str, Any]:
    path = layout / "index.json"
    try:
        # O_NONBLOCK and a regular-file check: an index.json that is a FIFO (or a link to a
        # device) must be refused, not waited on forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OutputError(f"cannot write {str(layout)!r}: its index.json is not a regular file; refusing to replace it")
            os.set_blocking(fd, True)
            raw = f.read(MAX_INDEX + 1)
    except FileNotFoundError:
        return {"schemaVersion": 2, "manifests": []}
    except OSError as exc:
        raise OutputError(f"cannot read {str(path)!r}: {exc.strerror}") from exc
    try:
        index = loads(raw) if len(raw) <= MAX_INDEX else None
    except ValueError:
        index = None
    if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list) or not all(
            isinstance(d, dict) for d in index.get("manifests", [])):
        raise OutputError(f"cannot write {str(layout)!r}: its index.json is not a valid image index; refusing to replace it")
    return index


def _write_temp(directory: Path, name: Path, fill: Callable[[Path], object]) -> Path:
    """A file in ``directory`` named for ``name`` and our pid, filled by ``fill(path)``; mode 0644."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=temp_prefix(name))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fill(Path(tmp))
        os.chmod(tmp, 0o644)
        return Path(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)


class StagedLayout:
    """A layout ready to land: a whole new directory beside ``path``, or blobs already added to
    the existing layout at ``path`` with index.json still to be rewritten."""

    def __init__(self, path: Path, index: bytes, staged: Path | None) -> None:
        self.path = path
        self.index = index  # this build's index.json (what a new layout gets)
        self.staged = staged
        self._hold = hold(staged) if staged is not None else None

    def commit(self) -> None:
        try:
            staged = self.staged
            if staged is not None:
                try:
                    os.rename(staged, self.path)  # replaces an empty directory too
                    self.staged = None
                    return
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                # Another build made it a layout since: add to it instead.
                _check_layout(self.path)
                _add_blobs(staged / "blobs" / "sha256", self.path)
            self._merge_index()
        except OSError as exc:
            raise _fail(self.path, exc) from exc
        finally:
            self.discard()

    def _merge_index(self) -> None:
        with _locked(self.path):
            _check_layout(self.path)
            index = _read_index(self.path)
            ours = json.loads(self.index)
            old = index.get("manifests", [])
            merged = _drop_orphans(self.path, old, merge_manifests(old, ours["manifests"]))
            data = canonical.dumps({**ours, **{k: v for k, v in index.items() if k != "manifests"}, "manifests": merged})
            tmp = _write_temp(self.path, Path("index.json"), lambda p: p.write_bytes(data))
            try:
                os.replace(tmp, self.path / "index.json")
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

    def discard(self) -> None:
        if self._hold is not None:
            os.close(self._hold)
            self._hold = None
        if self.staged is not None:
            shutil.rmtree(self.staged, ignore_errors=True)
            self.staged = None


def _check_layout(path: Path) -> None:
    if not (path / "oci-layout").is_file():
        raise OutputError(f"cannot write {str(path)!r}: it is a non-empty directory and not an OCI layout; refusing to replace it")
    _check_blob_dirs(path)


def _check_blob_dirs(path: Path) -> None:
    """An existing layout may have come from a stranger (an unpacked oci-archive): a symlinked
    blobs/ or blobs/sha256 would have blobs renamed through it, outside the named output."""
    for directory in (path / "blobs", path / "blobs" / "sha256"):
        if directory.is_symlink():
            raise OutputError(f"cannot write {str(path)!r}: {str(directory)!r} is a symbolic link; refusing to write through it")


def _holds(target: Path, digest: Digest, size: int) -> bool:
    """Whether the layout already has this blob: a regular file (not a link) of its size whose
    bytes hash to its name. A same-size file with other bytes (bit rot, a planted file) is
    replaced, never handed out under the new tag."""
    try:
        st = os.lstat(target)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return False
        h = hashlib.sha256()
        with open(target, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return False
    return h.hexdigest() == digest.hex


def _add_blobs(source: Path, layout: Path) -> None:
    """Move staged blobs into an existing layout; one already there under its digest is kept."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in sorted(source.iterdir()):
        target = blobs / blob.name
        if not _holds(target, Digest(blob.name), blob.stat().st_size):
            os.replace(blob, target)


def _blob_into(blob: bytes | tuple[Descriptor, Blobs], digest: Digest, layout: Path) -> None:
    """One blob into an existing layout: written beside, renamed into blobs/sha256 whole."""
    target = layout / "blobs" / "sha256" / digest.hex
    size = len(blob) if isinstance(blob, bytes) else blob[0].size
    if _holds(target, digest, size):
        return
    tmp = _write_temp(layout, Path(digest.hex), lambda p: _place(blob, p))
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def stage_layout(built: Built, path: Path, tags: Sequence[Reference], extras: Sequence[Extra] = ()) -> StagedLayout:
    """``extras``: more top-level manifests (attached SBOMs) with the blobs they need."""
    check_replaceable_dir(path)
    if path.is_symlink() and path.is_dir():
        path = path.resolve()  # write into the directory it names, never over the link
    sources: dict[Digest, bytes | tuple[Descriptor, Blobs]] = {**layer_blobs(built), **held_bytes(built, extras)}
    digests = sorted(sources)
    index = index_for(top_descriptor(built), tags, [d for d, _, _ in extras]).to_bytes()
    if (path / "oci-layout").is_file():
        _check_blob_dirs(path)
        try:
            (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            for digest in digests:
                _blob_into(sources[digest], digest, path)
        except OSError as exc:
            raise _fail(path, exc) from exc
        return StagedLayout(path, index, None)
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_prefix(path)))
    except OSError as exc:
        raise _fail(path, exc) from exc
    try:
        staged = StagedLayout(path, index, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        blobs = tmp / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        for digest in digests:
            _place(sources[digest], blobs / digest.hex)
        (tmp / "oci-layout").write_bytes(OCI_LAYOUT)
        (tmp / "index.json").write_bytes(index)
        for file in (tmp / "oci-layout", tmp / "index.json"):
            file.chmod(0o644)
        for directory in (tmp, tmp / "blobs", blobs):
            directory.chmod(0o755)
    except BaseException as exc:
        staged.discard()
        if isinstance(exc, OSError):
            raise _fail(path, exc) from exc
        raise
    return staged
