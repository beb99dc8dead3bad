"""The .deb reader and the package layer: real packages built by dpkg-deb, real ar archives
built by binutils' ar, and hand-made hostile ones."""

from __future__ import annotations

import contextlib
import io
import lzma
import subprocess
import tarfile
from pathlib import Path

import pytest
from support.aptrepo import make_deb
from support.cli import lamina
from support.oci import tar_bytes
from support.tools import require

from lamina.errors import InputError, UnsafePathError
from lamina.layers.build import build_layer
from lamina.layers.compression import Compression
from lamina.layers.entries import Entry, Kind
from lamina.sources.deb import AR_MAGIC, layer_items, open_deb, read_ar, read_packages, status_stanza
from lamina.sources.rootfs import MergedFS
from lamina.store import BlobStore


def _ar(members: list[tuple[str, bytes]], *, fmag: bytes = b"`\n", size: str | None = None) -> bytes:
    out = bytearray(AR_MAGIC)
    for name, data in members:
        header = f"{name:<16}{'0':<12}{'0':<6}{'0':<6}{'100644':<8}{size or len(data):<10}".encode() + fmag
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def _packages(*paths: Path, base: MergedFS | None = None, stack: contextlib.ExitStack, spool: Path) -> list[tuple[Entry, object]]:
    return layer_items(read_packages([str(p) for p in paths], str(spool), stack, 0), base, 0)


def test_ar_reader_agrees_with_binutils_ar(tmp_path: Path) -> None:
    ar = require("ar")
    contents = {"debian-binary": b"2.0\n", "odd": b"x" * 7, "empty": b"", "longer-name.tar": bytes(range(256)) * 3}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    archive = tmp_path / "x.a"
    subprocess.run([ar, "rcD", str(archive), *contents], cwd=tmp_path, check=True)
    listed = subprocess.run([ar, "t", str(archive)], capture_output=True, text=True, check=True).stdout.split()
    with open(archive, "rb") as f:
        members = read_ar(f, str(archive))
        assert [m.name for m in members] == listed
        for member in members:
            f.seek(member.offset)
            assert f.read(member.size) == contents[member.name]


_GOOD = [("debian-binary", b"2.0\n")]


@pytest.mark.parametrize("data, message", [
    (b"PK\x03\x04 not an ar archive", "no ar archive header"),
    (AR_MAGIC + b"debian-binary   0   ", "bad ar header at offset 8"),
    (_ar(_GOOD, fmag=b"xx"), "bad ar header at offset 8"),
    (_ar(_GOOD, size="12x"), "bad ar member header"),
    (_ar(_GOOD, size="999999"), "truncated package: member 'debian-binary' needs 999999 bytes"),
    (_ar([("../../etc/passwd", b"x")]), "bad ar member header"),
    (_ar([("a", b"1"), ("a", b"2")]), "member 'a' appears twice"),
    (_ar([(f"m{i}", b"") for i in range(17)]), "more than 16 ar members"),
    (_ar([("debian-binary", b"\xff\xfe")]).replace(b"debian-binary", b"debian-bin\xe9ry"), "non-ASCII ar header"),
])
def test_hostile_ar_is_one_clear_error(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "bad.deb"
    path.write_bytes(data)
    with open(path, "rb") as f, pytest.raises(InputError, match=message.replace("(", r"\(")):
        read_ar(f, str(path))


@pytest.mark.parametrize("members, message", [
    ([("debian-binary", b"3.0\n"), ("control.tar", b""), ("data.tar", b"")], "unsupported package format"),
    ([("control.tar", b""), ("debian-binary", b"2.0\n"), ("data.tar", b"")], "not a Debian binary package"),
    ([("debian-binary", b"2.0\n"), ("control.tar.lz", b""), ("data.tar", b"")], "not a Debian binary package"),
    ([("debian-binary", b"2.0\n"), ("control.tar", tar_bytes({"./md5sums": b""})), ("data.tar", b"")], "has no control file"),
    ([("debian-binary", b"2.0\n"), ("control.tar", tar_bytes({"./control": b"Package: x\nVersion: 1\n"})), ("data.tar", b"")],
     "no Architecture field"),
    ([("debian-binary", b"2.0\n"), ("control.tar", tar_bytes({"./control": b"Package: ../x\nVersion: 1\nArchitecture: all\n"})),
      ("data.tar", b"")], "bad package name"),
    ([("debian-binary", b"2.0\n"), ("control.tar.gz", b"\x1f\x8b\x08\x00garbage"), ("data.tar", b"")], "corrupt control archive"),
    ([("debian-binary", b"2.0\n"), ("control.tar.xz", lzma.compress(tar_bytes({"./filler": bytes(65 << 20)}))),
      ("data.tar", b"")], "the control archive is larger than 64 MiB"),
])
def test_malformed_packages_are_refused(tmp_path: Path, members: list[tuple[str, bytes]], message: str) -> None:
    path = tmp_path / "bad.deb"
    path.write_bytes(_ar(members))
    with pytest.raises(InputError, match=message):
        open_deb(str(path))


def test_cli_refuses_a_hostile_package_in_one_line(tmp_path: Path) -> None:
    control = tar_bytes({"./control": b"Package: evil\nVersion: 1\nArchitecture: all\n"})
    bad = tmp_path / "evil.deb"
    bad.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar", control),
                         ("data.tar", tar_bytes({"./../../../etc/cron.d/evil": b"* * * * * root sh\n"}))]))
    out = tmp_path / "img.tar"
    res = lamina("build", "--deb", str(bad), "-o", str(out))
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("lamina: error: ")
    assert "would land outside the image root" in res.stderr
    assert not out.exists() and not list(tmp_path.glob(".lamina-*"))


