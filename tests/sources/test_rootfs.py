import io
import tarfile

import pytest

from lamina.errors import ImageError, InputError
from lamina.layers.entries import Entry, Kind
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


def _entry(path: str, kind: Kind = Kind.FILE, **kw) -> Entry:  # type: ignore[no-untyped-def]
    return Entry(path, kind, **kw)


def test_names_are_one_path_however_a_layer_spells_them() -> None:
    fs, _ = _fs(_layer(("./", "d", ""), ("./data/", "d", ""), ("./data/big", "f", "B" * 50), ("/data/small", "f", "s")),
                _layer(("data/.wh.big", "f", ""), ("data//small/", "f", "S2")))
    assert sorted(fs.nodes) == ["data", "data/small"]
    assert fs.get("data/small").entry.size == 2 and fs.get("data/small").layer == 1
    assert fs.wasted == [51, 0]  # big deleted, small overwritten
    assert fs.size == 2 and list(fs.files()) == ["data/small"]


def test_wasted_bytes_count_data_no_node_shows_any_more() -> None:
    fs, _ = _fs(
        _layer(("bin/busybox", "f", "B" * 100), ("bin/sh", "h", "bin/busybox"), ("etc/motd", "f", "hi"), ("old/x", "f", "xxx")),
        _layer((".wh.old", "f", ""), ("bin/.wh.busybox", "f", ""), ("etc/motd", "f", "hello")),
    )
    # busybox's bytes live on through the hardlink bin/sh: not wasted; old/x and the first motd are
    assert fs.wasted == [5, 0]
    assert fs.size == 105 and sorted(fs.files()) == ["bin/sh", "etc/motd"]
    assert fs.get("bin/sh").size == 100 and fs.get("bin/sh").layer == 0


def test_whiteouts_hide_only_lower_layers_and_implied_directories_go_with_their_contents() -> None:
    fs, _ = _fs(_layer(("a/b/c", "f", "1"), ("a/keep", "f", "k")), _layer(("a/b/new", "f", "2"), ("a/b/.wh..wh..opq", "f", "")),
                _layer(("a/.wh.b", "f", "")))
    assert sorted(fs.nodes) == ["a/keep"]
    assert not fs.exists("a/b") and fs.exists("a") and fs.children("a") == ["a/keep"]
    assert fs.wasted == [1, 1, 0]


def test_subtree_and_children_use_the_index() -> None:
    fs, _ = _fs(_layer(("usr/", "d", ""), ("usr/bin/", "d", ""), ("usr/bin/a", "f", "a"), ("usr/lib/x/y", "f", "y"),
                       ("usrx", "f", "not under usr")))
    assert [n.entry.path for n in fs.subtree("usr")] == ["usr/bin", "usr/bin/a", "usr/lib/x/y"]
    assert fs.children("") == ["usr", "usrx"] and fs.children("usr/lib") == ["usr/lib/x"]
    assert fs.subtree("nope") == []


def test_copy_is_independent() -> None:
    fs, _ = _fs(_layer(("a/f", "f", "1")))
    other = fs.copy("other")
    other.apply(1, _entry("a", Kind.SYMLINK, linkname="/b"))
    assert sorted(fs.nodes) == ["a/f"] and sorted(other.nodes) == ["a"]
    assert fs.wasted == [0] and other.wasted == [1, 0]


@pytest.mark.parametrize("below, entry, message", [
    ([("x", "l", "/somewhere")], "x/file", r"^layer 1: /x/file would be written through the symlink /x -> /somewhere"),
    ([("etc", "l", "/etc")], "etc/cron.d/evil", r"^layer 1: /etc/cron.d/evil would be written through the symlink /etc -> /etc"),
    ([("usr/bin/", "d", ""), ("bin", "l", "usr/bin")], "bin/a/b", r"written through the symlink /bin -> usr/bin"),
    ([("x", "f", "data")], "x/child", r"^layer 1: /x/child is under /x, which is not a directory \(a file of layer 0\)"),
])
def test_entries_consumers_would_extract_differently_are_refused(below, entry, message) -> None:  # type: ignore[no-untyped-def]
    fs, _ = _fs(_layer(*below))
    with pytest.raises(InputError, match=message):
        fs.lay(1, _entry(entry), "layer 1")
    assert entry not in fs.nodes


def test_a_directory_may_replace_a_symlink_or_a_file_and_then_hold_children() -> None:
    fs, _ = _fs(_layer(("x", "l", "/somewhere"), ("y", "f", "data")))
    for path in ("x", "y"):
        fs.lay(1, _entry(path, Kind.DIR))
        fs.lay(1, _entry(f"{path}/file"))
    assert sorted(fs.nodes) == ["x", "x/file", "y", "y/file"]
    assert fs.wasted == [4, 0]


def test_a_file_then_a_child_in_the_same_layer_is_refused() -> None:
    fs = MergedFS("new")
    fs.lay(0, _entry("x"))
    with pytest.raises(InputError, match=r"^/x/y is under /x, which is not a directory"):
        fs.lay(0, _entry("x/y"))


