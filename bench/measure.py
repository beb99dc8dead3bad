"""Timing and peak memory of one command, and hyperfine-style repetition.

Each run is one child process (a command, or ``sh -c`` for pipelines) reaped with
``os.wait4``: its rusage ``ru_maxrss`` is the largest resident set of that process and of
every descendant it waited for, i.e. the peak of the process tree. Work done by a daemon
(dockerd) is outside that tree; its own peak can be sampled with :class:`DaemonPeak`.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Hook = Callable[[], None]


class CommandFailed(RuntimeError):
    """A measured command exited non-zero or timed out; the message has its log's tail."""


@dataclass
class Sample:
    """One run: wall seconds and peak RSS in KiB (process tree; daemon separately)."""

    seconds: float
    peak_kib: int
    daemon_peak_kib: int | None = None


@dataclass
class Job:
    """One (workload, tool) row: what to run and how to reset state around each run."""

    workload: str
    tool: str
    cmd: Sequence[str] | str  # argv, or a shell string (run by sh -c)
    output: Path | None = None  # measured for the size column after the last run
    prepare: Hook | None = None  # untimed, before every run
    cleanup: Hook | None = None  # untimed, after every run
    env: dict[str, str] | None = None  # added to os.environ
    cwd: Path | None = None
    size: Callable[[], int | None] | None = None  # overrides `output` for the size column
    note: str = ""


@dataclass
class Result:
    """The summary of one row (or why it could not be measured)."""

    workload: str
    tool: str
    samples: list[Sample] = field(default_factory=list)
    output_bytes: int | None = None
    note: str = ""
    skipped: str = ""  # non-empty: not measured, and why

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def peak_mib(self) -> float:
        return max(s.peak_kib for s in self.samples) / 1024

    @property
    def daemon_peak_mib(self) -> float | None:
        peaks = [s.daemon_peak_kib for s in self.samples if s.daemon_peak_kib is not None]
        return max(peaks) / 1024 if peaks else None


class DaemonPeak:
    """Peak RSS of long-running processes (dockerd, containerd) over one run.

    Writing 5 to /proc/PID/clear_refs resets VmHWM to the current RSS (Linux >= 4.0);
    after the run VmHWM is that process's peak during it.
    """

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids

    def reset(self) -> None:
        for pid in self.pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass

    def read_kib(self) -> int:
        """Sum of the processes' peaks (an upper bound of their joint peak)."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total


def run_once(cmd: Sequence[str] | str, *, log: Path, env: dict[str, str] | None = None,
             cwd: Path | None = None, timeout: float = 900.0,
             daemon: DaemonPeak | None = None) -> Sample:
    """Run `cmd` once, output to `log`; raise CommandFailed on failure or timeout."""
    argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
    full_env = {**os.environ, **(env or {})}
    if daemon is not None:
        daemon.reset()
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=full_env, cwd=cwd, start_new_session=True)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if timed_out.is_set() or proc.returncode != 0:
        why = f"timed out after {timeout:.0f} s" if timed_out.is_set() else f"exit {proc.returncode}"
        raise CommandFailed(f"{why}: {_short(argv)}\n{log_tail(log)}")
    return Sample(seconds, usage.ru_maxrss, daemon.read_kib() if daemon is not None else None)


def runs_for(first_seconds: float, runs: int, row_budget: float) -> int:
    """How many runs a row gets: `runs`, fewer when one run is slow (at least 3 below 15 s)."""
    if first_seconds <= 0:
        return runs
    by_budget = int(row_budget // first_seconds)
    floor = min(3, runs) if first_seconds <= 15 else 1
    return max(1, min(runs, max(floor, by_budget)))


def measure(job: Job, *, runs: int, logs: Path, row_budget: float = 45.0,
            timeout: float = 900.0, daemon: DaemonPeak | None = None) -> Result:
    """Run `job` up to `runs` times (fewer if slow, see runs_for); print a progress line."""
    result = Result(job.workload, job.tool, note=job.note)
    log = logs / f"{_slug(job.workload)}--{_slug(job.tool)}.log"
    wanted = runs
    try:
        while len(result.samples) < wanted:
            if job.prepare:
                job.prepare()
            result.samples.append(run_once(job.cmd, log=log, env=job.env, cwd=job.cwd,
                                           timeout=timeout, daemon=daemon))
            if len(result.samples) == 1:
                wanted = runs_for(result.samples[0].seconds, runs, row_budget)
            if len(result.samples) == wanted:
                result.output_bytes = job.size() if job.size else path_bytes(job.output)
            if job.cleanup:
                job.cleanup()
    except (CommandFailed, OSError, subprocess.SubprocessError) as exc:
        if job.cleanup:
            try:
                job.cleanup()
            except Exception:  # noqa: BLE001 - the first failure is the one to report
                pass
        result.samples.clear()
        result.skipped = f"failed: {str(exc).strip()[:600]}"
    print(progress_line(result), flush=True)
    return result


def skipped(workload: str, tool: str, why: str) -> Result:
    """A row that could not be measured, with the reason."""
    result = Result(workload, tool, skipped=why)
    print(progress_line(result), flush=True)
    return result


def progress_line(r: Result) -> str:
    """One line per row on stdout while the benchmark runs."""
    head = f"  {r.workload:<16} {r.tool:<46}"
    if r.skipped:
        return f"{head} not measured: {r.skipped.splitlines()[0]}"
    return (f"{head} {r.median:8.3f} s  {r.peak_mib:7.1f} MB  "
            f"({len(r.samples)} run{'s' if len(r.samples) > 1 else ''})")


def path_bytes(path: Path | None) -> int | None:
    """Apparent size of a file, or of all files under a directory."""
    if path is None or not path.exists():
        return None
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_size
    return total


def log_tail(log: Path, chars: int = 1200) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _short(argv: list[str]) -> str:
    text = " ".join(argv)
    return text if len(text) < 300 else text[:300] + " …"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")[:60]