def test_truncated_package_is_refused(tmp_path: Path) -> None:
    good = make_deb(tmp_path, "hello", files={"/usr/bin/hello": b"\x7fELF" + b"x" * 5000})
    cut = tmp_path / "cut.deb"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(InputError, match="truncated package"):
        open_deb(str(cut))


@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd", "none"])
def test_real_package_reads_as_dpkg_deb_says(tmp_path: Path, compression: str) -> None:
    path = make_deb(tmp_path, "tool", "2:1.0-3", fields={"Depends": "libc6 (>= 2.34)", "Multi-Arch": "same"},
                    files={"/usr/bin/tool": "#!/bin/sh\n", "/etc/tool.conf": "a=1\n"}, conffiles=("/etc/tool.conf",),
                    links={"/usr/bin/tool2": "tool"}, compression=compression)
    deb = open_deb(str(path))
    fields = subprocess.run(["dpkg-deb", "-f", str(path)], capture_output=True, text=True, check=True).stdout
    assert "".join(f"{k}: {v}\n" for k, v in deb.control.items()) == fields
    assert (deb.name, deb.version, deb.arch, deb.info_name) == ("tool", "2:1.0-3", "amd64", "tool:amd64")
    assert deb.conffiles == ("/etc/tool.conf",)
    listing = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(path)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(listing)) as tf:
        expected = sorted(m.name.removeprefix("./").rstrip("/") for m in tf if m.name not in ("./", "."))
    with contextlib.ExitStack() as stack:
        unpacked = read_packages([str(path)], str(tmp_path / "spool"), stack, 0)[0]
        assert sorted(e.path for e, _ in unpacked.items) == expected
        stanza = status_stanza(deb, unpacked.conffiles).decode()
    assert stanza.startswith("Package: tool\nStatus: install ok installed\n")
    md5 = subprocess.run(["md5sum"], input=b"a=1\n", capture_output=True, check=True).stdout.split()[0].decode()
    assert stanza.endswith(f"Conffiles:\n /etc/tool.conf {md5}\n")


def _base(*entries: Entry) -> MergedFS:
    fs = MergedFS("base")
    for entry in entries:
        fs.apply(0, entry)
    fs.layers = 1
    return fs


