"""Hostile lamina.toml files: huge, deeply nested, wrong types.

A bad spec is one ``lamina: error:`` line naming the file and the key, exit 2; a huge but
valid one builds in bounded time and memory. Never a traceback, never exit 70.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hostile.generate import SPEC_CASES, SpecCase
from hostile.harness import assert_bounded, assert_clean_error, lamina


KNOWN: dict[str, str] = {}  # case name -> why it still fails (none: spec.py checks key depth first)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(strict=True, reason=KNOWN[c.name])]
                                               if c.name in KNOWN else []) for c in SPEC_CASES])
@pytest.mark.parametrize("command", ["build", "lint"])
def test_hostile_spec(case: SpecCase, command: str, tmp_path: Path) -> None:
    spec = tmp_path / "lamina.toml"
    spec.write_bytes(case.text())
    args = ["build", "--no-cache", "--no-lint", str(spec), "-o", str(tmp_path / "out.tar")] if command == "build" \
        else ["lint", str(spec)]
    res = lamina(*args, cwd=tmp_path, timeout=120)
    if case.key is None:
        assert res.code in (0, 1) and "error" not in res.stderr.replace("lint error(s)", ""), res
        if command == "build":
            assert (tmp_path / "out.tar").is_file(), res
    else:
        assert_clean_error(res, case.key)
        assert res.code == 2, res
        assert str(spec) in res.stderr, res
        assert not (tmp_path / "out.tar").exists()
    assert_bounded(res)
    assert res.seconds < 60, res
