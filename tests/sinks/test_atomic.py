"""Replacing an output: atomic, and cheap for large files (exchanged, then the old unlinked)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.sinks import atomic


def _big(path: Path, fill: bytes) -> None:
    path.write_bytes(fill * (33 << 20))


def test_a_large_output_is_exchanged_and_the_old_one_unlinked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target, tmp = tmp_path / "out.tar", tmp_path / ".out.tar.lamina-tmp-1-x"
    _big(target, b"o")
    _big(tmp, b"n")
    old_inode = target.stat().st_ino
    used: list[str] = []
    real = atomic._exchange
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: used.append(a) or real(a, b))
    atomic.replace(str(tmp), target)
    assert used == [str(tmp)]
    assert target.read_bytes() == b"n" * (33 << 20)
    assert os.listdir(tmp_path) == ["out.tar"]  # the old file went with the temporary name
    assert target.stat().st_ino != old_inode


@pytest.mark.parametrize("existing", [None, b"small"])
def test_a_new_or_small_output_is_renamed(tmp_path: Path, existing: bytes | None) -> None:
    target, tmp = tmp_path / "out.tar", tmp_path / "tmp"
    if existing is not None:
        target.write_bytes(existing)
    tmp.write_bytes(b"new")
    atomic.replace(str(tmp), target)
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.tar"]


def test_without_renameat2_a_large_output_is_still_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target, tmp = tmp_path / "out.tar", tmp_path / "tmp"
    _big(target, b"o")
    _big(tmp, b"n")
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # an old kernel or a filesystem without it
    atomic.replace(str(tmp), target)
    assert target.read_bytes()[:1] == b"n" and os.listdir(tmp_path) == ["out.tar"]
