"""examples/make/Makefile as users run it: cross-compiled programs, per-architecture images
with depfiles, `lamina index`, `make push`, and Make's idea of up to date."""

from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import SRC
from support.oci import validate_image
from support.registry import DistributionRegistry
from support.tools import require

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "make"
ACCEPT = ("application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json")
IMAGES = ("base-amd64.tar", "base-arm64.tar", "hello-amd64.tar", "hello-arm64.tar", "greet-amd64.tar", "hello.tar")


@pytest.fixture(scope="module")
def gocache() -> Path:
    """Go's build cache (safe to share): the testdata's, so the standard library is compiled once."""
    cache = Path(os.environ.get("GOCACHE") or EXAMPLE.parents[1] / "testdata" / "out" / "gocache")
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def _copy(tmp: Path) -> Path:
    project = tmp / "example dir"  # a space in the path: the depfiles must escape it
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("out"))
    (project / "README.txt").write_text("not an input of anything\n")
    return project


def make(project: Path, gocache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    for tool in ("make", "go", "musl-gcc"):
        require(tool)
    command = f"env PYTHONPATH={shlex.quote(str(SRC))} {shlex.quote(sys.executable)} -m lamina"
    env = {**os.environ, "GOCACHE": str(gocache)}
    env.pop("SOURCE_DATE_EPOCH", None)
    return subprocess.run(["make", "-C", str(project), f"LAMINA={command}", *args], capture_output=True, text=True,
                          timeout=1200, env=env, stdin=subprocess.DEVNULL)


def _ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def _stamps(project: Path) -> dict[str, tuple[int, int]]:
    """Each image's (inode, mtime): a rebuild renames a new file into place."""
    return {name: ((project / "out" / name).stat().st_ino, (project / "out" / name).stat().st_mtime_ns)
            for name in IMAGES}


def _digests(project: Path) -> dict[str, str]:
    found = {}
    for name in IMAGES:
        with tarfile.open(project / "out" / name) as t:
            found[name] = json.load(t.extractfile("index.json"))["manifests"][0]["digest"]  # type: ignore[arg-type]
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, gocache: Path) -> Iterator[Path]:
    project = _copy(tmp_path_factory.mktemp("serial"))
    _ok(make(project, gocache))
    yield project


def test_make_builds_correct_images_and_joins_them(built: Path) -> None:
    for name in IMAGES:
        validate_image(built / "out" / name)
    index = validate_image(built / "out" / "hello.tar")
    assert [(c["os"], c["architecture"]) for c in index["configs"]] == [("linux", "amd64"), ("linux", "arm64")]
    meta = json.loads((built / "out" / "hello-arm64.json").read_text())
    assert meta["schema_version"] == 1 and meta["platforms"][0]["platform"] == "linux/arm64"
    depfile = (built / "out" / "greet-amd64.d").read_text()
    assert "out/bin/greet-amd64" in depfile and "out/base-amd64.tar" in depfile


def test_make_q_is_up_to_date_and_unrelated_touches_rebuild_nothing(built: Path, gocache: Path) -> None:
    assert make(built, gocache, "-q").returncode == 0
    before = _stamps(built)
    os.utime(built / "README.txt")
    assert make(built, gocache, "-q").returncode == 0
    assert "Nothing to be done" in _ok(make(built, gocache))
    assert _stamps(built) == before


def test_one_changed_source_byte_rebuilds_only_its_dependents(built: Path, gocache: Path) -> None:
    before, digests = _stamps(built), _digests(built)
    source = built / "greet.c"
    source.write_text(source.read_text().replace("greetings", "Greetings"))
    assert make(built, gocache, "-q").returncode == 1
    out = _ok(make(built, gocache))
    assert "-o out/greet-amd64.tar" in out and "-o out/hello" not in out and "-o out/base" not in out
    after = _stamps(built)
    assert after["greet-amd64.tar"] != before["greet-amd64.tar"]
    assert _digests(built)["greet-amd64.tar"] != digests["greet-amd64.tar"]
    assert {k: v for k, v in after.items() if k != "greet-amd64.tar"} == {
        k: v for k, v in before.items() if k != "greet-amd64.tar"}
    assert make(built, gocache, "-q").returncode == 0


def test_make_j4_gives_the_same_images(built: Path, gocache: Path, tmp_path: Path) -> None:
    """Several images sharing a base, built in parallel from nothing, against one shared
    layer cache: the same bytes as the serial build (whose greet.c the test above changed)."""
    project = _copy(tmp_path)
    shutil.copy(built / "greet.c", project / "greet.c")
    _ok(make(project, gocache, "-j4"))
    assert _digests(project) == _digests(built)
    for name in IMAGES:
        validate_image(project / "out" / name)


def test_make_push_sends_the_images(built: Path, gocache: Path) -> None:
    server = DistributionRegistry(require("docker-registry"))
    try:
        out = _ok(make(built, gocache, "push", f"REGISTRY={server.host}", "TAG=v1"))
        digests = _digests(built)
        lines = [l for l in out.splitlines() if "@sha256:" in l]
        assert lines == [f"{server.host}/lamina-example/hello@{digests['hello.tar']}",
                         f"{server.host}/lamina-example/greet@{digests['greet-amd64.tar']}"]
        for name, image in (("hello", "hello.tar"), ("greet", "greet-amd64.tar")):  # the tag, as the registry has it
            conn = http.client.HTTPConnection(server.host, timeout=30)
            conn.request("HEAD", f"/v2/lamina-example/{name}/manifests/v1", headers={"Accept": ", ".join(ACCEPT)})
            response = conn.getresponse()
            assert response.status == 200 and response.getheader("Docker-Content-Digest") == digests[image]
            conn.close()
    finally:
        server.stop()
