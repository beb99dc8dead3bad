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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.cli import lamina

from lamina.quickcheck import stat_list

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


def _mine(app: Path, *args: str) -> tuple[str, Path]:
    """Settle ``args`` and return the digest and the one command-line record it wrote."""
    where = Path(os.environ["XDG_CACHE_HOME"]) / "lamina" / "uptodate"
    before = {r: r.stat().st_mtime_ns for r in where.glob("cli-*.json")}
    digest = settled(app, *args)
    mine = [r for r in where.glob("cli-*.json") if before.get(r) != r.stat().st_mtime_ns]
    assert len(mine) == 1
    return digest, mine[0]


def _forge(record: Path, edit: Callable[[dict[str, Any], dict[str, Any]], None]) -> None:
    """Rewrite a remembered command line and its head record as whoever can write the cache
    could: ``edit(command line record, head record)``."""
    quick = json.loads(record.read_text())
    head = record.parent / quick["head"]
    data = json.loads(head.read_text())
    edit(quick, data)
    head.write_text(json.dumps(data))
    record.write_text(json.dumps(quick))


@pytest.fixture
def app(small_app: Path) -> Path:
    return small_app


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


def test_a_build_never_remembered_is_not_looked_up(app: Path) -> None:
    """--no-cache (like --force, --push, -o -) is never recorded: not even the lookup is made."""
    full = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "lamina", "build", *ARGS, "--no-cache"], cwd=app,
                         env={**full, "PYTHONPATH": str(SRC)}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "| lamina.cli" in res.stderr and "lamina.quickcheck" not in res.stderr


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
    digest, record = _mine(app, *ARGS)
    victim = app / "victim"
    victim.write_text("mine")
    os.utime(victim, ns=(0, 0))

    def edit(quick: dict[str, Any], head: dict[str, Any]) -> None:
        head["outputs"][str(victim)] = stat_list(victim.stat())
        quick["touched"].append(str(victim))

    _forge(record, edit)
    assert run(app, *ARGS) == (digest, True)  # the full check answered, from the command line's own outputs
    assert victim.stat().st_mtime_ns == 0


@pytest.mark.parametrize("damage", ["garbage", "head elsewhere", "huge", "other paths"])
def test_a_damaged_record_means_the_full_check(app: Path, damage: str) -> None:
    digest, record = _mine(app, *ARGS)
    assert list(json.loads(record.read_text())["followed"]) == ["tree"]
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


# ---- what a review found (each of these answered early, or wrongly, before it was fixed)


