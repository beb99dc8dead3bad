"""Hostile image archives given to ``--from``, ``lamina inspect`` and ``lamina lint``.

Every case must end in one clear error line (exit 1 or 2): no traceback, no exit 70, no
endless read, bounded memory, nothing written, and the CANARY outside the archive never
read (its token in no output). These exercise the image readers (sources/archive.py,
sources/base.py), which the lead is rewriting: the cases that fail today are marked
``xfail(strict=True)`` below with the reason, so each flips to a failure (remove the mark)
the moment the rewrite fixes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hostile.generate import IMAGE_CASES, SLOW_IMAGE_CASES, Canary, ImageCase, make_canary
from hostile.harness import assert_bounded, assert_clean_error, assert_no_leak, lamina, snapshot

COMMANDS = {
    "build": lambda image, out: ["build", "--no-cache", "--no-lint", "--from", image, "-o", str(out / "image.tar")],
    "inspect": lambda image, out: ["inspect", image],
    "inspect-json": lambda image, out: ["inspect", "--json", image],
    "lint": lambda image, out: ["lint", "--json", image],
}

# (case, command or "*") -> why it fails today; all in the readers the lead is rewriting.
KNOWN: dict[tuple[str, str], str] = {}  # (case, command or '*') -> why it still fails: none now
ONLY = {"diff-id-mismatch": ("build",)}  # the diff_id is checked when the layer is imported


def _params(cases: list[ImageCase]) -> list[Any]:
    out = []
    for case in cases:
        for command in ONLY.get(case.name, tuple(COMMANDS)):
            reason = KNOWN.get((case.name, command)) or KNOWN.get((case.name, "*"))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(case, command, marks=marks, id=f"{case.name}-{command}"))
    return out


@pytest.fixture
def canary(tmp_path: Path) -> Canary:
    return make_canary(tmp_path / "outside")


def _check(case: ImageCase, command: str, tmp_path: Path, canary: Canary) -> None:
    inputs, work = tmp_path / "in", tmp_path / "work"
    inputs.mkdir()
    (work / "out").mkdir(parents=True)
    image = case.make(inputs, canary)
    before = snapshot(inputs, canary.dir.parent)
    res = lamina(*COMMANDS[command](str(image), work / "out"), cwd=work, timeout=60)
    assert_no_leak(canary.token, res, work)
    assert snapshot(inputs, canary.dir.parent) == before, "an input or a file outside changed"
    assert_clean_error(res, case.error)
    assert "lint error(s)" not in res.stderr, f"the image was read whole and linted\n{res}"
    assert not any((work / "out").iterdir()), "an output was written"
    assert_bounded(res)


@pytest.mark.parametrize(("case", "command"), _params(IMAGE_CASES))
def test_hostile_image(case: ImageCase, command: str, tmp_path: Path, canary: Canary) -> None:
    _check(case, command, tmp_path, canary)


@pytest.mark.slow
@pytest.mark.parametrize(("case", "command"), _params(SLOW_IMAGE_CASES))
def test_hostile_image_slow(case: ImageCase, command: str, tmp_path: Path, canary: Canary) -> None:
    _check(case, command, tmp_path, canary)
