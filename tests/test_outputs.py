"""Outputs: what lamina may replace, streaming to stdout, shared OCI layouts, litter of killed
builds, and all-or-nothing when one output cannot be written."""

from __future__ import annotations

import errno
import json
import os
import pty
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import SRC, lamina
from support.oci import validate_image

import lamina.build as build_module
from lamina.errors import LaminaError, OutputError
from lamina.model import Reference
from lamina.sources.files import AddSpec
from lamina.spec import BuildSpec, FilesLayer


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "hello").write_bytes(b"hello\n")
    (tmp_path / "out").mkdir()
    return tmp_path


def _litter(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".lamina-" in p.name)


def _tags(layout: Path) -> dict[str, str]:
    index = json.loads((layout / "index.json").read_text())
    return {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in index["manifests"]
            if "org.opencontainers.image.ref.name" in m.get("annotations", {})}


# ---- what -o may replace


def test_output_onto_a_fifo_or_symlink_is_refused_and_left_alone(app: Path) -> None:
    os.mkfifo(app / "out" / "fifo")
    (app / "target").write_text("not lamina's")
    os.symlink(app / "target", app / "out" / "link")
    for name, kind in (("fifo", "a FIFO"), ("link", "a symbolic link")):
        for flag in ("-o", "--metadata-file"):
            args = ("-o", f"out/{name}") if flag == "-o" else ("-o", "out/img.tar", "--metadata-file", f"out/{name}")
            res = lamina("build", "--add", "hello:/hello", *args, cwd=app)
            assert res.returncode == 1, res.stderr
            assert res.stderr == (f"lamina: error: cannot write 'out/{name}': it is {kind}; "
                                  "an output may only replace a regular file\n")
    assert stat.S_ISFIFO(os.lstat(app / "out" / "fifo").st_mode)
    assert os.readlink(app / "out" / "link") == str(app / "target")
    assert (app / "target").read_text() == "not lamina's"
    assert sorted(p.name for p in (app / "out").iterdir()) == ["fifo", "link"]


