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


@pytest.mark.parametrize("call", [
    "build_image(None)", "build_image({})", "build_image(BuildSpec(output=5))", "build_image(BuildSpec(output='a\\0b'))",
    "build_image(BuildSpec(output='x.tar'), spec_path=5)", "build_image(BuildSpec(output='x.tar'), spec_path='missing.toml')",
    "build_image(BuildSpec(output='x.tar'), epoch='5')", "build_image(BuildSpec(output='x.tar'), epoch=-1)",
    "build_image(BuildSpec(output='x.tar'), epoch=10**20)", "build_image(BuildSpec(output='x.tar', source_date_epoch=-3))",
    "up_to_date(None)", "open_image(None).__enter__()", "open_image(5).__enter__()", "open_image(b'x').__enter__()",
])
def test_a_callers_mistake_is_a_usage_error(call: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wrong arguments to the API are lamina's own UsageError, never an AttributeError or a
    TypeError from deep inside the build."""
    import lamina
    from lamina.errors import UsageError

    monkeypatch.chdir(tmp_path)
    scope = {"build_image": lamina.build_image, "open_image": lamina.open_image, "BuildSpec": lamina.BuildSpec,
             "up_to_date": lamina.api.up_to_date}
    with pytest.raises(UsageError):
        eval(call, scope)  # noqa: S307 - the test's own literals
    assert list(tmp_path.iterdir()) == []


def test_paths_given_as_strings_are_taken(testdata_out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lamina
    from lamina.sources.files import AddSpec
    from lamina.spec import FilesLayer

    monkeypatch.chdir(tmp_path)
    spec = lamina.BuildSpec(layers=(FilesLayer((AddSpec(str(testdata_out / "hello-amd64"), "/hello"),)),),
                            output="out.tar", lint=False)  # type: ignore[arg-type]
    result = lamina.build_image(spec)
    assert (tmp_path / "out.tar").is_file() and str(result.image.digest).startswith("sha256:")
