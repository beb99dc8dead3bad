"""Every input the fuzzers were seeded with or have found a bug with, replayed as a test.

fuzz/corpus/<target>/ is the committed seed corpus; fuzz/crashes/<target>/ holds each input
that made a target raise something other than LaminaError (or hang, or blow up memory).
Each must now end in a LaminaError or in success. Crashes in code that another engineer is
rewriting are listed in fuzz/crashes/KNOWN (``target/name  reason``) and expected to fail
(strictly: fixed ones must be taken off the list).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
sys.path.insert(0, str(FUZZ))

from targets import TARGETS, run_one  # noqa: E402


def _known() -> dict[str, str]:
    known = {}
    path = FUZZ / "crashes" / "KNOWN"
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition(" ")
            known[name] = reason.strip()
    return known


def _inputs() -> list[Any]:
    known = _known()
    out = []
    for kind in ("corpus", "crashes"):
        for target in TARGETS:
            for path in sorted((FUZZ / kind / target).glob("*")):
                key = f"{target}/{path.name}"
                marks = [pytest.mark.xfail(strict=True, reason=known[key])] if key in known else []
                out.append(pytest.param(target, path, marks=marks, id=f"{kind}-{key}"))
    return out


@pytest.mark.parametrize(("target", "path"), _inputs())
def test_replay(target: str, path: Path, tmp_path: Path) -> None:
    run_one(target, path.read_bytes(), tmp_path)  # raises on anything but LaminaError
