"""Cold layer keys hash large files several at once (LayerCache.hash_ahead): the same key,
every digest remembered, and a file changed while it was hashed is not remembered."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lamina.cache import AHEAD_MIN, LayerCache
from lamina.sources.files import AddSpec, LayerContext, tree_layer


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    for i in range(4):
        (root / f"big{i}").write_bytes(os.urandom(AHEAD_MIN + i))
    (root / "small").write_bytes(b"tiny")
    return root


def test_hash_ahead_remembers_every_large_file_and_the_key_is_unchanged(tree: Path, tmp_path: Path) -> None:
    items = tree_layer([AddSpec(str(tree), "/t")], LayerContext())
    ahead = LayerCache(tmp_path / "a")
    ahead.hash_ahead(items)
    known = {row[3] for row in ahead._known().values()}
    assert known == {hashlib.sha256((tree / f"big{i}").read_bytes()).hexdigest() for i in range(4)}
    key = ahead.key_for_entries(items, "gzip")
    walked = LayerCache(tmp_path / "b")
    walked.hash_ahead = lambda items: None  # type: ignore[method-assign]
    assert walked.key_for_entries(items, "gzip") == key
    ahead.close()
    walked.close()


def test_a_file_changed_while_hashed_is_not_remembered(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = tree_layer([AddSpec(str(tree), "/t")], LayerContext())
    cache = LayerCache(tmp_path / "c")
    real_open = open

    def changing(path: object, *args: object, **kw: object) -> object:
        if str(path).endswith("big0"):
            os.utime(str(path), ns=(1, 1))  # its mtime moves while it is read
        return real_open(path, *args, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", changing)
    cache.hash_ahead(items)
    monkeypatch.undo()
    remembered = {row[3] for row in cache._known().values()}
    assert hashlib.sha256((tree / "big0").read_bytes()).hexdigest() not in remembered
    assert len(remembered) == 3
    cache.close()
