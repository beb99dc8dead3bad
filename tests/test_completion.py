"""Shell completion (click's), as the README tells users to enable it."""

from __future__ import annotations

import pytest
from support.cli import lamina


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_documented_source_line_prints_a_script(shell: str) -> None:
    res = lamina(env={"_LAMINA_COMPLETE": f"{shell}_source"})
    assert res.returncode == 0 and "_LAMINA_COMPLETE" in res.stdout, res.stderr


@pytest.mark.parametrize(("words", "cword", "expected"), [
    ("lamina b", "1", "plain,build"),
    ("lamina build --dep", "2", "plain,--depfile"),
    ("lamina build --for", "2", "plain,--force"),
])
def test_commands_and_options_complete(words: str, cword: str, expected: str) -> None:
    res = lamina(env={"_LAMINA_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": cword})
    assert res.returncode == 0 and res.stdout.split() == [expected], res.stdout + res.stderr
