"""Start-up: a command imports what it uses and nothing else (issue 12, item 5).

Each case runs the CLI in a fresh interpreter and lists ``sys.modules`` afterwards. Importing
a module only to reach a name in it (a constant, a class for an annotation) costs its whole
import chain; so the lists below name what each command must not load, with a positive
control each, so that a run that imported nothing cannot pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Every module a command loads is counted: urllib.request alone brings http.client, ssl and email.
NETWORK = {"urllib.request", "http.client", "ssl", "email", "httpx", "concurrent.futures", "logging"}
NOT_FOR_HELP = NETWORK | {"attr", "attrs", "tomllib", "sqlite3", "json", "tarfile", "hashlib", "tempfile"}
# A build from flags alone, with --no-cache: no spec file, lock, cache, base image, packages,
# registry, provenance or depfile, so none of their readers.
NOT_FOR_HELLO = NETWORK | {
    "tomllib", "sqlite3", "tarfile",
    "lamina.registry.api", "lamina.registry.auth", "lamina.registry.client", "lamina.registry.plans",
    "lamina.registry.pull", "lamina.registry.push",
    "lamina.sources.apt", "lamina.sources.deb", "lamina.sources.archive", "lamina.sources.imported",
    "lamina.cache", "lamina.depfile", "lamina.uptodate", "lamina.pins", "lamina.provenance", "lamina.sbom",
    "lamina.sign", "lamina.join", "lamina.diff", "lamina.inspect",
}


def _modules_after(args: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> set[str]:
    """The modules loaded once ``lamina ARGS`` has run (in a fresh interpreter)."""
    listing = tmp_path / "modules.json"
    code = ("import sys\nfrom lamina import cli\ncode = cli.run(sys.argv[2:])\n"  # json only after the listing
            "modules = sorted(sys.modules)\nimport json\nopen(sys.argv[1], 'w').write(json.dumps(modules))\n"
            "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", code, str(listing), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return set(json.loads(listing.read_text()))


def _top(modules: set[str]) -> set[str]:
    """Modules and the packages they are in: ``email.parser`` counts as ``email``."""
    return modules | {m.rsplit(".", i)[0] for m in modules for i in range(1, m.count(".") + 1)}


def test_help_imports_click_and_the_cli_only(tmp_path: Path) -> None:
    modules = _modules_after(["--help"], tmp_path)
    assert "click" in modules  # control: the listing is of a run that printed help
    assert {m for m in modules if m.startswith("lamina")} <= {"lamina", "lamina.version", "lamina.cli", "lamina.errors"}
    assert sorted(_top(modules) & NOT_FOR_HELP) == []


def _imported(argv: list[str], env: dict[str, str]) -> tuple[str, set[str]]:
    """What ``python -m lamina ARGV`` printed, and the modules it imported (-X importtime)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "lamina", *argv], capture_output=True, text=True,
                          env={**{k: v for k, v in os.environ.items() if k != "COLUMNS"},
                               "PYTHONPATH": str(ROOT / "src"), **env})
    assert done.returncode == 0, done.stderr
    return done.stdout, {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def test_the_kept_top_level_help_is_clicks_rendering() -> None:
    """lamina.helptext.TOP is what click prints 80 columns wide or more (regenerate it with
    ``python scripts/helptext.py`` when a command or option changes)."""
    from lamina.helptext import TOP

    for columns in ("80", "200"):
        code = "import sys\nfrom lamina.cli import run\nsys.exit(run(['--help']))\n"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": columns})
        assert done.stdout == TOP, f"COLUMNS={columns}: run python scripts/helptext.py"


def test_top_level_help_needs_no_click() -> None:
    from lamina.helptext import TOP

    out, modules = _imported(["--help"], {})  # stdout a pipe: 80 columns, as click reckons
    assert out == TOP
    assert "lamina.helptext" in modules  # control: the listing is of this run
    assert not {m for m in modules if m == "click" or m.startswith("click.")}
    narrow, modules = _imported(["-h"], {"COLUMNS": "60"})  # click wraps narrower: click renders it
    assert "click" in modules and narrow != TOP and narrow.startswith("Usage: lamina")


def test_hello_build_imports_no_reader_it_does_not_use(testdata_out: Path, tmp_path: Path) -> None:
    modules = _modules_after(["build", "-q", "--no-cache", "--add", f"{testdata_out / 'hello-amd64'}:/hello",
                              "--add", f"{testdata_out / 'cacert.pem'}:/etc/ssl/certs/", "--cmd", "/hello",
                              "-o", str(tmp_path / "hello.tar")], tmp_path)
    assert (tmp_path / "hello.tar").is_file()
    assert {"lamina.build", "lamina.layers.pipeline", "lamina.lint", "isal"} <= modules  # control: it built
    assert sorted(_top(modules) & NOT_FOR_HELLO) == []


def test_a_cached_build_opens_the_cache(testdata_out: Path, tmp_path: Path) -> None:
    """The other side of the line above: what --no-cache leaves out, the default loads."""
    modules = _modules_after(["build", "-q", "--add", f"{testdata_out / 'hello-amd64'}:/hello", "--cmd", "/hello",
                              "-o", str(tmp_path / "hello.tar")], tmp_path, {"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert {"sqlite3", "lamina.cache", "lamina.uptodate"} <= modules
    assert sorted(_top(modules) & (NETWORK | {"lamina.sources.apt", "lamina.sources.deb", "lamina.provenance"})) == []


def test_an_up_to_date_build_imports_no_builder(testdata_out: Path, tmp_path: Path) -> None:
    """Up to date means no work (lamina.uptodate): not even importing the builder and the layer writers."""
    args = ["build", "-q", "--add", f"{testdata_out / 'hello-amd64'}:/hello", "--cmd", "/hello",
            "-o", str(tmp_path / "hello.tar")]
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert "lamina.build" in _modules_after(args, tmp_path, env)  # control: the first run builds
    modules = _modules_after(args, tmp_path, env)
    assert "lamina.uptodate" in modules
    assert sorted(_top(modules) & {"lamina.build", "lamina.lint", "lamina.cache", "lamina.sinks", "isal",
                                   "sqlite3", "tarfile", "tomllib"}) == []


def test_the_api_module_imports_the_builder_when_asked() -> None:
    """``up_to_date`` needs no builder; ``lamina.api.BuildResult`` (in ``__all__``) still resolves."""
    code = ("import sys, lamina.api as api\nbefore = 'lamina.build' in sys.modules\n"
            "from lamina.api import BuildResult\nfrom lamina.build import BuildResult as real\n"
            "print(before, BuildResult is real)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")}).stdout
    assert out.split() == ["False", "True"]
