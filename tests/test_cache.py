"""The layer cache: hits skip tar and compression, and never change a byte of the output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import SRC, lamina

import lamina.build as build_module
from lamina.spec import FilesLayer, TarballLayer, BuildSpec
from lamina.sources.files import AddSpec


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "tree").mkdir()
    for i in range(20):
        (tmp_path / "tree" / f"f{i}").write_bytes(os.urandom(10_000))
    (tmp_path / "app").write_bytes(b"version 1")
    return tmp_path


def _spec(root: Path, out: str) -> BuildSpec:
    return BuildSpec(
        layers=(FilesLayer((AddSpec(str(root / "tree"), "/tree"),)), FilesLayer((AddSpec(str(root / "app"), "/app"),))),
        output=root / out,
    )


def test_unchanged_layers_are_not_rebuilt_and_bytes_do_not_change(inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = build_module.build_layer

    def counting(items, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw["created_by"])
        return real(items, **kw)

    monkeypatch.setattr(build_module, "build_layer", counting)
    cold = build_module.build(_spec(inputs, "cold.tar"), epoch=0)
    assert len(calls) == 2
    warm = build_module.build(_spec(inputs, "warm.tar"), epoch=0)
    assert len(calls) == 2  # both layers from the cache
    assert (inputs / "warm.tar").read_bytes() == (inputs / "cold.tar").read_bytes()
    (inputs / "app").write_bytes(b"version 2")
    build_module.build(_spec(inputs, "changed.tar"), epoch=0)
    assert calls[2:] == ["lamina: add app -> /app"]  # only the changed layer
    uncached = build_module.build(_spec(inputs, "nocache.tar"), epoch=0, use_cache=False)
    assert len(calls) == 5  # --no-cache builds everything
    assert (inputs / "nocache.tar").read_bytes() == (inputs / "changed.tar").read_bytes()
    assert warm.image.digest == cold.image.digest != uncached.image.digest
    # Mode and epoch are part of the key too: a mode changes one layer, the epoch every layer.
    os.chmod(inputs / "app", 0o700)
    build_module.build(_spec(inputs, "mode.tar"), epoch=0)
    assert len(calls) == 6
    build_module.build(_spec(inputs, "epoch.tar"), epoch=5)
    assert len(calls) == 8


def test_tarball_layers_are_cached_by_content(inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    subprocess.run(["tar", "-cf", str(inputs / "rootfs.tar"), "-C", str(inputs), "tree"], check=True)
    calls = []
    real = build_module.build_layer
    monkeypatch.setattr(build_module, "build_layer", lambda items, **kw: calls.append(1) or real(items, **kw))
    spec = BuildSpec(layers=(TarballLayer(str(inputs / "rootfs.tar")),), output=inputs / "t1.tar")
    build_module.build(spec, epoch=0)
    build_module.build(spec, epoch=0)
    assert len(calls) == 1
    with open(inputs / "rootfs.tar", "r+b") as f:  # same size, new content
        f.seek(2000)  # inside the first file's data
        f.write(b"X")
    build_module.build(spec, epoch=0)
    assert len(calls) == 2


def test_corrupt_cache_entry_is_rebuilt_and_prune_empties(inputs: Path) -> None:
    env = {"XDG_CACHE_HOME": str(inputs / "cache")}
    first = lamina("build", "-q", "--add", f"{inputs / 'tree'}:/t", "-o", str(inputs / "a.tar"), env=env)
    blobs = list((inputs / "cache" / "lamina" / "layers" / "blobs" / "sha256").iterdir())
    assert len(blobs) == 1
    blobs[0].write_bytes(blobs[0].read_bytes()[:-10])  # truncated
    second = lamina("build", "-q", "--add", f"{inputs / 'tree'}:/t", "-o", str(inputs / "b.tar"), env=env)
    assert second.stdout == first.stdout
    assert (inputs / "a.tar").read_bytes() == (inputs / "b.tar").read_bytes()
    res = lamina("cache", "prune", env=env)
    assert res.returncode == 0 and res.stdout.strip().startswith("removed 1 layers") and res.stdout.strip().endswith("0 layers (0 bytes) remain")


def test_two_builds_at_once_share_the_cache(inputs: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC), "XDG_CACHE_HOME": str(inputs / "cache")}
    procs = [subprocess.Popen([sys.executable, "-m", "lamina", "build", "-q", "--add", f"{inputs / 'tree'}:/t",
                               "--add", f"{inputs / 'app'}:/app", "-o", str(inputs / f"c{i}.tar")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert len({out for out, _ in results}) == 1
    assert len({(inputs / f"c{i}.tar").read_bytes() for i in range(4)}) == 1
