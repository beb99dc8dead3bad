"""lamina diff and --check-reproducible: say exactly why two digests differ."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import attrs
import pytest
from support.cli import build_ok, lamina

import lamina.build as build_module
from lamina.sources.files import AddSpec
from lamina.spec import BuildSpec, FilesLayer


def _tar(path: Path, names: list[str]) -> None:
    with tarfile.open(path, "w") as tf:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 1
            tf.addfile(info, io.BytesIO(b"z"))


def test_diff_reports_mode_content_and_order(tmp_path: Path) -> None:
    for side in ("a", "b"):
        d = tmp_path / side
        (d / "tree").mkdir(parents=True)
        (d / "tree" / "same").write_text("same")
        (d / "tree" / "moded").write_text("m")
        (d / "tree" / "content").write_text("one" if side == "a" else "two")
        os.chmod(d / "tree" / "moded", 0o644 if side == "a" else 0o755)
        _tar(d / "order.tar", ["x", "y"] if side == "a" else ["y", "x"])
        build_ok("--add", f"{d / 'tree'}:/t", "--tarball", str(d / "order.tar"), "--no-lint", "--oci-dir", str(d / "img"))
    res = lamina("diff", f"oci:{tmp_path / 'a' / 'img'}", f"oci:{tmp_path / 'b' / 'img'}")
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert [l for l in lines if l.startswith("  ")] == [
        "  entry order differs",
        "  t/content: content differs (3 -> 3 bytes)",
        "  t/moded: mode 0644 -> 0755",
    ]
    assert [l.split(":")[0] for l in lines if l.startswith("layer")] == ["layer 0", "layer 1"]
    same = lamina("diff", f"oci:{tmp_path / 'a' / 'img'}", f"oci:{tmp_path / 'a' / 'img'}")
    assert (same.returncode, same.stdout) == (0, "")


def test_diff_reports_config_changes(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f")
    build_ok("--add", f"{tmp_path / 'f'}:/f", "--env", "A=1", "-o", str(tmp_path / "one.tar"))
    build_ok("--add", f"{tmp_path / 'f'}:/f", "--env", "A=2", "--label", "x=y", "-o", str(tmp_path / "two.tar"))
    res = lamina("diff", str(tmp_path / "one.tar"), str(tmp_path / "two.tar"))
    assert res.stdout.splitlines()[:2] == [
        'config config.Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1"] -> '
        '["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=2"]',
        'config config.Labels: null -> {"x": "y"}',
    ]


def test_check_reproducible_passes_on_a_clean_build(tmp_path: Path) -> None:
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    for name in "abcdef":
        (tmp_path / "tree" / "sub" / name).write_text(name)
    res = lamina("build", "--check-reproducible", "--add", f"{tmp_path / 'tree'}:/t", "-o", str(tmp_path / "img.tar"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "img.tar").exists()


def test_check_reproducible_fails_with_the_diff_when_a_build_is_nondeterministic(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "f").write_text("f")
    real = build_module.tree_layer
    calls = []

    def leaky(specs, ctx):  # type: ignore[no-untyped-def]
        items = real(specs, ctx)
        calls.append(1)
        if len(calls) == 2:  # the second build: a host mtime leaks into one entry
            items = [(attrs.evolve(e, mtime=1234) if e.path == "t/f" else e, o) for e, o in items]
        return items

    monkeypatch.setattr(build_module, "tree_layer", leaky)
    spec = BuildSpec(layers=(FilesLayer((AddSpec(str(tmp_path / "tree"), "/t"),)),), output=tmp_path / "img.tar")
    differences = build_module.check_reproducible(spec, epoch=0)
    assert differences[0].startswith("digest sha256:")
    assert differences[1].startswith("layer 0: sha256:")
    assert differences[2:] == ["  t/f: mtime 0 -> 1234"]


@pytest.mark.e2e
def test_docker_and_lamina_builds_of_the_same_files_differ_only_in_mtimes_and_config(
        dockerd, testdata_out: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Go's tar headers (docker) carry the file type in the mode (100755), lamina's do not:
    diff compares type and permissions separately, so only real differences are reported."""
    import re
    import shutil

    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(testdata_out / "hello-amd64", context / "hello")
    shutil.copy(testdata_out / "cacert.pem", context / "cacert.pem")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY hello /\nCOPY cacert.pem /etc/ssl/certs/\n")
    dockerd.docker("build", "-q", "-t", "lamina-e2e/diff:docker", str(context), env={**dockerd.env, "DOCKER_BUILDKIT": "0"})
    dockerd.docker("save", "-o", str(tmp_path / "docker.tar"), "lamina-e2e/diff:docker")
    build_ok("--add", f"{context / 'hello'}:/", "--add", f"{context / 'cacert.pem'}:/etc/ssl/certs/",
             "-o", str(tmp_path / "lamina.tar"))
    res = lamina("diff", str(tmp_path / "docker.tar"), str(tmp_path / "lamina.tar"))
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()
    details = [line for line in lines if line.startswith("  ")]
    assert [line for line in lines if line.startswith("layer")] == [
        line for line in lines if re.fullmatch(r"layer [01]: sha256:[0-9a-f]{64} -> sha256:[0-9a-f]{64}", line)]
    assert [line.split(":")[0].strip() for line in details] == ["hello", "etc", "etc/ssl", "etc/ssl/certs",
                                                                   "etc/ssl/certs/cacert.pem"], lines
    assert all(re.fullmatch(r"  \S+: mtime [1-9][0-9]* -> 0", line) for line in details), lines
    assert all(line.startswith(("config ", "layer ", "  ")) for line in lines)
    assert any(line.startswith("config ") for line in lines)
