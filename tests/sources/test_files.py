import os
from pathlib import Path

import pytest

from lamina.errors import InputError
from lamina.layers.entries import Kind
from lamina.sources.files import AddSpec, LayerContext, tree_layer


def _layer(*specs: AddSpec, workdir: str = "") -> dict[str, object]:
    return {e.path: e for e, _ in tree_layer(specs, LayerContext(workdir=workdir, epoch=42))}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "sub" / "deep" / "f").write_text("f")
    (root / "a").write_text("aa")
    os.chmod(root / "a", 0o640)
    os.symlink("sub/deep/f", root / "link")
    os.symlink("/etc/passwd", root / "abs-link")
    os.symlink("sub", root / "dirlink")
    os.link(root / "a", root / "z-hard")
    return root


def test_file_into_directory_and_parents(tmp_path: Path) -> None:
    (tmp_path / "hello").write_text("x")
    entries = _layer(AddSpec(str(tmp_path / "hello"), "/usr/local/bin/"))
    assert list(entries) == ["usr", "usr/local", "usr/local/bin", "usr/local/bin/hello"]
    for parent in ("usr", "usr/local", "usr/local/bin"):
        e = entries[parent]
        assert (e.kind, e.mode, e.uid, e.gid, e.mtime) == (Kind.DIR, 0o755, 0, 0, 42)
    assert entries["usr/local/bin/hello"].mtime == 42  # set, not clamped


def test_file_to_exact_path_with_mode(tmp_path: Path) -> None:
    (tmp_path / "hello").write_text("x")
    entries = _layer(AddSpec(str(tmp_path / "hello"), "/app", mode=0o755))
    assert list(entries) == ["app"]
    assert entries["app"].mode == 0o755 and entries["app"].size == 1


def test_directory_copies_contents_and_keeps_links(tree: Path) -> None:
    entries = _layer(AddSpec(str(tree), "/opt"))
    assert list(entries) == sorted(entries)
    assert entries["opt/link"].kind is Kind.SYMLINK and entries["opt/link"].linkname == "sub/deep/f"
    assert entries["opt/abs-link"].linkname == "/etc/passwd"  # never followed
    assert entries["opt/dirlink"].kind is Kind.SYMLINK
    assert "opt/dirlink/deep" not in entries
    assert entries["opt/a"].kind is Kind.FILE and entries["opt/a"].mode == 0o640
    assert entries["opt/z-hard"].kind is Kind.HARDLINK and entries["opt/z-hard"].linkname == "opt/a"
    assert entries["opt/sub/deep/f"].kind is Kind.FILE


def test_hardlinks_across_adds_in_one_layer(tree: Path, tmp_path: Path) -> None:
    entries = _layer(AddSpec(str(tree / "z-hard"), "/x/one"), AddSpec(str(tree / "a"), "/x/two"))
    assert entries["x/one"].kind is Kind.FILE
    assert entries["x/two"].kind is Kind.HARDLINK and entries["x/two"].linkname == "x/one"


def test_top_level_symlink_source_is_followed(tree: Path) -> None:
    entries = _layer(AddSpec(str(tree / "link"), "/f"))
    assert entries["f"].kind is Kind.FILE and entries["f"].size == 1


def test_relative_destination_uses_workdir(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    assert "srv/app/x" in _layer(AddSpec(str(tmp_path / "x"), "./", mode=None), workdir="/srv/app")


def test_later_add_wins_and_file_over_dir_conflict_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "one").write_text("1")
    (tmp_path / "three").write_text("333")
    entries = _layer(AddSpec(str(tmp_path / "one"), "/f"), AddSpec(str(tmp_path / "three"), "/f"))
    assert entries["f"].size == 3
    with pytest.raises(InputError, match="parent directory"):
        _layer(AddSpec(str(tmp_path / "one"), "/d"), AddSpec(str(tmp_path / "three"), "/d/x"))


def test_missing_source_names_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot read '.*nope': No such file or directory"):
        _layer(AddSpec(str(tmp_path / "nope"), "/x"))


def test_destination_escape_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    with pytest.raises(InputError, match="outside the image root"):
        _layer(AddSpec(str(tmp_path / "x"), "/../x"))
