"""Outputs appear whole or not at all: written under a temporary name, then renamed."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lamina.errors import OutputError


def _tmp_name(path: Path) -> str:
    return f".{path.name}.lamina-tmp-"


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_name(path))
    except OSError as exc:
        raise OutputError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
        raise


def check_replaceable_dir(path: Path) -> None:
    """Only an empty directory or an earlier OCI layout may be replaced: never user data."""
    if not path.exists():
        return
    if not path.is_dir():
        raise OutputError(f"cannot write {str(path)!r}: it exists and is not a directory")
    if any(path.iterdir()) and not (path / "oci-layout").is_file():
        raise OutputError(f"cannot write {str(path)!r}: it is a non-empty directory and not an OCI layout; refusing to replace it")


def check_replaceable_file(path: Path) -> None:
    if path.is_dir():
        raise OutputError(f"cannot write {str(path)!r}: it is a directory")


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Build a directory beside ``path``; swap it in only when complete."""
    check_replaceable_dir(path)
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_tmp_name(path)))
    except OSError as exc:
        raise OutputError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=_tmp_name(path) + "old-"))
            os.replace(path, old / "d")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
        raise
