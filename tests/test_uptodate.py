"""Up to date means no work, and the metadata file has one documented shape."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jsonschema
import pytest
from support.cli import lamina

from lamina import uptodate
from lamina.spec import BaseSpec, BuildSpec

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "metadata.schema.json").read_text())
ARGS = ("build", "--add", "tree:/tree", "--env", "A=1", "-o", "out/i.tar", "--oci-dir", "out/l",
        "--metadata-file", "out/m.json", "--depfile", "out/i.d")
OUTPUTS = ("i.tar", "m.json", "i.d", "l/index.json")


@pytest.fixture
def app(small_app: Path) -> Path:
    return small_app


def _build(app: Path, *extra: str) -> str:
    res = lamina(*ARGS, *extra, cwd=app)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


def _state(app: Path) -> dict[str, tuple[int, bytes]]:
    """Each output's inode and bytes: a staged rewrite renames a new inode into place."""
    return {name: ((app / "out" / name).stat().st_ino, (app / "out" / name).read_bytes()) for name in OUTPUTS}


def _age(app: Path) -> None:
    """Every input a few seconds in the past (past the racy-clean window). Outputs are left
    alone: an output whose stat changed is one someone else may have written, and is rebuilt."""
    past = time.time() - 5
    for path in [app / "tree", *(app / "tree").rglob("*")]:
        os.utime(path, (past, past), follow_symlinks=False)


def test_unchanged_inputs_rewrite_nothing_and_refresh_mtimes(app: Path) -> None:
    digest = _build(app)
    _age(app)
    _build(app)  # the first build's stats were too young to trust: this one hashes, then trusts them
    before = _state(app)
    old = (app / "out" / "i.tar").stat().st_mtime_ns
    time.sleep(0.05)
    assert _build(app) == digest
    assert _state(app) == before  # not one byte rewritten, not one file replaced
    assert (app / "out" / "i.tar").stat().st_mtime_ns > old  # refreshed: Make sees it newer than its inputs
    assert (app / "out" / "l").stat().st_mtime_ns > old


def test_a_touched_but_unchanged_input_is_still_up_to_date(app: Path) -> None:
    digest = _build(app)
    _age(app)
    before = _state(app)
    os.utime(app / "tree" / "g")  # stat changed, content not: hashed, and equal
    assert _build(app) == digest
    assert _state(app) == before


@pytest.mark.parametrize("change", ["content", "mode", "new file", "setting", "output"])
def test_what_changes_the_outputs_rebuilds(app: Path, change: str) -> None:
    digest = _build(app)
    _age(app)
    before = _state(app)
    extra: tuple[str, ...] = ()
    if change == "content":
        (app / "tree" / "sub" / "f").write_text("F")  # one byte, same size
    elif change == "mode":
        os.chmod(app / "tree" / "g", 0o600)
    elif change == "new file":
        (app / "tree" / "sub" / "h").write_text("")
    elif change == "setting":
        extra = ("--env", "A=2")
    else:
        with open(app / "out" / "i.tar", "r+b") as f:  # someone else wrote to an output
            f.write(b"x")
    after = _build(app, *extra)
    assert _state(app)["i.tar"][0] != before["i.tar"][0]
    if change != "output":
        assert after != digest
    else:
        assert after == digest and (app / "out" / "i.tar").read_bytes() == before["i.tar"][1]
    rebuilt = _state(app)
    assert _build(app, *extra) == after and _state(app) == rebuilt  # what the rebuild recorded holds


def test_linking_or_unlinking_identical_files_rebuilds(app: Path) -> None:
    """Two identical files made one (a hardlink) change no path, mode or content, but the
    layer writes them as a tar hardlink: the image changes, so it is never up to date."""
    for name in ("one", "two"):
        (app / "tree" / name).write_text("same bytes")
    apart = _build(app)
    _age(app)
    os.unlink(app / "tree" / "two")
    os.link(app / "tree" / "one", app / "tree" / "two")
    linked = _build(app)
    assert linked != apart and _build(app, "--force") == linked
    _age(app)
    os.unlink(app / "tree" / "two")
    (app / "tree" / "two").write_text("same bytes")
    assert _build(app) == apart


