"""--depfile: every file the build read, as a Make rule that Make itself reads and acts on."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.cli import lamina

from lamina.depfile import Inputs, _escape, inputs, make_rule
from lamina.essentials import Essentials
from lamina.sources.files import AddSpec, CopyFromSpec
from lamina.spec import BaseSpec, BuildSpec, FilesLayer, TarballLayer, read_spec


def _rule_paths(text: str) -> list[str]:
    """The prerequisites of the first rule, unescaped (as Make reads them)."""
    first = text.split("\n\n", 1)[0].replace("\\\n", " ")
    deps = first.split(": ", 1)[1]
    out, word, chars = [], "", iter(deps)
    for char in chars:
        if char == "\\":
            word += next(chars)
        elif char == " ":
            if word:
                out.append(word)
            word = ""
        else:
            word += char
    return out + ([word] if word else [])


def test_escape_as_gnu_make_reads_it() -> None:
    assert _escape("a b") == "a\\ b"
    assert _escape("a#b") == "a\\#b"
    assert _escape("a$b") == "a$$b"
    assert _escape("[id].js") == "\\[id].js"  # not a wildcard
    assert _escape("a:b%c") == "a\\:b%c"  # not a second colon
    assert _escape("a:b%c", target=True) == "a\\:b\\%c"  # and as a target, not a pattern
    with pytest.raises(Exception, match="home directory"):
        _escape("~u")  # ~u/x is another user's home to make (a '~' inside a name is fine)
    with pytest.raises(Exception, match="line break"):
        _escape("a\nb")


# Names GNU make cannot read in a rule, escaped or not: each would stop make, or add rules,
# recipes or variables to every Makefile that includes the depfile.
UNWRITABLE = ["%:;touch${IFS}PWNED;true", "a|b", "dt=2024", "a&b", "back\\slash", "lib(member)"]


@pytest.mark.parametrize("name", UNWRITABLE)
def test_a_name_make_cannot_read_is_refused_before_anything_is_written(project: Path, name: str) -> None:
    (project / "src dir" / name).write_text("x")
    res = lamina("build", "lamina.toml", cwd=project)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "which a Makefile cannot name" in res.stderr, res.stderr
    assert list((project / "out").iterdir()) == []
    assert not (project / "PWNED").exists()


def test_names_with_make_syntax_are_read_by_make_as_those_files(project: Path) -> None:
    """Wildcards, '%', ':', '$', '#' and spaces in names: make -q finds everything up to date,
    then sees each one that changes, and runs nothing but the rule's own recipe."""
    names = ["[id].js", "50%", "a:b", "st*r", "q?m", "co$t", "#hash", "sp ace", "caf\xe9", "~tilde"]
    for name in names:
        (project / "src dir" / name).write_text(name)
    (project / "src dir" / "caf\udce9").write_bytes(b"latin-1")  # not UTF-8: written as the bytes it is named by
    res = lamina("build", "lamina.toml", cwd=project)
    assert res.returncode == 0, res.stderr
    assert _make(project, "-q").returncode == 0, _make(project, "-q").stderr
    built = (project / "out" / "app.tar").stat().st_mtime
    for name in [*names, "caf\udce9"]:
        os.utime(project / "src dir" / name, (built + 10, built + 10))
        assert _make(project, "-q").returncode == 1, name  # that very file, newer: out of date
        os.utime(project / "src dir" / name, (built - 10, built - 10))
        assert _make(project, "-q").returncode == 0, name


def test_inputs_cover_every_kind_of_source(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "deep" / "er").mkdir(parents=True)
    (tree / "deep" / "er" / "f").write_text("f")
    (tree / "link").symlink_to("/etc")  # a symlink inside a tree is not followed
    (tmp_path / "t.tar").write_bytes(b"")
    (tmp_path / "base.tar").write_bytes(b"")
    (tmp_path / "layout").mkdir()
    (tmp_path / "layout" / "index.json").write_text("{}")
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "x.pem").write_text("")
    (tmp_path / "zoneinfo").mkdir()
    (tmp_path / "zoneinfo" / "UTC").write_text("")
    (tmp_path / "amd").write_text("")
    (tmp_path / "arm").write_text("")
    spec_file = tmp_path / "lamina.toml"
    spec_file.write_text("")
    (tmp_path / "lamina.lock").write_text("")
    spec = BuildSpec(
        base=BaseSpec(str(tmp_path / "base.tar")),
        layers=(
            FilesLayer((AddSpec(str(tree), "/t"),)),
            TarballLayer(str(tmp_path / "t.tar")),
            FilesLayer((CopyFromSpec(str(tmp_path / "layout"), "/x", "/x"),)),
            FilesLayer((AddSpec("placeholder", "/b", per_platform=(("linux/amd64", str(tmp_path / "amd")),
                                                                  ("linux/arm64", str(tmp_path / "arm")))),)),
        ),
        essentials=Essentials(ca_certs=(str(tmp_path / "ca"),), tzdata=str(tmp_path / "zoneinfo")),
    )
    found = inputs(spec, spec_file)
    assert found.pinned
    assert [os.path.relpath(p, tmp_path) for p in found.paths] == [
        "lamina.toml", "lamina.lock", "base.tar", "tree", "tree/deep", "tree/link", "tree/deep/er",
        "tree/deep/er/f", "t.tar", "layout", "layout/index.json", "amd", "arm", "ca", "ca/x.pem",
        "zoneinfo", "zoneinfo/UTC",
    ]
    tagged = inputs(BuildSpec(base=BaseSpec("registry.example/base:latest")))
    assert not tagged.pinned and tagged.paths == ()
    pinned = inputs(BuildSpec(base=BaseSpec("registry.example/base@sha256:" + "a" * 64)))
    assert pinned.pinned


