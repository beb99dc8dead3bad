"""The one image reader as a security boundary: archive paths stay inside, diff_ids are
verified as layers stream, documents are capped, and parse errors name the file."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import pytest
from support.cli import build_ok, lamina
from support.oci import tar_bytes

from lamina.image import BASE_DIGEST, BASE_NAME
from lamina.model import ConfigFile

SECRET = b"canary: a host file that must never enter an image\n"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _config(diff_ids: list[str]) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()


def _docker_dir(root: Path, layers: list[str], diff_ids: list[str]) -> Path:
    root.mkdir()
    config = _config(diff_ids)
    (root / "config.json").write_bytes(config)
    (root / "manifest.json").write_text(json.dumps([{"Config": "config.json", "RepoTags": ["evil:1"], "Layers": layers}]))
    return root


@pytest.fixture
def canary(tmp_path: Path) -> tuple[Path, str]:
    """A gzip tar outside every archive (a home-directory backup), and its diff_id."""
    plain = tar_bytes({"home/secret.txt": SECRET})
    path = tmp_path / "outside" / "backup.tar.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(plain, mtime=0))
    return path, _sha(plain)


def _assert_refused(tmp_path: Path, res: object, *needles: str) -> None:
    assert res.returncode == 1, res.stderr  # type: ignore[attr-defined]
    err = res.stderr.strip()  # type: ignore[attr-defined]
    assert len(err.splitlines()) == 1 and err.startswith("lamina: error: "), err
    assert "Traceback" not in err and "internal error" not in err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "out.tar").exists()


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink", "symlinked-dir"])
def test_docker_archive_dir_cannot_name_a_host_file(tmp_path: Path, canary: tuple[Path, str], how: str) -> None:
    path, diff_id = canary
    root = tmp_path / "archive"
    if how == "absolute":
        layer = str(path)
    elif how == "dotdot":
        layer = "../outside/backup.tar.gz"
    else:
        layer = "layer.tar" if how == "symlink" else "sub/backup.tar.gz"
    _docker_dir(root, [layer], [diff_id])
    if how == "symlink":
        os.symlink(path, root / "layer.tar")
    elif how == "symlinked-dir":
        os.symlink(path.parent, root / "sub")
    for args in (["build", "--from", str(root), "-o", str(tmp_path / "out.tar")],
                 ["inspect", str(root)], ["lint", str(root)]):
        res = lamina(*args)
        _assert_refused(tmp_path, res, str(root))
        assert "secret" not in res.stdout


def test_docker_archive_gzip_layer_must_match_its_diff_id(tmp_path: Path) -> None:
    layer = gzip.compress(tar_bytes({"f": b"real"}), mtime=0)
    (tmp_path / "archive").mkdir()
    root = _docker_dir(tmp_path / "d", ["layer.tar.gz"], [_sha(tar_bytes({"f": b"claimed"}))])
    (root / "layer.tar.gz").write_bytes(layer)
    res = lamina("build", "--from", str(root), "-o", str(tmp_path / "out.tar"))
    _assert_refused(tmp_path, res, "diff_id")


def test_oci_layer_passed_through_is_checked_against_its_diff_id(tmp_path: Path) -> None:
    """Digest and size right (the manifest was rewritten to match), diff_id wrong."""
    (tmp_path / "f").write_text("one")
    build_ok("--add", f"{tmp_path / 'f'}:/f", "--oci-dir", str(tmp_path / "base"))
    index = json.loads((tmp_path / "base" / "index.json").read_text())
    blobs = tmp_path / "base" / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_bytes())
    other = gzip.compress(tar_bytes({"f": b"two"}), mtime=0)
    (blobs / _sha(other)[7:]).write_bytes(other)
    manifest["layers"][0].update(digest=_sha(other), size=len(other))
    data = json.dumps(manifest).encode()
    (blobs / _sha(data)[7:]).write_bytes(data)
    index["manifests"][0].update(digest=_sha(data), size=len(data))
    (tmp_path / "base" / "index.json").write_text(json.dumps(index))
    res = lamina("build", "--from", f"oci:{tmp_path / 'base'}", "-o", str(tmp_path / "out.tar"))
    _assert_refused(tmp_path, res, "diff_id")
    res = lamina("inspect", str(tmp_path / "base"))
    assert res.returncode == 1 and "diff_id" in res.stderr, res.stderr


def test_bad_digest_in_index_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("one")
    build_ok("--add", f"{tmp_path / 'f'}:/f", "--oci-dir", str(tmp_path / "base"))
    index = json.loads((tmp_path / "base" / "index.json").read_text())
    index["manifests"][0]["digest"] = "sha256:nothex"
    (tmp_path / "base" / "index.json").write_text(json.dumps(index))
    res = lamina("build", "--from", f"oci:{tmp_path / 'base'}", "-o", str(tmp_path / "out.tar"))
    _assert_refused(tmp_path, res, str(tmp_path / "base"), "index.json", "sha256:nothex")


def test_garbage_documents_are_one_line(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    for manifest in ([{"Config": 7}], [{"Config": "c.json", "Layers": "x"}], {"not": "a list"}, [[1]]):
        (root / "manifest.json").write_text(json.dumps(manifest))
        _assert_refused(tmp_path, lamina("build", "--from", str(root), "-o", str(tmp_path / "out.tar")), str(root))
    (root / "c.json").write_text(json.dumps({"rootfs": {"diff_ids": ["sha256:bad"]}}))
    (root / "manifest.json").write_text(json.dumps([{"Config": "c.json", "Layers": ["l"]}]))
    _assert_refused(tmp_path, lamina("build", "--from", str(root), "-o", str(tmp_path / "out.tar")), "c.json")


def test_huge_config_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    with open(root / "c.json", "wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB of zeros
    (root / "manifest.json").write_text(json.dumps([{"Config": "c.json", "Layers": []}]))
    _assert_refused(tmp_path, lamina("build", "--from", str(root), "-o", str(tmp_path / "out.tar")), "MiB")


def test_an_index_that_names_itself_ends(tmp_path: Path) -> None:
    """An index can't contain its own digest, but two can name each other: the walk must end."""
    (tmp_path / "f").write_text("one")
    build_ok("--add", f"{tmp_path / 'f'}:/f", "--oci-dir", str(tmp_path / "base"))
    blobs = tmp_path / "base" / "blobs" / "sha256"
    leaf = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    chain = json.dumps(leaf).encode()
    for _ in range(8):  # nested deeper than any real archive
        (blobs / _sha(chain)[7:]).write_bytes(chain)
        child = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": _sha(chain), "size": len(chain)}
        chain = json.dumps({**leaf, "manifests": [child]}).encode()
    (blobs / _sha(chain)[7:]).write_bytes(chain)
    top = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": _sha(chain), "size": len(chain)}
    (tmp_path / "base" / "index.json").write_text(json.dumps({**leaf, "manifests": [top]}))
    res = lamina("inspect", str(tmp_path / "base"))
    assert res.returncode == 1 and "nested deeper" in res.stderr, res.stderr


