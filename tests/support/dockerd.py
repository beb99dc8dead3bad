"""A private, throwaway Docker daemon for end-to-end tests.

Loading lamina's images into a real daemon and running them is the proof that
they are valid. A private dockerd (own socket, data root and exec root under a
fresh /tmp dir) keeps tests off the machine's own daemon, needs no systemd,
and works on CI machines where no daemon runs. It must run as root.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

# Variables that would point the CLI at another daemon or pin an API version
# our daemon (Debian's 20.10, API 1.41) may not speak.
_CLIENT_ENV_DROP = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH",
                    "DOCKER_API_VERSION", "DOCKER_TLS")


class DockerError(subprocess.CalledProcessError):
    """CalledProcessError whose message includes the CLI's output."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


class DockerDaemon:
    """Start dockerd on construction; `stop()` kills it and deletes its state."""

    def __init__(self, dockerd: str = "dockerd", docker: str = "docker",
                 timeout: float = 60.0) -> None:
        # Short dir in /tmp: unix socket paths must stay under 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="ld", dir="/tmp"))
        sock = self.dir / "docker.sock"
        assert len(str(sock)) < 100, sock
        self.host = f"unix://{sock}"
        self.log_path = self.dir / "dockerd.log"
        self.docker_cli = docker
        self.env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ENV_DROP}
        # Own CLI config: no credential helpers, contexts or plugins from ~/.docker.
        self.env["DOCKER_CONFIG"] = str(self.dir / "config")
        daemon_env = dict(self.env)
        # dockerd looks up containerd, runc, docker-init and mount helpers on PATH.
        daemon_env["PATH"] = os.pathsep.join(
            [self.env.get("PATH", "/usr/bin:/bin"), "/usr/local/sbin", "/usr/sbin", "/sbin"])
        self._stopped = False
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(
                    [dockerd, "--host", self.host,
                     "--data-root", str(self.dir / "root"),
                     "--exec-root", str(self.dir / "exec"),
                     "--pidfile", str(self.dir / "docker.pid"),
                     "--iptables=false", "--ip6tables=false", "--bridge=none",
                     "--storage-driver=vfs"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=self.dir, env=daemon_env,
                    start_new_session=True,  # own process group, so stop() can kill it whole
                )
            except OSError:
                shutil.rmtree(self.dir, ignore_errors=True)
                raise
        atexit.register(self.stop)  # in case the session dies before teardown
        start = time.monotonic()
        try:
            self._wait_ready(start + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - start

    def _wait_ready(self, deadline: float) -> None:
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"dockerd exited with {self.proc.returncode}:\n{self.log_tail()}")
            r = self.docker("info", check=False, timeout=10)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"dockerd not ready: {r.stderr.strip()}\n--- dockerd.log ---\n"
                    f"{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of dockerd's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def docker(self, *args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this daemon, capturing text output.

        A `run` must say `--pull never`: a test runs what it loaded, and a daemon that
        silently pulled a missing image from a registry would hide a broken load.
        """
        if args[:1] == ("run",) and not _says_pull_never(args):
            raise ValueError(f"docker run without --pull never: {args}")
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("env", self.env)
        r = subprocess.run([self.docker_cli, "-H", self.host, *args], **kw)
        if check and r.returncode != 0:
            raise DockerError(r.returncode, r.args, r.stdout, r.stderr)
        return r

    def stop(self) -> None:
        """Stop dockerd and its containerd/shims, unmount, delete the state dir.

        SIGTERM lets dockerd stop containers and its containerd cleanly. But
        containerd and the shims run in sessions of their own, outside
        dockerd's process group, so anything still running with our dir on
        its command line is killed afterwards.
        """
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        if self.proc.poll() is None:
            # Remove leftover containers first: on SIGTERM dockerd would give
            # each one 10 s to stop (a sleep as PID 1 ignores SIGTERM).
            try:
                ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False, timeout=60)
            except subprocess.TimeoutExpired:
                pass  # a wedged daemon: the kills below still clean up
            _killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        _kill_referencing(f"{self.dir}/")
        _unmount_under(self.dir)
        # vfs layers can hold read-only dirs and odd modes; as root rmtree
        # copes, and a leftover in /tmp must not fail the test run.
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> DockerDaemon:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _says_pull_never(args: tuple[str, ...]) -> bool:
    return "--pull=never" in args or any(a == "--pull" and b == "never" for a, b in zip(args, args[1:]))


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _kill_referencing(needle: str, timeout: float = 10.0) -> None:
    """SIGKILL processes whose command line mentions `needle` (our state dir:
    containerd, shims) and all their descendants (the containers' processes,
    which would otherwise be re-parented to init and live on)."""
    children: dict[int, list[int]] = {}
    seeds: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(pid)
        if needle.encode() in cmdline and pid != os.getpid():
            seeds.append(pid)
    doomed: list[int] = []
    while seeds:
        pid = seeds.pop()
        doomed.append(pid)
        seeds.extend(children.get(pid, []))
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid in doomed:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def _unmount_under(root: Path) -> None:
    """Lazily unmount anything left mounted below `root` (dockerd bind-mounts
    its data root onto itself and only undoes that on a clean exit)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    prefix = str(root)
    points = [ln.split()[4] for ln in lines]
    for point in sorted({p for p in points if p == prefix or p.startswith(prefix + "/")},
                        key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
