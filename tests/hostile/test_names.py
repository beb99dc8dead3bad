"""Names and messages: what a hostile name becomes in layers, JSON and error lines."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from hostile.generate import make_canary, newline_and_non_utf8
from hostile.harness import assert_clean_error, lamina

from lamina.layers import tarformat
from lamina.layers.entries import Entry, Kind, display


def _pax_records(layer: bytes) -> list[dict[bytes, bytes]]:
    """The raw PAX records of every 'x' header, as bytes (no decoding)."""
    out, pos = [], 0
    while pos + 512 <= len(layer):
        head = layer[pos:pos + 512]
        if head == b"\0" * 512:
            break
        size = int(head[124:136].rstrip(b"\0 ") or b"0", 8)
        body = layer[pos + 512:pos + 512 + size]
        if head[156:157] == b"x":
            records, rest = {}, body
            while rest:
                length = int(rest.split(b" ", 1)[0])
                key, _, value = rest[:length].split(b" ", 1)[1][:-1].partition(b"=")
                records[key] = value
                rest = rest[length:]
            out.append(records)
        pos += 512 + size + (-size % 512)
    return out


@pytest.mark.parametrize("name", ["caf\udce9", "d/" + "\udcff" * 120])
def test_non_utf8_names_keep_their_bytes_and_pax_says_binary(name: str) -> None:
    entry = Entry(name, Kind.FILE, size=0)
    layer = tarformat.header(entry) + tarformat.END_OF_ARCHIVE
    for records in _pax_records(layer):
        for key in (b"path", b"linkpath"):
            if key in records:
                try:
                    records[key].decode("utf-8")
                except UnicodeDecodeError:
                    assert records.get(b"hdrcharset") == b"BINARY", records
    with tarfile.open(fileobj=io.BytesIO(layer)) as tf:
        assert [m.name for m in tf] == [name]  # the same bytes back (tarfile: surrogateescape)
    if len(name.encode("utf-8", "surrogateescape")) <= 100:
        assert _pax_records(layer) == [], "a short name needs no PAX record"


def test_utf8_names_still_get_a_pax_path() -> None:
    layer = tarformat.header(Entry("n\u00e9", Kind.FILE)) + tarformat.END_OF_ARCHIVE
    assert _pax_records(layer) == [{b"path": "n\u00e9".encode()}]


def test_display_escapes_undecodable_bytes_only() -> None:
    assert display("caf\udce9/n\u00e9") == "caf\\xe9/n\u00e9"
    json.dumps(display("\udcff\udcfe")).encode("utf-8")  # valid UTF-8 JSON


def test_a_symlink_is_not_called_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").symlink_to("../f")
    (tmp_path / "lamina.toml").write_text(
        'output = "o.tar"\n[[layer]]\nentries = [{src = "d", dst = "/d"}, {src = "f", dst = "/d/x/y"}]\n')
    res = lamina("build", "--no-lint", "--no-cache", "lamina.toml", cwd=tmp_path)
    assert_clean_error(res, "'d/x' is added as a symlink and also as the parent directory of 'd/x/y'")


def _image_with_odd_names(tmp_path: Path) -> Path:
    tarball = newline_and_non_utf8(tmp_path, make_canary(tmp_path / "c"))
    res = lamina("build", "--no-lint", "--no-cache", "--tarball", str(tarball), "-o", "img.tar", cwd=tmp_path)
    assert res.code == 0, res
    return tmp_path / "img.tar"


def test_inspect_json_has_no_lone_surrogates(tmp_path: Path) -> None:
    image = _image_with_odd_names(tmp_path)
    res = lamina("inspect", "--json", "--files", str(image), cwd=tmp_path)
    assert res.code == 0, res
    assert "\\udc" not in res.stdout, [line for line in res.stdout.splitlines() if "\\udc" in line]
    assert "caf\\\\xe9" in res.stdout


def test_sbom_of_non_utf8_names(tmp_path: Path) -> None:
    tarball = newline_and_non_utf8(tmp_path, make_canary(tmp_path / "c"))
    res = lamina("build", "--no-lint", "--no-cache", "--tarball", str(tarball), "-o", "img.tar", "--sbom", "spdx",
                 cwd=tmp_path)
    assert res.code == 0, res


def test_lint_json_has_no_lone_surrogates() -> None:
    """A finding about a non-UTF-8 name goes into --json as valid UTF-8 (\\xNN escapes)."""
    from lamina.lint import Finding

    doc = json.dumps([Finding("L007", "warning", "/caf\udce9", "/caf\udce9 is world-writable").to_json()])
    doc.encode("utf-8")  # lone surrogates would raise here
    assert "\\udc" not in doc and "caf\\\\xe9" in doc