def test_merged_usr_paths_go_through_the_base_links(tmp_path: Path) -> None:
    path = make_deb(tmp_path, "libfoo", files={"/lib/x86_64-linux-gnu/libfoo.so.1": "elf", "/bin/foo": "x",
                                                "/usr/share/doc/libfoo/copyright": "c"})
    base = _base(Entry("usr", Kind.DIR, 0o755), Entry("usr/lib", Kind.DIR, 0o755), Entry("usr/bin", Kind.DIR, 0o755),
                 Entry("lib", Kind.SYMLINK, 0o777, linkname="usr/lib"), Entry("bin", Kind.SYMLINK, 0o777, linkname="usr/bin"))
    with contextlib.ExitStack() as stack:
        items = _packages(path, base=base, stack=stack, spool=tmp_path / "spool")
        paths = [e.path for e, _ in items]
        listed = dict((e.path, o) for e, o in items)["var/lib/dpkg/info/libfoo.list"]().read().decode()  # type: ignore[operator]
    assert "usr/lib/x86_64-linux-gnu/libfoo.so.1" in paths and "usr/bin/foo" in paths
    assert not [p for p in paths if p in ("lib", "bin") or p.startswith(("lib/", "bin/"))]
    # dpkg records the package's own paths: dpkg-query -L shows /lib/..., as on a merged-usr system.
    assert "/lib/x86_64-linux-gnu/libfoo.so.1\n" in listed and "/bin/foo\n" in listed
    # Without the base, the package's directories are created as shipped.
    with contextlib.ExitStack() as stack:
        plain = [e.path for e, _ in _packages(path, stack=stack, spool=tmp_path / "spool2")]
    assert "lib/x86_64-linux-gnu/libfoo.so.1" in plain and "bin/foo" in plain


def test_two_packages_installing_one_file_is_an_error_naming_both(tmp_path: Path) -> None:
    a = make_deb(tmp_path, "aaa", files={"/usr/bin/same": "a", "/usr/share/aaa": "a"})
    b = make_deb(tmp_path, "bbb", files={"/usr/bin/same": "b"})
    with contextlib.ExitStack() as stack, pytest.raises(InputError, match="packages aaa and bbb both install /usr/bin/same"):
        _packages(b, a, stack=stack, spool=tmp_path / "spool")
    res = lamina("build", "--deb", str(a), "--deb", str(b), "-o", str(tmp_path / "img.tar"))
    assert res.returncode == 1 and "packages aaa and bbb both install /usr/bin/same" in res.stderr


def _layer(items: list[tuple[Entry, object]], tmp_path: Path) -> str:
    store = BlobStore(tmp_path)
    layer = build_layer(items, compression=Compression.GZIP, store=store, created_by="t")  # type: ignore[arg-type]
    return str(layer.diff_id)


def test_same_packages_in_any_order_give_the_same_layer(tmp_path: Path) -> None:
    debs = [make_deb(tmp_path, n, files={f"/usr/share/{n}/file": n * 100, f"/usr/share/common/{n}": "shared dir"})
            for n in ("zeta", "alpha", "mid")]
    ids = set()
    for order in (debs, debs[::-1], [debs[1], debs[2], debs[0]]):
        with contextlib.ExitStack() as stack:
            ids.add(_layer(_packages(*order, stack=stack, spool=tmp_path / "spool"), tmp_path))
    assert len(ids) == 1
    one = lamina("build", *[a for d in debs for a in ("--deb", str(d))], "-o", str(tmp_path / "1.tar"))
    two = lamina("build", *[a for d in debs[::-1] for a in ("--deb", str(d))], "-o", str(tmp_path / "2.tar"))
    assert one.returncode == 0, one.stderr
    assert one.stdout == two.stdout


def test_hardlink_sorted_before_its_file_carries_the_data(tmp_path: Path) -> None:
    """Through merged-usr, /lib/a becomes /usr/lib/a, which sorts after /usr/0 (its hardlink)."""
    path = make_deb(tmp_path, "links", files={"/lib/a": "shared bytes"}, hardlinks={"/usr/0": "/lib/a"})
    base = _base(Entry("usr", Kind.DIR, 0o755), Entry("usr/lib", Kind.DIR, 0o755),
                 Entry("lib", Kind.SYMLINK, 0o777, linkname="usr/lib"))
    store = BlobStore(tmp_path)
    with contextlib.ExitStack() as stack:
        items = _packages(path, base=base, stack=stack, spool=tmp_path / "spool")
        layer = build_layer(items, compression=Compression.NONE, store=store, created_by="t")  # type: ignore[arg-type]
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(store.path(layer.descriptor.digest)), "-C", str(out)], check=True)
    assert (out / "usr/0").read_text() == (out / "usr/lib/a").read_text() == "shared bytes"
    assert (out / "usr/0").stat().st_ino == (out / "usr/lib/a").stat().st_ino


