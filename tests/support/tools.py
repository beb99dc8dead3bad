"""Locate external tools the tests depend on.

A missing tool is a skip on a developer's laptop but a failure in CI
(CI=true): there scripts/ensure-deps.sh should have installed everything, so
a silent skip would hide a broken setup.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

# dockerd lives in /usr/sbin, which a non-login or non-root PATH may lack.
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def in_ci() -> bool:
    """True when running under CI, where nothing may be skipped for lack of setup."""
    return os.environ.get("CI") == "true"


def unavailable(reason: str) -> NoReturn:
    """Fail under CI, skip elsewhere."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: run scripts/ensure-deps.sh as root)", pytrace=False)
    pytest.skip(reason)


def require(cmd: str) -> str:
    """Return the absolute path of `cmd`, or skip/fail the test if it is missing."""
    path = shutil.which(cmd) or shutil.which(cmd, path=os.pathsep.join(_SBIN_DIRS))
    if path is None:
        unavailable(f"required command not found: {cmd}")
    return os.path.abspath(path)


def run_ok(*args: str, timeout: float = 300) -> str:
    """Run a real tool (skopeo, umoci, ...) and return its stdout; fail the test with its stderr."""
    import subprocess

    res = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"{' '.join(args)}:\n{res.stderr}"
    return res.stdout