def test_an_output_replaced_during_the_check_is_never_recorded_as_up_to_date(app: Path) -> None:
    """Another build replaces the output while the check stats the inputs: the check must not
    bind this command line's digest to the other build's file."""
    (app / "tree2").mkdir()
    (app / "tree2" / "f").write_text("other")
    args = ("-q", "--add", "tree:/tree", "-o", "out/i.tar")
    digest, _ = _mine(app, *args)
    code = (
        "import os, subprocess, sys\n"
        "from lamina import quickcheck\n"
        "real, fired = os.lstat, []\n"
        "def lstat(p, *a, **k):\n"
        "    if not fired and p == 'tree/g':\n"
        "        fired.append(1)\n"
        "        subprocess.run([sys.executable, '-m', 'lamina', 'build', '-q', '--add', 'tree2:/tree', '-o', 'out/i.tar'],\n"
        "                       check=True, capture_output=True)\n"
        "    return real(p, *a, **k)\n"
        "os.lstat = lstat\n"
        f"print(quickcheck.check({['build', *args]!r}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    res = subprocess.run([sys.executable, "-c", code], cwd=app, env={**env, "PYTHONPATH": str(SRC)},
                         capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "None"
    after, _ = run(app, *args)
    assert after == digest  # rebuilt: the output holds this command line's image again
    index = subprocess.run(["tar", "xOf", str(app / "out" / "i.tar"), "index.json"], capture_output=True, text=True).stdout
    assert digest.split(":")[1] in index


def test_an_archive_name_whose_path_depends_on_other_files_is_not_remembered(app: Path, tmp_path: Path) -> None:
    """``base.tar:v1`` is the file base.tar:v1 if there is one, else base.tar's image v1."""
    res = lamina("build", "-q", "--add", "tree:/tree", "-t", "base:v1", "-o", "base.tar", cwd=app)
    assert res.returncode == 0, res.stderr
    args = ("-q", "--from", "base.tar:base:v1", "--env", "A=1", "-o", "out/i.tar")
    digest, _ = run(app, *args)
    time.sleep(1.1)
    for _ in range(2):
        assert run(app, *args) == (digest, True)


def test_a_forged_record_without_outputs_is_refused(app: Path) -> None:
    digest, record = _mine(app, *ARGS)

    def edit(quick: dict[str, Any], head: dict[str, Any]) -> None:
        head["outputs"], head["digest"], quick["touched"] = {}, "sha256:" + "0" * 64, []

    _forge(record, edit)
    assert run(app, *ARGS) == (digest, True)


def test_a_named_input_is_never_touched_as_an_output(app: Path) -> None:
    """Only the values of -o, --metadata-file, --depfile and --oci-dir may be touched."""
    _, record = _mine(app, *ARGS)
    victim = app / "tree" / "g"
    os.utime(victim, ns=(0, 0))

    def edit(quick: dict[str, Any], head: dict[str, Any]) -> None:
        head["outputs"]["tree/g"] = stat_list(victim.stat())
        quick["touched"].append("tree")

    _forge(record, edit)
    run(app, *ARGS)
    assert victim.stat().st_mtime_ns == 0


@pytest.mark.parametrize("plant", ["fifo", "symlink"])
def test_a_planted_file_in_the_cache_is_neither_waited_on_nor_written_through(app: Path, plant: str) -> None:
    digest, record = _mine(app, *ARGS)
    paths = record.with_suffix(".paths")
    head = record.parent / json.loads(record.read_text())["head"]
    victim = app / "victim"
    victim.write_text("mine")
    paths.unlink()
    if plant == "fifo":
        os.mkfifo(paths)
    else:
        paths.symlink_to(victim)
        head.rename(head.with_suffix(".real"))
        head.symlink_to(victim)  # the full check reads it (refused) and rewrites it (a new file, not through it)
    assert run(app, *ARGS)[0] == digest  # within the subprocess timeout: nothing waited on a FIFO
    assert victim.read_text() == "mine"


def test_a_digest_that_cannot_be_written_is_one_line(app: Path) -> None:
    settled(app, *ARGS)
    full = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    with open("/dev/full", "w") as devfull:
        res = subprocess.run([sys.executable, "-m", "lamina", "build", *ARGS], cwd=app, stdout=devfull,
                             stderr=subprocess.PIPE, text=True, env={**full, "PYTHONPATH": str(SRC)})
    assert res.returncode != 0
    assert res.stderr.startswith("lamina: error:") and len(res.stderr.strip().splitlines()) == 1


def test_a_ca_file_that_became_a_directory_is_refused_as_the_cli_refuses_it(app: Path) -> None:
    (app / "ca.pem").write_text("")
    args = (*ARGS, "--ca-file", "ca.pem")
    settled(app, *args)
    (app / "ca.pem").unlink()
    (app / "ca.pem").mkdir()
    res = lamina("build", *args, cwd=app)
    assert res.returncode == 2 and "is a directory" in res.stderr


def test_a_symlink_named_after_a_tree_holding_it_is_read_through(app: Path) -> None:
    """``--add tree:/t --add tree/link:/l`` with tree/link -> ../other: other's files are
    inputs too (the walk of tree only lstat'd the link). Both checks saw no change before."""
    (app / "other").mkdir()
    (app / "other" / "o").write_text("o")
    (app / "tree" / "link").symlink_to("../other")
    args = ("-q", "--add", "tree:/t", "--add", "tree/link:/l", "-o", "out/i.tar")
    digest = settled(app, *args)
    (app / "other" / "o").write_text("O")
    assert run(app, *args)[0] != digest


def test_certificates_read_through_symlinks_are_inputs(app: Path, testdata_out: Path) -> None:
    """--ca-certs DIR reads each certificate through the symlinks such a directory holds
    (as /etc/ssl/certs does): a change to what a link points to rebuilds."""
    (app / "store").mkdir()
    (app / "certs").mkdir()
    bundle = (testdata_out / "cacert.pem").read_text()
    blocks = bundle.split("-----END CERTIFICATE-----")
    (app / "store" / "one.crt").write_text(blocks[0] + "-----END CERTIFICATE-----\n")
    (app / "certs" / "one.pem").symlink_to("../store/one.crt")
    args = ("-q", "--add", "tree:/tree", "--ca-certs", "certs", "-o", "out/i.tar")
    digest = settled(app, *args)
    (app / "store" / "one.crt").write_text(blocks[1] + "-----END CERTIFICATE-----\n")
    assert run(app, *args)[0] != digest
