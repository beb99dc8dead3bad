import io
import tarfile

import pytest

from lamina.errors import ImageError, InputError
from lamina.layers.entries import Kind
from lamina.sources.rootfs import MergedFS


def _layer(*members: tuple[str, str, str]) -> bytes:
    """(name, kind, data-or-link) → an uncompressed tar; kind is f, d, l (symlink) or h (hardlink)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            info.type = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE}[kind]
            if kind in "lh":
                info.linkname = value
            data = value.encode() if kind == "f" else b""
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _fs(*layers: bytes) -> tuple[MergedFS, list]:
    openers = [lambda data=data: io.BufferedReader(io.BytesIO(data)) for data in layers]
    return MergedFS.read("test-image", openers), openers


def test_whiteout_hides_lower_files_and_subtrees() -> None:
    fs, _ = _fs(
        _layer(("etc", "d", ""), ("etc/a", "f", "a"), ("etc/b", "f", "b"), ("opt/x/y", "f", "y")),
        _layer(("etc/.wh.a", "f", ""), (".wh.opt", "f", ""), ("etc/c", "f", "c")),
    )
    assert sorted(fs.nodes) == ["etc", "etc/b", "etc/c"]


def test_opaque_directory_hides_only_lower_layers() -> None:
    fs, _ = _fs(
        _layer(("d/old", "f", "1"), ("d/sub/deep", "f", "2"), ("keep", "f", "k")),
        _layer(("d", "d", ""), ("d/new", "f", "3"), ("d/.wh..wh..opq", "f", "")),
    )
    assert sorted(fs.nodes) == ["d", "d/new", "keep"]  # d/new is in the same layer as the marker: kept


def test_a_file_replaces_a_directory_subtree() -> None:
    fs, _ = _fs(_layer(("x/y/z", "f", "1")), _layer(("x", "f", "now a file")))
    assert sorted(fs.nodes) == ["x"]
    assert fs.get("x").entry.kind is Kind.FILE


def test_resolve_follows_symlinks_inside_the_image() -> None:
    fs, _ = _fs(_layer(("usr/bin/tool", "f", "t"), ("bin", "l", "usr/bin"), ("abs", "l", "/usr/bin/tool"),
                       ("rel", "l", "../usr/./bin/tool")))
    assert fs.resolve("bin/tool") == "usr/bin/tool"
    assert fs.resolve("abs") == "usr/bin/tool"
    assert fs.resolve("abs", follow_final=False) == "abs"
    assert fs.resolve("bin/rel-missing") == "usr/bin/rel-missing"


def test_symlink_loops_and_escapes_are_errors() -> None:
    fs, _ = _fs(_layer(("a", "l", "b"), ("b", "l", "a"), ("up", "l", "../../etc")))
    with pytest.raises(InputError, match=r"too many levels of symbolic links resolving 'a'"):
        fs.resolve("a")
    with pytest.raises(InputError, match=r"climbs above the image root"):
        fs.resolve("up/passwd")


def test_hardlinks_share_data_and_extract_writes_each_origin_once(tmp_path) -> None:
    fs, openers = _fs(_layer(("bin/busybox", "f", "BB"), ("bin/sh", "h", "bin/busybox")), _layer(("etc/x", "f", "x")))
    sh, bb = fs.get("bin/sh"), fs.get("bin/busybox")
    assert sh.entry.kind is Kind.FILE and sh.entry.size == 2 and sh.data == bb.data
    written = fs.extract([sh, bb, fs.get("etc/x")], openers, str(tmp_path))
    assert len(written) == 2
    assert sorted(open(p, "rb").read() for p in written.values()) == [b"BB", b"x"]


def test_hardlink_to_a_missing_member_is_an_image_error() -> None:
    with pytest.raises(ImageError, match="hardlink 'a' to missing 'nope'"):
        _fs(_layer(("a", "h", "nope")))
