"""A ``lamina build`` command line found up to date before the CLI loads (lamina.quickcheck),
and every change that must send it back to the full check (lamina.uptodate) and a rebuild.

Each run is a real ``python -X importtime -m lamina build ...``: whether click was imported
says which path answered. Inputs are left older than the racy-clean second before the
command line is remembered (a younger stat is never trusted), as Make's rebuilds find them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ARGS = ("-q", "--add", "tree:/tree", "--env", "A=1", "-o", "out/i.tar", "--metadata-file", "out/m.json",
        "--depfile", "out/i.d")


def run(app: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, bool]:
    """(the digest printed, whether the CLI was loaded to print it)."""
    full = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    full.update({"PYTHONPATH": str(SRC), **(env or {})})
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "lamina", "build", *args], cwd=app, env=full,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "lamina.quickcheck" in imported  # control: the listing is of this run, which asked first
    return res.stdout.strip(), "click" in imported


def settled(app: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Build, let the racy-clean second pass, and run again: the full check finds it up to
    date and remembers the command line; the next run is answered before the CLI loads."""
    digest, _ = run(app, *args, env=env)
    time.sleep(1.1)
    assert run(app, *args, env=env)[0] == digest  # the full check (but with no input at all, none was racy)
    assert run(app, *args, env=env) == (digest, False)
    return digest


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "f").write_text("f")
    (tmp_path / "tree" / "g").write_text("g")
    (tmp_path / "out").mkdir()
    return tmp_path


def test_an_unchanged_command_line_is_answered_before_the_cli_loads(app: Path) -> None:
    digest = settled(app, *ARGS)
    tar = app / "out" / "i.tar"
    inode, data, mtime = tar.stat().st_ino, tar.read_bytes(), tar.stat().st_mtime_ns
    time.sleep(0.02)
    assert run(app, *ARGS) == (digest, False)
    assert (tar.stat().st_ino, tar.read_bytes()) == (inode, data)  # not a byte rewritten
    assert tar.stat().st_mtime_ns > mtime and (app / "out" / "i.d").stat().st_mtime_ns > mtime  # refreshed, for Make
    assert run(app, *ARGS) == (digest, False)  # what it refreshed, it recorded


@pytest.mark.parametrize("change", ["content", "new file", "removed file", "mode", "argument", "environment",
                                    "output", "output removed", "lamina"])
def test_any_change_goes_back_to_the_full_check(app: Path, change: str) -> None:
    digest = settled(app, *ARGS)
    args, env = ARGS, None
    f = app / "tree" / "sub" / "f"
    if change == "content":  # same size, mtime put back: only the ctime tells
        st = f.stat()
        f.write_text("F")
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "new file":
        (app / "tree" / "sub" / "h").write_text("")
    elif change == "removed file":
        f.unlink()
    elif change == "mode":
        os.chmod(app / "tree" / "g", 0o600)
    elif change == "argument":
        args = (*ARGS, "--env", "B=2")
    elif change == "environment":
        env = {"SOURCE_DATE_EPOCH": "86400"}
    elif change == "output":
        with open(app / "out" / "i.tar", "r+b") as out:
            out.write(b"x")
    elif change == "output removed":
        (app / "out" / "m.json").unlink()
    else:  # lamina's own code changed (an upgrade): settled again from a copy of the package
        copy = app / "src"
        subprocess.run(["cp", "-r", str(SRC), str(copy)], check=True)
        env = {"PYTHONPATH": str(copy)}
    after, loaded = run(app, *args, env=env)
    assert loaded  # the full check answered
    if change in ("output", "output removed", "lamina"):
        assert after == digest
        assert (app / "out" / "m.json").is_file()
    else:
        assert after != digest


def test_a_lock_beside_the_spec_goes_back_to_the_full_check(app: Path) -> None:
    (app / "lamina.toml").write_text('[[layer]]\nentries = [{ src = "tree", dst = "/tree" }]\n')
    settled(app, "-q", "lamina.toml", "-o", "out/s.tar")  # outputs the command line names (see below)
    (app / "lamina.lock").write_text("")
    assert run(app, "-q", "lamina.toml", "-o", "out/s.tar")[1]