def test_output_onto_a_character_device_is_refused(app: Path) -> None:
    """A private copy of /dev/null's node (never /dev/null itself: the old code replaced it)."""
    try:
        os.mknod(app / "out" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("cannot create a device node here")
    res = lamina("build", "--add", "hello:/hello", "-o", "out/null", cwd=app)
    assert (res.returncode, res.stderr) == (1, "lamina: error: cannot write 'out/null': it is a character device; "
                                               "an output may only replace a regular file\n")
    assert stat.S_ISCHR(os.lstat(app / "out" / "null").st_mode)


# ---- -o -


def test_dash_streams_the_tarball_to_stdout(app: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "lamina", "build", "--add", "hello:/hello", "-t", "hi"]
    res = subprocess.run([*cmd, "-o", "-", "--metadata-file", "out/meta.json"], cwd=app, env=env, capture_output=True)
    assert res.returncode == 0, res.stderr
    (app / "streamed.tar").write_bytes(res.stdout)
    assert validate_image(app / "streamed.tar")["index"]["manifests"][0]["digest"] == res.stderr.decode().strip()
    assert not (app / "-").exists()
    assert json.loads((app / "out" / "meta.json").read_text())["digest"] == res.stderr.decode().strip()
    res = subprocess.run([*cmd, "-q", "-o", "out/file.tar"], cwd=app, env=env, capture_output=True)
    assert (app / "out" / "file.tar").read_bytes() == (app / "streamed.tar").read_bytes()
    assert sorted(p.name for p in (app / "out").iterdir()) == ["file.tar", "meta.json"]


def test_dash_refuses_a_terminal(app: Path) -> None:
    main, tty = pty.openpty()
    try:
        res = subprocess.run([sys.executable, "-m", "lamina", "build", "--add", "hello:/hello", "-o", "-"], cwd=app,
                             env={**os.environ, "PYTHONPATH": str(SRC)}, stdout=tty, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(tty)
        os.close(main)
    assert (res.returncode, res.stderr) == (2, "lamina: error: -o - writes the tarball to stdout, which is a terminal; "
                                               "redirect it or give -o PATH\n")


# ---- shared OCI layouts


def test_an_existing_layout_keeps_every_other_image_and_file(app: Path) -> None:
    layout = app / "out" / "layout"
    digests = {}
    for tag, content in (("one", "1"), ("two", "2")):
        res = lamina("build", "-q", "--add", "hello:/hello", "--env", f"N={content}", "-t", f"x:{tag}", "--oci-dir", str(layout), cwd=app)
        assert res.returncode == 0, res.stderr
        digests[tag] = res.stdout.strip()
    (layout / "NOTES.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}
    res = lamina("build", "-q", "--add", "hello:/hello", "-t", "x:three", "--oci-dir", str(layout), cwd=app)
    assert res.returncode == 0, res.stderr
    digests["three"] = res.stdout.strip()
    assert _tags(layout) == digests
    assert (layout / "NOTES.txt").read_text() == "mine"
    after = {p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}
    assert before.items() <= after.items()
    assert len(validate_image(layout)["manifests"]) == 3
    # The same tag again: replaced, the others untouched.
    res = lamina("build", "-q", "--add", "hello:/hello", "--env", "N=new", "-t", "x:one", "--oci-dir", str(layout), cwd=app)
    assert res.returncode == 0, res.stderr
    assert _tags(layout) == {**digests, "one": res.stdout.strip()} and res.stdout.strip() != digests["one"]
    assert len(json.loads((layout / "index.json").read_text())["manifests"]) == 3
    validate_image(layout)
    assert _litter(layout) == [] and _litter(app / "out") == []


def test_concurrent_builds_into_one_layout_all_land(app: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    layout = app / "out" / "layout"
    for round_ in ("new", "existing"):  # a layout that does not exist yet, then one that does
        procs = [subprocess.Popen([sys.executable, "-m", "lamina", "build", "-q", "--no-cache", "--add", "hello:/hello",
                                   "--env", f"N={round_}{i}", "-t", f"x:{round_}{i}", "--oci-dir", str(layout)],
                                  cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(4)]
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
    tags = _tags(layout)
    assert sorted(tags) == sorted(f"{r}{i}" for r in ("new", "existing") for i in range(4))
    assert len(set(tags.values())) == 8
    assert len(validate_image(layout)["manifests"]) == 8
    assert _litter(layout) == [] and _litter(app / "out") == []


def test_an_untagged_build_replaces_the_untagged_image_only(app: Path) -> None:
    layout = app / "out" / "layout"
    tagged = lamina("build", "-q", "--add", "hello:/hello", "-t", "x:kept", "--oci-dir", str(layout), cwd=app)
    for env in ("A=1", "A=2"):
        last = lamina("build", "-q", "--add", "hello:/hello", "--env", env, "--oci-dir", str(layout), cwd=app)
        assert last.returncode == 0, last.stderr
    manifests = json.loads((layout / "index.json").read_text())["manifests"]
    assert [m["digest"] for m in manifests] == [tagged.stdout.strip(), last.stdout.strip()]


def test_a_replaced_tag_takes_its_attached_sbom_along(app: Path) -> None:
    layout = app / "out" / "layout"
    for tag, env in (("x:other", "A=0"), ("x:1", "A=1"), ("x:1", "A=2")):
        res = lamina("build", "-q", "--add", "hello:/hello", "--env", env, "--sbom", "spdx", "--sbom-attach",
                     "-t", tag, "--oci-dir", str(layout), cwd=app)
        assert res.returncode == 0, res.stderr
    manifests = json.loads((layout / "index.json").read_text())["manifests"]
    subjects = []
    for m in manifests:
        if "org.opencontainers.image.artifactType" in m.get("annotations", {}):
            blob = layout / "blobs" / "sha256" / m["digest"].split(":")[1]
            subjects.append(json.loads(blob.read_text())["subject"]["digest"])
    tags = _tags(layout)
    assert sorted(subjects) == sorted(tags.values()) and len(manifests) == 4  # two images, one SBOM each


def test_a_malformed_index_is_not_replaced(app: Path) -> None:
    layout = app / "out" / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text("{not json")
    res = lamina("build", "--add", "hello:/hello", "--oci-dir", str(layout), cwd=app)
    assert res.returncode == 1
    assert res.stderr.strip().endswith("its index.json is not a valid image index; refusing to replace it")
    assert (layout / "index.json").read_text() == "{not json"


# ---- litter of killed builds

_KILLED = """
import os, signal, sys
import lamina.sinks.tarball as tarball
real = tarball._write_bytes
def killed(out, name, data, epoch):
    if name == "index.json":  # mid-way through the tarball, the layout staged beside it
        out.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(out, name, data, epoch)
tarball._write_bytes = killed
from lamina.cli import run
sys.exit(run(sys.argv[1:]))
"""


def test_what_a_killed_build_left_is_cleared_by_the_next(app: Path) -> None:
    args = ["build", "--add", "hello:/hello", "-o", "out/img.tar", "--oci-dir", "out/layout"]
    res = subprocess.run([sys.executable, "-c", _KILLED, *args], cwd=app, env={**os.environ, "PYTHONPATH": str(SRC)},
                         capture_output=True, text=True)
    assert res.returncode == -9, res.stderr
    litter = _litter(app / "out")
    assert any(n.startswith(".lamina-build-") for n in litter) and any(n.startswith(".img.tar.lamina-tmp-") for n in litter)
    assert lamina(*args, cwd=app).returncode == 0
    assert sorted(p.name for p in (app / "out").iterdir()) == ["img.tar", "layout"]


def test_litter_of_a_live_build_is_left_alone(app: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (app / "out" / f".img.tar.lamina-tmp-{live.pid}-abc").write_bytes(b"in progress")
        (app / "out" / f".lamina-build-{live.pid}-abc").mkdir()
        assert lamina("build", "--add", "hello:/hello", "-o", "out/img.tar", cwd=app).returncode == 0
        assert _litter(app / "out") == [f".img.tar.lamina-tmp-{live.pid}-abc", f".lamina-build-{live.pid}-abc"]
    finally:
        live.kill()
        live.wait()


# ---- all or nothing


def _spec(app: Path, content: str, **outputs: Path) -> BuildSpec:
    (app / "f").write_text(content)
    return BuildSpec(layers=(FilesLayer((AddSpec(str(app / "f"), "/f"),)),), tags=(Reference.parse("x:1"),), **outputs)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_failing_metadata_file_replaces_no_output(app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lamina.sinks.metadata as metadata

    outputs = {"output": app / "out" / "img.tar", "oci_dir": app / "out" / "layout",
               "metadata_file": app / "out" / "meta.json"}
    build_module.build(_spec(app, "old", **outputs), epoch=0, use_cache=False)
    before = _snapshot(app / "out")

    def full(*args: object, **kw: object) -> object:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(metadata, "metadata", full)
    with pytest.raises(OutputError, match="cannot write '.*meta.json': No space left on device"):
        build_module.build(_spec(app, "new", sbom="spdx", **outputs), epoch=0, use_cache=False)
    after = _snapshot(app / "out")
    assert {k: v for k, v in after.items() if not k.startswith("layout/blobs/")} == \
        {k: v for k, v in before.items() if not k.startswith("layout/blobs/")}
    assert before.items() <= after.items()  # new blobs may be added to the layout, nothing replaced
    assert _litter(app / "out") == [] and _litter(app / "out" / "layout") == []


def test_a_failing_push_replaces_no_output(app: Path) -> None:
    outputs = {"output": app / "out" / "img.tar", "metadata_file": app / "out" / "meta.json"}
    build_module.build(_spec(app, "old", **outputs), epoch=0, use_cache=False)
    before = _snapshot(app / "out")

    def push(plan: object, digest: object = None) -> object:
        raise LaminaError("registry said no")

    with pytest.raises(LaminaError, match="registry said no"):
        build_module.build(_spec(app, "new", **outputs), epoch=0, use_cache=False, push=push)
    assert _snapshot(app / "out") == before and _litter(app / "out") == []


def test_a_failure_after_the_push_says_what_was_pushed(app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lamina.registry.plans as plans
    import lamina.sinks.metadata as metadata

    outputs_ = {"output": app / "out" / "img.tar", "metadata_file": app / "out" / "meta.json"}
    monkeypatch.setattr(plans, "publish", lambda *a: "example.com/x@sha256:" + "0" * 64)

    def full(*args: object, **kw: object) -> object:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(metadata, "metadata", full)
    with pytest.raises(OutputError, match=r"No space left on device \(the image was pushed as example.com/x@sha256:0+; "
                                          r"no local output was replaced\)"):
        build_module.build(_spec(app, "new", **outputs_), epoch=0, use_cache=False, push=lambda plan: None)
    assert list((app / "out").iterdir()) == []


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare(1) to mount a small tmpfs")
def test_a_metadata_file_on_a_full_tmpfs_replaces_no_output(app: Path) -> None:
    """The real thing: --metadata-file on a full tmpfs, the tarball and layout on a roomy disk."""
    full = app / "full"
    full.mkdir()
    args = f"build --add hello:/hello --env N=new -o out/img.tar --oci-dir out/layout --metadata-file {full}/meta.json"
    assert lamina("build", "--add", "hello:/hello", "-o", "out/img.tar", "--oci-dir", "out/layout", cwd=app).returncode == 0
    before = _snapshot(app / "out")
    script = (f"mount -t tmpfs -o size=64k tmpfs {full} || exit 99; head -c 1M /dev/zero > {full}/filler 2>/dev/null; "
              f"PYTHONPATH={SRC} {sys.executable} -m lamina {args}; echo rc=$?; ls -A {full}")
    res = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script], cwd=app, capture_output=True, text=True)
    if res.returncode == 99 or "unshare failed" in res.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    assert res.stdout.split() == ["rc=1", "filler"], res.stdout + res.stderr
    assert res.stderr == f"lamina: error: cannot write '{full}/meta.json': No space left on device\n"
    after = _snapshot(app / "out")
    assert {k: v for k, v in after.items() if not k.startswith("layout/blobs/")} == \
        {k: v for k, v in before.items() if not k.startswith("layout/blobs/")}
    assert _litter(app / "out") == []


def test_litter_cleaning_never_opens_a_fifo(app: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    os.mkfifo(app / "out" / f".img.tar.lamina-tmp-{dead.pid}-abc")  # opening it to read would block
    res = lamina("build", "--add", "hello:/hello", "-o", "out/img.tar", cwd=app, timeout=120)
    assert res.returncode == 0, res.stderr
    assert _litter(app / "out") == [f".img.tar.lamina-tmp-{dead.pid}-abc"]


def test_dash_refuses_a_closed_stdout(app: Path) -> None:
    """With fd 1 closed, the next file lamina opens would get its number: never write there."""
    res = subprocess.run([sys.executable, "-m", "lamina", "build", "--add", "hello:/hello", "-o", "-"], cwd=app,
                         env={**os.environ, "PYTHONPATH": str(SRC)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, preexec_fn=lambda: os.close(1))
    assert (res.returncode, res.stderr) == (2, "lamina: error: -o - writes the tarball to stdout, which is closed; "
                                               "redirect it or give -o PATH\n")
