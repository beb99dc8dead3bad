"""A build's outputs land together or not at all.

Every local output (tarball, OCI layout, SBOM files, metadata file) is staged first, each beside
its destination under a temporary name (:mod:`lamina.sinks.atomic`). Only when every one is
complete are they renamed into place, the layout's index.json first (the one step that still
writes). If any staging fails — a full disk, say — all are discarded and no output is replaced.
A push happens between staging and commit and cannot be rolled back; ``-o -`` streams the
tarball to stdout, as ``docker save`` does, and is exempt.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol

from lamina.errors import OutputError
from lamina.image import Built, Image
from lamina.model import Digest, Reference
from lamina.sinks.atomic import (
    replace,
    check_replaceable_file,
    clean_stale,
    hold,
    temp_prefix,
    work_prefix,
)
from lamina.sinks.blobs import Extra
from lamina.sinks.layout import StagedLayout, stage_layout
from lamina.sinks.metadata import metadata_bytes
from lamina.sinks.tarball import write_tarball

STDOUT = Path("-")  # -o -: the tarball goes to standard output


class Targets(Protocol):
    """Where outputs go (a BuildSpec is one): sinks know paths and tags, not specs."""

    @property
    def output(self) -> Path | None: ...

    @property
    def oci_dir(self) -> Path | None: ...

    @property
    def metadata_file(self) -> Path | None: ...

    @property
    def depfile(self) -> Path | None: ...

    @property
    def tags(self) -> Sequence[Reference]: ...


def _fail(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {str(path)!r}: {exc.strerror}")


class WorkDir:
    """The build's private directory (blob store, spool), beside the first output: on the
    filesystem the user chose for the image's bytes. Creating it first clears the litter of
    builds killed mid-way beside every output."""

    def __init__(self, spec: Targets) -> None:
        files = [p for p in (spec.output, spec.metadata_file, spec.depfile) if p is not None and p != STDOUT]
        first = spec.oci_dir or (spec.output if spec.output != STDOUT else None)
        parent = first.parent if first is not None else Path(tempfile.gettempdir())
        for directory in dict.fromkeys([parent, *(p.parent for p in files),
                                        *((spec.oci_dir.parent, spec.oci_dir) if spec.oci_dir else ())]):
            clean_stale(directory)
        try:
            self.name = tempfile.mkdtemp(dir=parent, prefix=work_prefix())
            self._fd: int | None = hold(self.name)
        except OSError as exc:
            raise OutputError(f"cannot create a work directory in {str(parent)!r}: {exc.strerror}") from exc

    def __enter__(self) -> str:
        return self.name

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.name, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Staging:
    """Staged outputs: committed together by :meth:`commit`, else removed on exit."""

    def __init__(self) -> None:
        self._files: list[tuple[Path, str, int]] = []  # (destination, staged path, held fd)
        self._layouts: list[StagedLayout] = []

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.discard()

    @contextlib.contextmanager
    def file(self, path: Path) -> Iterator[BinaryIO]:
        """A staged file for ``path``: written here, renamed over ``path`` at commit."""
        check_replaceable_file(path)
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path))
        except OSError as exc:
            raise _fail(path, exc) from exc
        self._files.append((path, tmp, fd))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours while we live (see clean_stale)
            with os.fdopen(os.dup(fd), "wb") as out:
                yield out
            os.fchmod(fd, 0o644)
        except OSError as exc:
            raise _fail(path, exc) from exc

    def layout(self, staged: StagedLayout) -> None:
        self._layouts.append(staged)

    def commit(self) -> None:
        for path, _, _ in self._files:
            check_replaceable_file(path)  # again: it may have changed while we built
        for layout in self._layouts:
            layout.commit()
        self._layouts.clear()
        while self._files:
            path, tmp, fd = self._files[0]
            try:
                replace(tmp, path)
            except OSError as exc:
                raise _fail(path, exc) from exc
            self._files.pop(0)
            os.close(fd)

    def discard(self) -> None:
        for layout in self._layouts:
            layout.discard()
        self._layouts.clear()
        for _, tmp, fd in self._files:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            os.close(fd)
        self._files.clear()


def _stream(write: Callable[[BinaryIO], None]) -> None:
    """Write to standard output (fd 1), whatever sys.stdout has been replaced by."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    try:
        with os.fdopen(os.dup(1), "wb") as out:
            write(out)
    except OSError as exc:
        raise OutputError(f"cannot write the tarball to standard output: {exc.strerror}") from exc


def emit(spec: Targets, built: Built, *, epoch: int, docker_image: Image | None,
         sboms: Sequence[tuple[Path, bytes]], extras: Sequence[Extra],
         push: Callable[[Built, Sequence[Extra]], str] | None = None, sources: Mapping[Digest, str] | None = None,
         depfile: tuple[Path, bytes] | None = None, fingerprint: str | None = None) -> str | None:
    """Stage every local output, push (if asked), then commit; returns the pushed reference.
    ``push`` sends the image and the extras to the registry (lamina.registry.plans.publish,
    bound by the caller) and returns what it pushed; ``sources``: where each layer came from,
    for the metadata file; ``depfile``: (path, Make rule); ``fingerprint``: the inputs', for
    the metadata file."""
    with Staging() as staging:
        if spec.oci_dir is not None:
            staging.layout(stage_layout(built, spec.oci_dir, spec.tags, extras))

        def tarball(out: BinaryIO) -> None:
            assert docker_image is not None
            write_tarball(built, out, spec.tags, epoch=epoch, docker_image=docker_image, extras=extras)

        if spec.output is not None and spec.output != STDOUT:
            with staging.file(spec.output) as out:
                tarball(out)
        for path, data in (*sboms, *((depfile,) if depfile is not None else ())):
            with staging.file(path) as out:
                out.write(data)
        if spec.output == STDOUT:
            _stream(tarball)
        pushed = push(built, extras) if push is not None else None
        try:
            if spec.metadata_file is not None:
                with staging.file(spec.metadata_file) as out:
                    out.write(metadata_bytes(built, spec.tags, pushed=pushed, sources=sources, fingerprint=fingerprint))
            staging.commit()
        except OutputError as exc:
            if pushed is None:
                raise
            raise OutputError(f"{exc} (the image was pushed as {pushed}; no local output was replaced)") from exc
    return pushed
