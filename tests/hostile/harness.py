"""Run lamina on a hostile input as a user would, and judge the outcome.

The CLI runs in a child process (real exit codes and stderr) under an address-space limit,
so a memory bomb fails the test instead of the machine; its peak RSS is that one child's
(reported by the small process that starts it), its run time the harness's clock.
"""

from __future__ import annotations

import gzip
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
from support.cli import SRC

MEMORY_LIMIT = 2 << 30  # address space of the child: a bomb ends in MemoryError, not in swap
RSS_LIMIT_KB = 400 << 10  # what a hostile input may make lamina hold, at most


@attrs.frozen
class Outcome:
    code: int
    stdout: str
    stderr: str
    max_rss_kb: int
    seconds: float

    def __str__(self) -> str:
        return f"exit {self.code} after {self.seconds:.1f}s, {self.max_rss_kb} KiB RSS\n--stdout--\n{self.stdout[-2000:]}\n--stderr--\n{self.stderr[-3000:]}"


# The child is started by a small Python of its own, which sets the address-space limit and
# reports the child's peak RSS (RUSAGE_CHILDREN): the RSS of a process forked from pytest
# itself starts at pytest's own, which grows with the tests run before (300+ MB after the
# registry tests), and made bounded builds look unbounded.
_SPAWN = (
    "import resource, subprocess, sys\n"
    "def cap():\n"
    "    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))\n"
    "code = subprocess.call(sys.argv[3:], preexec_fn=cap)\n"
    "open(sys.argv[1], 'w').write(f'{code} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}')\n"
)


def lamina(*args: str, cwd: Path, timeout: float = 120) -> Outcome:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["PYTHONPATH"] = str(SRC)
    out, err, report = cwd / ".stdout", cwd / ".stderr", cwd / ".outcome"
    start = time.monotonic()
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-c", _SPAWN, str(report), str(MEMORY_LIMIT), sys.executable, "-m",
                                 "lamina", *args], cwd=cwd, env=env, stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the spawner and lamina under it
            proc.wait()
    if report.exists():
        code_text, rss_text = report.read_text().split()
        code, rss = int(code_text), int(rss_text)
        report.unlink()
    else:  # killed at the deadline
        code, rss = -999, 0
    outcome = Outcome(code, out.read_text(errors="replace"), err.read_text(errors="replace"), rss,
                      time.monotonic() - start)
    out.unlink()
    err.unlink()
    return outcome


def assert_clean_error(res: Outcome, needle: str = "") -> None:
    """One ``lamina: error:`` line (the last), exit 1 or 2, no traceback, no internal error."""
    assert res.code != -999, f"timed out\n{res}"
    assert res.code in (1, 2), res
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("lamina: error: "), res
    assert sum(line.startswith("lamina: error:") for line in lines) == 1, res
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res
    assert needle in lines[-1], f"{needle!r} not in the error line\n{res}"


def assert_bounded(res: Outcome, rss_kb: int = RSS_LIMIT_KB) -> None:
    assert res.max_rss_kb < rss_kb, f"peak RSS {res.max_rss_kb} KiB over {rss_kb} KiB\n{res}"


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every path under the roots with its size and mtime: what 'nothing changed' compares."""
    out: dict[str, tuple[int, int]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                out[p] = (st.st_size, st.st_mtime_ns)
    return out


def contents(path: Path) -> Iterator[bytes]:
    """The bytes of a file and, recursively, of every tar member and compressed stream in it."""
    yield from _expand(path.read_bytes(), 0)


def _expand(data: bytes, depth: int) -> Iterator[bytes]:
    yield data
    if depth > 3:
        return
    if data[:2] == b"\x1f\x8b":
        try:
            yield from _expand(gzip.decompress(data), depth + 1)
        except (OSError, EOFError):
            pass
        return
    if data[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        try:
            yield from _expand(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read(), depth + 1)
        except zstandard.ZstdError:
            pass
        return
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            for member in tf:
                if member.isfile():
                    f = tf.extractfile(member)
                    if f is not None:
                        yield member.name.encode("utf-8", "surrogateescape")
                        yield from _expand(f.read(), depth + 1)
    except (tarfile.TarError, EOFError):
        pass


def assert_no_leak(token: str, res: Outcome, *outputs: Path) -> None:
    assert token not in res.stdout and token not in res.stderr, f"canary read from outside the input\n{res}"
    for root in outputs:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
        for f in files:
            for blob in contents(f):
                assert token.encode() not in blob, f"canary content in {f}"


def layer_members(image_tar: Path, *, read_data: bool = True) -> tuple[list[tarfile.TarInfo], dict[str, bytes]]:
    """The members (and file contents) of every layer of a lamina-built image tarball."""
    import json

    members: list[tarfile.TarInfo] = []
    data: dict[str, bytes] = {}
    with tarfile.open(image_tar) as outer:
        def blob(digest: str) -> bytes:
            f = outer.extractfile("blobs/sha256/" + digest.split(":")[1])
            assert f is not None
            return f.read()

        index = json.loads(outer.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        for layer in manifest["layers"]:
            raw = blob(layer["digest"])
            stream = gzip.GzipFile(fileobj=io.BytesIO(raw)) if raw[:2] == b"\x1f\x8b" else io.BytesIO(raw)
            with tarfile.open(fileobj=stream, mode="r|") as tf:
                for member in tf:
                    members.append(member)
                    if member.isfile() and read_data:
                        f = tf.extractfile(member)
                        data[member.name] = f.read() if f is not None else b""
    return members, data