@pytest.mark.parametrize("platforms", [(), ("--platform", "linux/amd64,linux/arm64")])
def test_a_missing_sbom_is_written_again(app: Path, platforms: tuple[str, ...]) -> None:
    """The SBOM beside the output is an output too: removed, the next build writes it again."""
    args = ("build", "--add", "tree:/tree", "-o", "out/s.tar", "--sbom", "spdx", *platforms)
    assert lamina(*args, cwd=app).returncode == 0
    _age(app)
    assert lamina(*args, cwd=app).returncode == 0  # now remembered (and its command line, for the quick check)
    sboms = sorted((app / "out").glob("s.tar*.spdx.json"))
    assert len(sboms) == (2 if platforms else 1)
    first = sboms[0].read_bytes()
    sboms[0].unlink()
    res = lamina(*args, cwd=app)
    assert res.returncode == 0, res.stderr
    assert sboms[0].read_bytes() == first


@pytest.mark.parametrize("damage", ["deleted", "rewritten"])
def test_a_layout_missing_or_changing_a_blob_is_written_again(app: Path, damage: str) -> None:
    """An OCI layout output is its index.json and the blobs it names: one deleted or rewritten
    (same size) is not up to date, by the full check or by the quick one."""
    digest = _build(app)
    _age(app)
    _build(app)  # remembered now, for the quick check too
    blobs = app / "out" / "l" / "blobs" / "sha256"
    layer = max(blobs.iterdir(), key=lambda p: p.stat().st_size)
    good = layer.read_bytes()
    if damage == "deleted":
        layer.unlink()
    else:
        layer.write_bytes(bytes(len(good)))
    assert _build(app) == digest
    assert layer.read_bytes() == good
    assert _build(app) == digest  # and up to date again


def test_force_rebuilds(app: Path) -> None:
    digest = _build(app)
    _age(app)
    before = _state(app)
    assert _build(app, "--force") == digest
    assert _state(app)["i.tar"][0] != before["i.tar"][0]


def test_a_registry_tag_is_never_up_to_date(tmp_path: Path) -> None:
    spec = BuildSpec(base=BaseSpec("registry.example/base:latest"), output=tmp_path / "i.tar")
    assert uptodate.tracked(spec, None, 0) is None
    assert uptodate.check(spec, None, 0) is None


def test_metadata_has_one_shape_for_one_platform_or_several(app: Path) -> None:
    single = _build(app)
    meta = json.loads((app / "out" / "m.json").read_text())
    jsonschema.validate(meta, SCHEMA)
    assert meta["schema_version"] == 1 and meta["digest"] == single
    assert meta["inputs_fingerprint"].startswith("sha256:")
    multi = _build(app, "--platform", "linux/amd64,linux/arm64")
    meta = json.loads((app / "out" / "m.json").read_text())
    jsonschema.validate(meta, SCHEMA)
    assert meta["digest"] == multi != single
    assert [p["platform"] for p in meta["platforms"]] == ["linux/amd64", "linux/arm64"]
    assert meta["media_type"] == "application/vnd.oci.image.index.v1+json"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**meta, "schema_version": 2}, SCHEMA)


def test_the_api_says_up_to_date_and_reads_the_image_back(app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.api import build_image
    from lamina.spec import FilesLayer, parse_add

    monkeypatch.chdir(app)  # undone after the test: its tmp_path is removed when it passes
    spec = BuildSpec(layers=(FilesLayer((parse_add("tree:/tree"),)),), oci_dir=Path("out/api"))
    first = build_image(spec)
    _age(app)
    build_image(spec)
    again = build_image(spec)
    assert not first.up_to_date and again.up_to_date
    assert again.image.digest == first.image.digest
    assert [l.diff_id for l in again.image.layers] == [l.diff_id for l in first.image.layers]
    assert not build_image(spec, force=True).up_to_date


@pytest.mark.parametrize("damage", ["truncated", "another id", "empty"])
def test_a_damaged_inputs_record_costs_a_rebuild_never_a_wrong_answer(app: Path, damage: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(app / "cache"))
    _build(app)
    time.sleep(1.1)  # past the racy-clean second: the next build records every input
    _build(app)
    (record,) = (app / "cache" / "lamina" / "uptodate").glob("*.inputs")
    data = record.read_bytes()
    record.write_bytes({"truncated": data[: len(data) // 2], "another id": b"0" * 16 + data[16:], "empty": b""}[damage])
    (app / "tree" / "g").write_text("G")  # one input changed: the record's contents are consulted
    digest = _build(app)
    fresh = lamina(*ARGS, "--force", cwd=app)
    assert fresh.returncode == 0 and fresh.stdout.strip().splitlines()[-1] == digest