def test_names_and_paths_over_linux_limits_are_refused() -> None:
    fs = MergedFS("new")
    fs.lay(0, _entry("d/" + "n" * 255))  # NAME_MAX itself is fine
    with pytest.raises(InputError, match=r"is 256 bytes; Linux allows 255"):
        fs.lay(0, _entry("d/" + "n" * 256))
    with pytest.raises(InputError, match=r"is 256 bytes; Linux allows 255"):
        fs.lay(0, _entry("d/" + "é" * 128))  # bytes, not characters
    legal = "/".join(["p" * 200] * 20) + "/" + "q" * 74  # 4094 bytes + the leading "/" = PATH_MAX
    fs.lay(0, _entry(legal))
    with pytest.raises(InputError, match=r"the path is 4096 bytes; Linux allows 4095"):
        fs.lay(0, _entry(legal + "q"))


def test_lookups_on_a_deep_tree_are_linear() -> None:
    """2,000 levels (within PATH_MAX): building, resolving and walking cost what the paths cost."""
    import time

    fs = MergedFS("deep")
    start = time.perf_counter()
    path = ""
    for _ in range(2000):
        path = f"{path}/d" if path else "d"
        fs.apply(0, _entry(path, Kind.DIR))
    fs.apply(0, _entry(path + "/f"))
    fs.apply(0, _entry("l", Kind.SYMLINK, linkname=path))
    assert fs.resolve("l/f") == path + "/f"
    assert len(fs.subtree("d")) == 2000
    fs.apply(1, _entry(".wh.d"))
    assert sorted(fs.nodes) == ["l"]
    assert time.perf_counter() - start < 2.0  # quadratic in characters was ~10 s


