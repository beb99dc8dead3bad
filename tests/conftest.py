"""Shared fixtures: test payloads, a private Docker daemon, a throwaway CA."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make `support` importable whatever import mode pytest is configured with.
_TESTS = Path(__file__).resolve().parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from support.dockerd import DockerDaemon  # noqa: E402
from support.tls import CertBundle, HttpsServer, make_test_ca  # noqa: E402
from support.tools import require, unavailable  # noqa: E402

TESTDATA = _TESTS.parent / "testdata"


_SESSION_CACHE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    # lamina's caches (layers, pulled bases, blob locations) go to a fresh dir per session,
    # never the user's ~/.cache: tests must not depend on, or fill, what a developer has.
    import tempfile

    _SESSION_CACHE.append(tempfile.mkdtemp(prefix="lamina-test-cache-"))
    os.environ["XDG_CACHE_HOME"] = _SESSION_CACHE[-1]


def pytest_report_header(config: pytest.Config) -> str:
    """The free space where the suite writes (it peaks at about 3 GB): a run that dies of a full
    disk then says so in its first lines, not only in the hundreds of errors that follow."""
    import shutil
    import tempfile

    free = shutil.disk_usage(tempfile.gettempdir()).free
    low = " -- LOW: the suite needs about 3 GB" if free < 4 << 30 else ""
    return f"free disk under {tempfile.gettempdir()}: {free / (1 << 30):.1f} GiB{low}"


def pytest_unconfigure(config: pytest.Config) -> None:
    # The session's cache holds every layer the suite built (over a gigabyte): left behind,
    # a few hundred runs filled the disk and a later CI run died of ENOSPC.
    import shutil

    while _SESSION_CACHE:
        shutil.rmtree(_SESSION_CACHE.pop(), ignore_errors=True)


@pytest.fixture
def small_app(tmp_path: Path) -> Path:
    """A working directory with a small input tree (tree/g, tree/sub/f) and an empty out/:
    what the up-to-date tests build, change and build again."""
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "f").write_text("f")
    (tmp_path / "tree" / "g").write_text("g")
    (tmp_path / "out").mkdir()
    return tmp_path


@pytest.fixture(scope="session")
def testdata_out() -> Path:
    """Build testdata/ (Go/C hello binaries, busybox rootfs, CA bundle) once.

    make is incremental, so after the first run this costs well under a second. A lock
    serializes it between pytest sessions that share the checkout (`make test-fast` in one
    terminal, one e2e file in another): two makes at once delete each other's staging dirs.
    """
    import fcntl

    for tool in ("make", "go", "gcc", "musl-gcc", "tar", "gzip"):
        require(tool)
    (TESTDATA / "out").mkdir(exist_ok=True)
    with open(TESTDATA / "out" / ".make.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = subprocess.run(["make", "-C", str(TESTDATA), "all"], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=900)
    if r.returncode != 0:
        pytest.fail(f"make -C testdata all failed:\n{r.stdout}\n{r.stderr}", pytrace=False)
    return TESTDATA / "out"


@pytest.fixture(scope="session")
def dockerd() -> Iterator[DockerDaemon]:
    """A private dockerd for the whole session (started once: ~1 s, but
    images pulled into it are shared by all tests)."""
    daemon_bin = require("dockerd")
    cli = require("docker")
    if os.geteuid() != 0:
        unavailable("a private dockerd needs root")
    daemon = DockerDaemon(daemon_bin, cli)
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    """A throwaway CA plus a server cert for 127.0.0.1 signed by it."""
    require("openssl")
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def https_server(test_ca: CertBundle) -> Iterator[HttpsServer]:
    """An HTTPS server answering `hello over tls`, trusted only via test_ca."""
    with HttpsServer(test_ca.cert, test_ca.key) as server:
        yield server


@pytest.fixture(scope="session")
def real_debs(request: pytest.FixtureRequest) -> list[Path]:
    """Real Debian packages (libc6 and friends), downloaded once into pytest's cache."""
    from support.aptrepo import cache_dir, download

    return download(cache_dir(request.config, "lamina-debs-amd64"))


@pytest.fixture(scope="session")
def real_repo(real_debs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local apt repository (Release, Packages) of ``real_debs``."""
    from support.aptrepo import make_repo

    return make_repo(real_debs, tmp_path_factory.mktemp("repo"))