def test_non_ascii_tags_are_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("one")
    res = lamina("build", "--add", f"{tmp_path / 'f'}:/f", "-t", "hello:café", "-o", str(tmp_path / "out.tar"))
    assert res.returncode == 2 and "bad image reference" in res.stderr, res.stderr
    assert not (tmp_path / "out.tar").exists()


def test_config_round_trip_keeps_unknown_keys() -> None:
    doc = {"architecture": "arm64", "os": "linux", "variant": "v8", "author": "someone", "os.version": "x",
           "created": "2020-01-01T00:00:00Z", "rootfs": {"type": "layers", "diff_ids": [_sha(b"")]},
           "config": {"Env": ["A=1"], "Healthcheck": {"Test": ["CMD", "true"]}, "ArgsEscaped": True},
           "history": [{"created_by": "x", "empty_layer": True}, {"created_by": "y"}]}
    config = ConfigFile.from_json(doc)
    assert config.to_json() == doc
    assert [h.created_by for h in config.layer_history()] == ["y"]


def _manifest_annotations(layout: Path) -> dict[str, str]:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
    return manifest.get("annotations", {})


def test_base_annotations_name_the_base_never_a_host_path(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("one")
    base_digest = build_ok("--add", f"{tmp_path / 'f'}:/f", "-t", "registry.example/team/base:1",
                           "--oci-dir", str(tmp_path / "base"))
    tagless = build_ok("--add", f"{tmp_path / 'f'}:/f", "--oci-dir", str(tmp_path / "tagless"))
    build_ok("--from", f"oci:{tmp_path / 'base'}", "--add", f"{tmp_path / 'f'}:/g", "--oci-dir", str(tmp_path / "a"))
    assert _manifest_annotations(tmp_path / "a") == {BASE_NAME: "registry.example/team/base:1", BASE_DIGEST: base_digest}
    build_ok("--from", f"oci:{tmp_path / 'tagless'}", "--add", f"{tmp_path / 'f'}:/g", "--oci-dir", str(tmp_path / "b"))
    assert _manifest_annotations(tmp_path / "b") == {BASE_DIGEST: tagless}
    # The same base at another path gives the same image.
    os.rename(tmp_path / "base", tmp_path / "moved")
    again = build_ok("--from", f"oci:{tmp_path / 'moved'}", "--add", f"{tmp_path / 'f'}:/g", "--oci-dir", str(tmp_path / "c"))
    first = json.loads((tmp_path / "a" / "index.json").read_text())["manifests"][0]["digest"]
    assert again == first


@pytest.mark.parametrize("command", ["build", "inspect", "lint", "diff"])
def test_a_corrupt_gzip_stream_under_a_matching_digest_is_one_line(tmp_path: Path, command: str) -> None:
    """The attacker rewrote the manifest so the digest matches: the deflate stream is still bad."""
    (tmp_path / "f").write_bytes(os.urandom(4096))
    build_ok("--add", f"{tmp_path / 'f'}:/f", "--oci-dir", str(tmp_path / "base"))
    index = json.loads((tmp_path / "base" / "index.json").read_text())
    blobs = tmp_path / "base" / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_bytes())
    layer = bytearray((blobs / manifest["layers"][0]["digest"][7:]).read_bytes())
    layer[30] ^= 0xFF
    (blobs / _sha(bytes(layer))[7:]).write_bytes(bytes(layer))
    manifest["layers"][0].update(digest=_sha(bytes(layer)), size=len(layer))
    data = json.dumps(manifest).encode()
    (blobs / _sha(data)[7:]).write_bytes(data)
    index["manifests"][0].update(digest=_sha(data), size=len(data))
    (tmp_path / "base" / "index.json").write_text(json.dumps(index))
    ref = f"oci:{tmp_path / 'base'}"
    (tmp_path / "g").write_bytes(b"other")
    build_ok("--add", f"{tmp_path / 'g'}:/f", "--oci-dir", str(tmp_path / "good"))
    args = {"build": ["build", "--from", ref, "-o", str(tmp_path / "out.tar")], "inspect": ["inspect", str(tmp_path / "base")],
            "lint": ["lint", str(tmp_path / "base")], "diff": ["diff", f"oci:{tmp_path / 'good'}", ref]}[command]
    res = lamina(*args)
    assert res.returncode == 1, res.stderr
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lamina: error: ") and "internal error" not in err, err
