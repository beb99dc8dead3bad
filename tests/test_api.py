"""The Python API, in process: the README's example runs as written, and the API gives the
CLI's results (the CLI is wiring over it)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from support.cli import build_ok

ROOT = Path(__file__).resolve().parents[1]


def test_import_lamina_is_cheap() -> None:
    import subprocess

    code = "import sys, lamina; print(sorted(m for m in sys.modules if m.startswith('lamina')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")}).stdout
    assert out.strip() == "['lamina', 'lamina.version']"


def test_the_readme_example_runs(testdata_out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"### From Python\n.*?```python\n(.*?)```", readme, re.S)
    assert example is not None
    (tmp_path / "examples").mkdir()
    shutil.copytree(ROOT / "examples" / "hello", tmp_path / "examples" / "hello")
    (tmp_path / "testdata").mkdir()
    os.symlink(testdata_out, tmp_path / "testdata" / "out")
    (tmp_path / "demo").mkdir()
    monkeypatch.chdir(tmp_path)
    exec(compile(example[1], "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    digest = printed[0].split()[0]
    assert digest == build_ok(str(tmp_path / "examples" / "hello" / "lamina.toml"), "--no-cache")
    assert printed[1].startswith("linux/amd64 ['sha256:")


def test_open_image_closes_what_it_opened(tmp_path: Path) -> None:
    from lamina import open_image
    from lamina.errors import ImageError

    with pytest.raises(ImageError, match="no such file"):
        with open_image(str(tmp_path / "missing.tar")):
            pass