def test_a_pinned_package_that_changed_is_refused(tmp_path: Path) -> None:
    path = make_deb(tmp_path, "pinned", files={"/usr/share/pinned": "x"})
    with contextlib.ExitStack() as stack, pytest.raises(InputError, match="sha256 is .*, pinned 0000"):
        read_packages([str(path)], str(tmp_path), stack, 0, lambda _: "0" * 64)


def test_spec_layer_with_debs_and_a_pin(tmp_path: Path) -> None:
    path = make_deb(tmp_path, "speced", files={"/usr/share/speced": "x"})
    spec = tmp_path / "lamina.toml"
    spec.write_text(f'[[layer]]\ndebs = [{{ path = "{path.name}", sha256 = "{"1" * 64}" }}]\n')
    res = lamina("build", str(spec), "-o", str(tmp_path / "img.tar"))
    assert res.returncode == 1 and f"{path}: sha256 is" in res.stderr
    import hashlib

    spec.write_text(f'[[layer]]\ndebs = [{{ path = "{path.name}", sha256 = "{hashlib.sha256(path.read_bytes()).hexdigest()}" }}]\n')
    res = lamina("build", str(spec), "-o", str(tmp_path / "img.tar"))
    assert res.returncode == 0, res.stderr
    spec.write_text('[[layer]]\ndebs = [3]\n')
    res = lamina("build", str(spec), "-o", str(tmp_path / "img.tar"))
    assert res.returncode == 2 and "layer[0].debs[0]: expected a path" in res.stderr


def test_wrong_architecture_is_refused(tmp_path: Path) -> None:
    path = make_deb(tmp_path, "armonly", arch="arm64", files={"/usr/share/armonly": "x"})
    res = lamina("build", "--deb", str(path), "-o", str(tmp_path / "img.tar"))
    assert res.returncode == 1 and "package armonly is for arm64, not amd64" in res.stderr
    res = lamina("build", "--deb", str(path), "--platform", "linux/arm64", "-o", str(tmp_path / "img.tar"))
    assert res.returncode == 0, res.stderr


def test_unsafe_member_path_in_data(tmp_path: Path) -> None:
    control = tar_bytes({"./control": b"Package: evil\nVersion: 1\nArchitecture: all\n"})
    bad = tmp_path / "evil.deb"
    bad.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar", control), ("data.tar", tar_bytes({"../x": b"1"}))]))
    with contextlib.ExitStack() as stack, pytest.raises(UnsafePathError):
        read_packages([str(bad)], str(tmp_path / "spool"), stack, 0)


def test_lint_finds_an_unsatisfied_declared_dependency(tmp_path: Path) -> None:
    app = make_deb(tmp_path, "app", fields={"Depends": "lib (>= 2) | other-lib, base-thing"}, files={"/usr/share/app": "a"})
    old = make_deb(tmp_path, "lib", "1.0", files={"/usr/share/lib": "1"})
    new = make_deb(tmp_path, "lib", "2.0", files={"/usr/share/lib": "2"})
    provider = make_deb(tmp_path, "thing", fields={"Provides": "base-thing"}, files={"/usr/share/thing": "t"})
    res = lamina("build", "--deb", str(app), "--deb", str(old), "--deb", str(provider), "-o", str(tmp_path / "a.tar"))
    assert res.returncode == 1
    assert ("L010 error: /var/lib/dpkg/status.d/app: package app depends on lib (>= 2) | other-lib, "
            "which no package in the image provides") in res.stderr
    assert "base-thing" not in res.stderr  # Provides satisfies it
    res = lamina("build", "--deb", str(app), "--deb", str(new), "--deb", str(provider), "-o", str(tmp_path / "b.tar"))
    assert res.returncode == 0, res.stderr
    # A finished image is checked the same way.
    res = lamina("build", "--no-lint", "--deb", str(app), "-o", str(tmp_path / "c.tar"))
    assert res.returncode == 0, res.stderr
    stored = lamina("lint", str(tmp_path / "c.tar"))
    assert stored.returncode == 1 and "package app depends on base-thing" in stored.stdout