def test_a_missing_input_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="cannot read"):
        inputs(BuildSpec(layers=(FilesLayer((AddSpec(str(tmp_path / "gone"), "/g"),)),)))


def test_rule_leaves_out_dangling_symlinks(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to("nowhere")
    (tmp_path / "f").write_text("")
    found = Inputs(tuple((str(p), os.lstat(p)) for p in (tmp_path / "dangling", tmp_path / "f")), True)
    rule = make_rule([Path("out.tar")], found).decode()
    assert _rule_paths(rule) == [str(tmp_path / "f")]
    assert rule.endswith(f"\n{tmp_path / 'f'}:\n")  # -MP: a deleted input does not break make


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "src dir" / "sub").mkdir(parents=True)
    (tmp_path / "src dir" / "sub" / "a file").write_text("a")
    (tmp_path / "src dir" / "b").write_text("b")
    (tmp_path / "unrelated").write_text("u")
    (tmp_path / "out").mkdir()
    (tmp_path / "lamina.toml").write_text(
        'output = "out/app.tar"\nmetadata_file = "out/app.json"\ndepfile = "out/app.d"\n'
        '[[layer]]\nentries = [{ src = "src dir", dst = "/app" }]\n'
    )
    (tmp_path / "Makefile").write_text(
        "LAMINA ?= lamina\nout/app.tar: lamina.toml\n\t$(LAMINA) build lamina.toml\n-include out/app.d\n"
    )
    return tmp_path


def _make(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import shlex
    import sys

    from support.cli import SRC

    command = f"env PYTHONPATH={shlex.quote(str(SRC))} {shlex.quote(sys.executable)} -m lamina"
    return subprocess.run(["make", "-C", str(project), f"LAMINA={command}", *args],
                          capture_output=True, text=True, errors="replace", timeout=300)


def test_spec_depfile_lists_what_was_read_and_make_acts_on_it(project: Path) -> None:
    res = lamina("build", "lamina.toml", cwd=project)
    assert res.returncode == 0, res.stderr
    rule = (project / "out" / "app.d").read_text()
    assert rule.startswith("out/app.tar out/app.json:")  # paths as the spec names them, relative to it
    assert _rule_paths(rule) == ["lamina.toml", "src dir", "src dir/b", "src dir/sub", "src dir/sub/a file"]
    assert read_spec(project / "lamina.toml").depfile == project / "out" / "app.d"
    assert _make(project, "-q").returncode == 0  # Make reads the spaces right: everything exists, nothing newer
    os.utime(project / "unrelated")
    assert _make(project, "-q").returncode == 0
    future = (project / "out" / "app.tar").stat().st_mtime + 10
    os.utime(project / "src dir" / "sub" / "a file", (future, future))
    assert _make(project, "-q").returncode == 1  # an input newer than the output: out of date


def test_depfile_flag_must_differ_from_the_other_outputs(project: Path) -> None:
    res = lamina("build", "--add", "unrelated:/u", "-o", "out/x.tar", "--depfile", "out/x.tar", cwd=project)
    assert res.returncode != 0 and "different paths" in res.stderr and "Traceback" not in res.stderr


def test_a_file_named_as_a_special_target_of_make_changes_nothing(tmp_path: Path) -> None:
    """A file called .IGNORE beside the spec: its -MP line ``.IGNORE:`` would have made make
    ignore every recipe's errors; written as its absolute path, it is just that file."""
    for name in (".IGNORE", ".SECONDEXPANSION", ".SILENT"):
        (tmp_path / name).write_text(name)
    res = lamina("build", *[a for n in (".IGNORE", ".SECONDEXPANSION", ".SILENT") for a in ("--add", f"{n}:/{n[1:]}")],
                 "-o", "x.tar", "--depfile", "x.d", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (tmp_path / "Makefile").write_text("fail:\n\tfalse\n\techo not reached\n-include x.d\n")
    ran = subprocess.run(["make", "-C", str(tmp_path), "fail"], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2 and "not reached" not in ran.stdout, ran.stdout + ran.stderr
    assert f"{tmp_path}/.IGNORE:" in (tmp_path / "x.d").read_text()
