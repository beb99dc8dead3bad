"""Coverage-guided fuzzing of one target with atheris (libFuzzer for Python).

    python fuzz/run.py TARGET SECONDS        (make fuzz FUZZ_SECONDS=N runs every target)

Starts from the committed seed corpus fuzz/corpus/TARGET/ and adds what libFuzzer finds new
coverage with to a scratch corpus (fuzz/work/TARGET, not committed). An exception other than
LaminaError is a finding: its input is saved once per distinct (exception type, lamina frame)
as fuzz/crashes/TARGET/<sha1>, and fuzzing goes on, so one known bug does not stop a timed run
from finding the next. Hangs and memory blow-ups are libFuzzer's own crashes: they land in the
same directory (timeout-*, oom-*) and the run restarts until the time is used up.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MAX_LEN = {"tar": 65536, "image": 65536, "spec": 16384}


def signature(exc: BaseException) -> str:
    """Where the exception came from: its type and the innermost frame in lamina (else the last)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}lamina{os.sep}" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__}@{where}"


def child(target: str) -> None:
    """Runs inside the libFuzzer process: instrument lamina (and tarfile, json, tomllib), then fuzz."""
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=["lamina", "tarfile", "tomllib", "json"]):
        sys.path.insert(0, str(HERE))
        import targets  # noqa: F401  (imports lamina's readers lazily, inside the instrumented block)
        from lamina import inspect, spec  # noqa: F401
        from lamina.layers import build, tarformat  # noqa: F401
        from lamina.sources import archive, base, tarball  # noqa: F401

    crashes = HERE / "crashes" / target
    crashes.mkdir(parents=True, exist_ok=True)
    seen = {p.name for p in crashes.iterdir()}
    known: set[str] = set()
    scratch = Path(tempfile.mkdtemp(prefix=f"lamina-fuzz-{target}-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    stop = os.environ.get("LAMINA_FUZZ_STOP") == "1"

    def one(data: bytes) -> None:
        work = scratch / "w"
        try:
            work.mkdir()
            targets.run_one(target, data, work)
        except Exception as exc:
            sig = signature(exc)
            if stop:
                raise
            if sig not in known:
                known.add(sig)
                name = hashlib.sha1(data).hexdigest()
                if name not in seen:
                    (crashes / name).write_bytes(data)
                    seen.add(name)
                print(f"\n== finding {sig}: fuzz/crashes/{target}/{name}\n{''.join(traceback.format_exception(exc)[-6:])}",
                      file=sys.stderr, flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    atheris.Setup(sys.argv[:1] + sys.argv[3:], one)
    atheris.Fuzz()


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return 0
    target, seconds = sys.argv[1], int(sys.argv[2])
    corpus, work = HERE / "corpus" / target, HERE / "work" / target
    crashes = HERE / "crashes" / target
    for d in (corpus, work, crashes):
        d.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + seconds
    runs = 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    while (left := int(deadline - time.monotonic())) > 5:
        runs += 1
        for d in (corpus, work, crashes):
            d.mkdir(parents=True, exist_ok=True)
        before = set(crashes.iterdir())
        cmd = [sys.executable, __file__, "--child", target,
               f"-max_total_time={left}", f"-max_len={MAX_LEN[target]}", "-timeout=20", "-rss_limit_mb=1536",
               f"-artifact_prefix={crashes}/", "-print_final_stats=1", str(work), str(corpus)]
        code = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL).returncode
        print(f"fuzz {target}: libFuzzer run {runs} exited {code}", file=sys.stderr, flush=True)
        # A hang or blow-up found is saved as crashes/timeout-<sha1>; keep it out of the scratch
        # corpus, or the restarted run would meet it again first thing.
        for artifact in crashes.glob("*-*"):
            (work / artifact.name.split("-", 1)[1]).unlink(missing_ok=True)
        if code == 0 or set(crashes.iterdir()) == before:
            break  # done, or failed without finding anything: running again would fail again
    return 0


if __name__ == "__main__":
    sys.exit(main())