def test_sbom_lists_packages_with_purls_and_checksums(tmp_path: Path) -> None:
    import hashlib
    import json

    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import (
        validate_full_spdx_document,
    )

    tool = make_deb(tmp_path, "tool", "2:1.0+b1-3", files={"/usr/bin/tool": "#!/bin/sh\n"})
    data = make_deb(tmp_path, "data", arch="all", files={"/usr/share/data": "d"})
    out = tmp_path / "img.tar"
    res = lamina("build", "--deb", str(tool), "--deb", str(data), "--sbom", "spdx", "-o", str(out))
    assert res.returncode == 0, res.stderr
    sbom = tmp_path / "img.tar.spdx.json"
    assert [m.validation_message for m in validate_full_spdx_document(parse_file(str(sbom)))] == []
    doc = json.loads(sbom.read_text())
    debs = {p["name"]: p for p in doc["packages"] if p["SPDXID"].startswith("SPDXRef-DebianPackage-")}
    assert set(debs) == {"tool", "data"}
    assert debs["tool"]["versionInfo"] == "2:1.0+b1-3"
    assert debs["tool"]["externalRefs"][0]["referenceLocator"] == "pkg:deb/debian/tool@2%3A1.0%2Bb1-3?arch=amd64"
    assert debs["data"]["externalRefs"][0]["referenceLocator"] == "pkg:deb/debian/data@1.0?arch=all"
    assert debs["tool"]["checksums"] == [{"algorithm": "SHA256", "checksumValue": hashlib.sha256(tool.read_bytes()).hexdigest()}]
    contained = {r["relatedSpdxElement"] for r in doc["relationships"] if r["spdxElementId"] == "SPDXRef-Image"}
    assert {p["SPDXID"] for p in debs.values()} <= contained


def test_a_later_package_layer_cannot_overwrite_an_earlier_ones_files(tmp_path: Path) -> None:
    a = make_deb(tmp_path, "first", files={"/usr/bin/same": "a"})
    b = make_deb(tmp_path, "second", files={"/usr/bin/same": "b"})
    spec = tmp_path / "lamina.toml"
    spec.write_text(f'[[layer]]\ndebs = ["{a.name}"]\n\n[[layer]]\ndebs = ["{b.name}"]\n')
    res = lamina("build", str(spec), "-o", str(tmp_path / "img.tar"))
    assert res.returncode == 1
    assert "packages first (an earlier layer) and second both install /usr/bin/same" in res.stderr
    spec.write_text(f'[[layer]]\ndebs = ["{a.name}"]\n\n[[layer]]\ndebs = ["{b.name}"]\nallow_overwrite = true\n')
    res = lamina("build", str(spec), "-o", str(tmp_path / "img.tar"))
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd"])
def test_corrupted_packages_fail_only_with_input_errors(tmp_path: Path, compression: str) -> None:
    """Every single-byte change or truncation of a real package: read in full, or one InputError."""
    import random

    good = make_deb(tmp_path, "fuzzed", files={"/usr/bin/fuzzed": b"\x7fELF" + bytes(range(256)) * 20,
                                               "/etc/fuzzed.conf": "x=1\n"}, conffiles=("/etc/fuzzed.conf",),
                    compression=compression)
    data = good.read_bytes()
    rng = random.Random(compression)
    target = tmp_path / "mutant.deb"
    outcomes = set()
    for i in range(120):
        mutant = bytearray(data)
        if i % 4 == 0:
            mutant = mutant[: rng.randrange(len(data))]
        else:
            mutant[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(mutant))
        try:
            with contextlib.ExitStack() as stack:
                for entry, opener in _packages(target, stack=stack, spool=tmp_path / f"spool{i}"):
                    if opener is not None:
                        with opener() as f:  # type: ignore[operator]
                            f.read()
            outcomes.add("read")
        except InputError:
            outcomes.add("refused")
    assert "refused" in outcomes