def test_outputs_a_spec_file_names_are_checked_by_the_full_check(app: Path) -> None:
    (app / "lamina.toml").write_text('output = "out/s.tar"\n[[layer]]\nentries = [{ src = "tree", dst = "/tree" }]\n')
    digest, _ = run(app, "-q", "lamina.toml")
    time.sleep(1.1)
    for _ in range(2):
        assert run(app, "-q", "lamina.toml") == (digest, True)


def test_a_spec_file_appearing_in_the_directory_goes_back_to_the_full_check(app: Path) -> None:
    """With neither a spec file nor layers on the command line, lamina reads ./lamina.toml if
    there is one: its appearing changes the build."""
    digest = settled(app, "-q", "-o", "out/e.tar")
    (app / "lamina.toml").write_text('[[layer]]\nentries = [{ src = "tree", dst = "/tree" }]\n')
    after, loaded = run(app, "-q", "-o", "out/e.tar")
    assert loaded and after != digest


def test_force_is_never_answered_early(app: Path) -> None:
    digest = settled(app, *ARGS)
    tar = app / "out" / "i.tar"
    inode = tar.stat().st_ino
    assert run(app, *ARGS, "--force") == (digest, True)
    assert tar.stat().st_ino != inode  # rebuilt
    assert run(app, *ARGS, "--force")[1]


def test_a_build_reading_the_machines_ca_bundle_is_not_remembered(app: Path) -> None:
    """Which bundle --ca-certs takes depends on what the machine has: the full check decides."""
    args = (*ARGS, "--ca-certs")
    digest, _ = run(app, *args)
    time.sleep(1.1)
    for _ in range(2):
        assert run(app, *args) == (digest, True)


def test_a_record_never_touches_a_file_the_command_line_does_not_name(app: Path) -> None:
    """Whoever can write the cache could name any file as an output, with its current stat:
    the early check refreshes only outputs the command line names."""
    from lamina.quickcheck import stat_list

    where = Path(os.environ["XDG_CACHE_HOME"]) / "lamina" / "uptodate"
    before = {r: r.stat().st_mtime_ns for r in where.glob("cli-*.json")}
    digest = settled(app, *ARGS)
    record = next(r for r in where.glob("cli-*.json") if before.get(r) != r.stat().st_mtime_ns)
    victim = app / "victim"
    victim.write_text("mine")
    os.utime(victim, ns=(0, 0))
    quick = json.loads(record.read_text())
    head = where / quick["head"]
    data = json.loads(head.read_text())
    data["outputs"][str(victim)] = stat_list(victim.stat())
    head.write_text(json.dumps(data))
    quick["touched"].append(str(victim))
    record.write_text(json.dumps(quick))
    assert run(app, *ARGS) == (digest, True)  # the full check answered, from the command line's own outputs
    assert victim.stat().st_mtime_ns == 0


@pytest.mark.parametrize("damage", ["garbage", "head elsewhere", "huge", "other paths"])
def test_a_damaged_record_means_the_full_check(app: Path, damage: str) -> None:
    where = Path(os.environ["XDG_CACHE_HOME"]) / "lamina" / "uptodate"
    before = {r: r.stat().st_mtime_ns for r in where.glob("cli-*.json")}
    digest = settled(app, *ARGS)
    mine = [r for r in where.glob("cli-*.json") if before.get(r) != r.stat().st_mtime_ns]
    assert len(mine) == 1 and list(json.loads(mine[0].read_text())["followed"]) == ["tree"]
    for record in mine:
        if damage == "garbage":
            record.write_bytes(b"\x00{not json")
        elif damage == "head elsewhere":
            data = json.loads(record.read_text())
            data["head"] = "../../../etc/passwd"
            record.write_text(json.dumps(data))
        elif damage == "huge":
            record.write_bytes(b" " * (2 << 20))
        else:  # a list of paths that is not the one this record was written with
            paths = record.with_suffix(".paths")
            paths.write_bytes(b"0123456789abcdef" + paths.read_bytes()[16:])
    assert run(app, *ARGS) == (digest, True)
    assert run(app, *ARGS) == (digest, False)  # the full check remembered it again