def test_lint_on_a_tree_2000_levels_deep_costs_at_most_the_build_itself(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """lint merges the tree and resolves paths in it: on a legal 2,000-level tree (within
    PATH_MAX) that must stay linear, so building with lint takes at most twice as long."""
    import time
    from pathlib import Path

    from lamina.build import build
    from lamina.spec import BuildSpec, TarballLayer

    names = []
    for _ in range(2000):
        names.append(f"{names[-1]}/d" if names else "d")
    deep = tmp_path / "deep.tar"
    deep.write_bytes(_layer(*[(n, "d", "") for n in names], (names[-1] + "/f", "f", "x")))

    def seconds(lint) -> float:  # type: ignore[no-untyped-def]
        spec = BuildSpec(layers=(TarballLayer(str(deep)),), output=Path(tmp_path / "out.tar"))
        start = time.perf_counter()
        build(spec, epoch=0, use_cache=False, lint=lint)
        return time.perf_counter() - start

    findings: list = []
    for _ in range(3):  # the best of a few runs: the machine may be shared
        without, with_lint = seconds(None), seconds(findings.extend)
        if with_lint <= 2 * without:
            break
    assert with_lint <= 2 * without, (with_lint, without)
    assert findings == []


@pytest.mark.parametrize("members, message", [
    ([("x", "l", "/somewhere"), ("x/file", "f", "evil")],
     "/x/file would be written through the symlink /x -> /somewhere"),
    ([("etc", "l", "/etc"), ("etc/cron.d/evil", "f", "* * * * * root sh")],
     "/etc/cron.d would be written through the symlink /etc -> /etc"),
    ([("x", "f", "a file"), ("x/child", "f", "c")], "/x/child is under /x, which is not a directory"),
    ([("d/" + "n" * 256, "f", "")], f"/d/{'n' * 256}: the name {'n' * 40}... is 256 bytes; Linux allows 255"),
    ([("/".join(["p" * 250] * 17), "f", "")], f"/{'p' * 60}...: the path is {1 + 250 * 17 + 16} bytes; Linux allows 4095"),
])
def test_build_refuses_such_a_layer_with_one_line_and_writes_nothing(tmp_path, members, message) -> None:  # type: ignore[no-untyped-def]
    from support.cli import lamina

    (tmp_path / "t.tar").write_bytes(_layer(*members))
    res = lamina("build", "--no-lint", "--tarball", str(tmp_path / "t.tar"), "-o", str(tmp_path / "out.tar"))
    assert res.returncode == 1
    assert res.stderr.startswith(f"lamina: error: add tarball t.tar -> /: {message}"), res.stderr
    assert res.stderr.count("\n") == 1
    assert not (tmp_path / "out.tar").exists()


def test_a_later_layer_with_its_own_directory_replaces_a_symlink(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Not refused: every consumer replaces a symlink by a directory entry, then writes in the directory."""
    from support.cli import lamina

    (tmp_path / "a.tar").write_bytes(_layer(("etc", "l", "/etc")))
    (tmp_path / "b.tar").write_bytes(_layer(("etc/cron.d/", "d", ""), ("etc/cron.d/evil", "f", "x")))
    with tarfile.open(tmp_path / "b.tar") as tf:
        assert [m.name for m in tf] == ["etc/cron.d", "etc/cron.d/evil"]
    res = lamina("build", "--no-lint", "--tarball", str(tmp_path / "a.tar"), "--tarball", f"{tmp_path / 'b.tar'}:/",
                 "-o", str(tmp_path / "out.tar"))
    assert res.returncode == 0, res.stderr  # the second tarball brings its own /etc directory: it replaces the link


def test_a_corrupt_header_is_not_taken_for_the_end_of_a_layer() -> None:
    good = _layer(("a", "f", "1"), ("b", "f", "2"))
    corrupt = bytearray(good)
    corrupt[1024 + 148] ^= 0x7  # the second member's header checksum: tarfile would stop there silently
    with pytest.raises(ImageError, match=r"test-image: layer 0: corrupt tar header after member 'a'"):
        _fs(bytes(corrupt))
    assert sorted(_fs(good + b"\0" * 10240)[0].nodes) == ["a", "b"]  # zero padding is fine


def test_walk_layer_reads_members_between_large_skipped_ones_and_refuses_a_size_past_the_end() -> None:
    """walk_layer skips data it is not asked for (forward seeks, a megabyte at a time): the
    members after big skipped ones still read right, the size returned is the whole stream's,
    and a member whose size runs past the end of the layer is one ImageError, not a hang."""
    from lamina.sources.rootfs import walk_layer

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        for i in range(3):
            big = tarfile.TarInfo(f"big{i}")
            big.size = (3 << 20) + 7
            tf.addfile(big, io.BytesIO(bytes([i]) * big.size))
            small = tarfile.TarInfo(f"small{i}")
            small.size = 5
            tf.addfile(small, io.BytesIO(f"hi {i}!".encode()))
    data = out.getvalue()
    seen: dict[str, bytes] = {}

    def visit(path: str, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        if path.startswith("small"):
            seen[path] = archive.extractfile(member).read()  # type: ignore[union-attr]

    size = walk_layer(lambda: io.BufferedReader(io.BytesIO(data)), "layer", visit)
    assert size == len(data)
    assert seen == {f"small{i}": f"hi {i}!".encode() for i in range(3)}
    cut = data[: 512 + (1 << 20)]  # the first member's header, then a third of its data
    with pytest.raises(ImageError, match="layer"):
        walk_layer(lambda: io.BufferedReader(io.BytesIO(cut)), "layer", visit)


def _raw_header(name: bytes, size_field: bytes, kind: bytes = b"0", extra: dict[int, bytes] | None = None) -> bytes:
    """A ustar header written by hand, with fields tarfile itself would never write."""
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = h[116:124] = b"0000000\0"
    h[124:136] = size_field
    h[136:148] = b"00000000000\0"
    h[156:157] = kind
    h[257:265] = b"ustar\x0000"
    for at, value in (extra or {}).items():
        h[at:at + len(value)] = value
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _base256(n: int) -> bytes:
    return bytes([0o377]) + (256 ** 11 + n).to_bytes(11, "big") if n < 0 else bytes([0o200]) + n.to_bytes(11, "big")


_OK = _raw_header(b"ok", b"%011o\0" % 3) + b"abc".ljust(512, b"\0")
_END = b"\0" * 1024


@pytest.mark.parametrize("data, message", [
    (_OK + _raw_header(b"loop", _base256(-512)) + _END, "negative size"),  # pointed back at its own header: read forever
    (_OK + _raw_header(b"././@LongLink", _base256(1 << 60), b"L") + _END, "GNU long name header"),  # MemoryError
    (_OK + _raw_header(b"././@LongLink", _base256(-512), b"L") + _END, "negative size"),  # a ValueError
    (_OK + _raw_header(b"big", _base256(1 << 80)) + b"abc", "end of data"),  # a ValueError from io's seek
    # A GNU sparse map whose first block ends 1024 bytes back: earlier bytes read as the file's.
    (_OK + _raw_header(b"s", b"%011o\0" % 10, b"S", {386: b"%011o\0" % 0, 398: _base256(-1024), 410: b"%011o\0" % 0,
                                                      422: b"%011o\0" % 10, 483: b"%011o\0" % 10})
     + b"B" * 10 + b"\0" * 502 + _END, "backwards"),
], ids=["negative-size", "huge-longname", "negative-longname", "size-past-int64", "sparse-backwards"])
def test_walk_layer_refuses_sizes_that_point_backwards_or_past_any_layer_in_one_error(data: bytes, message: str) -> None:
    """Headers whose sizes tarfile trusts: each is one ImageError, never a loop, a MemoryError,
    a ValueError, or bytes from elsewhere in the layer read as a member's."""
    from lamina.sources.rootfs import walk_layer

    def visit(path: str, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        if member.isreg() and member.name != "big":  # big's data is skipped (one seek), as most are
            data = archive.extractfile(member)
            while data is not None and data.read(1 << 20):
                pass

    with pytest.raises(ImageError, match=message):
        walk_layer(lambda: io.BufferedReader(io.BytesIO(data)), "layer", visit)
