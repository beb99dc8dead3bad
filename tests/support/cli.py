"""Run the lamina CLI as users do: a subprocess, so exit codes and stderr are real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def lamina(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`python -m lamina ARGS`; SOURCE_DATE_EPOCH is cleared unless ``env`` sets it."""
    full_env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    full_env.update({"PYTHONPATH": str(SRC), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "lamina", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )


def build_ok(*args: str, cwd: Path | None = None) -> str:
    """Build and return the manifest digest, failing the test with lamina's stderr otherwise."""
    res = lamina("build", *args, cwd=cwd)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]
