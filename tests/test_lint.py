"""lint: what breaks on scratch, caught at build time (real binaries from testdata)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import build_ok, lamina


def _fails(*args: str) -> str:
    res = lamina("build", *args)
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("lamina: error: lint found")
    return res.stderr


def test_dynamic_binary_on_scratch_is_an_error_naming_the_interpreter(testdata_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "dyn.tar"
    err = _fails("--add", f"{testdata_out / 'hello-c-dynamic'}:/hello", "--cmd", '["/hello"]', "-o", str(out))
    assert "L001 error: /hello: dynamically linked, needs /lib64/ld-linux-x86-64.so.2 which the image lacks" in err
    assert not out.exists()
    build_ok("--add", f"{testdata_out / 'hello-c'}:/hello", "--cmd", '["/hello"]', "-o", str(out))  # static: no finding
    res = lamina("build", "--add", f"{testdata_out / 'hello-c'}:/hello", "--cmd", '["/hello"]', "-o", str(out))
    assert res.stderr == ""


def test_tls_warning_and_ca_certs(testdata_out: Path, tmp_path: Path) -> None:
    res = lamina("build", "--add", f"{testdata_out / 'hello-amd64'}:/hello", "--cmd", '["/hello"]', "-o", str(tmp_path / "a.tar"))
    assert res.returncode == 0
    assert res.stderr.strip() == "lamina: L005 warning: /hello: a Go binary using crypto/tls, and the image has no CA bundle — add --ca-certs"
    res = lamina("build", "--ca-certs", "--add", f"{testdata_out / 'hello-amd64'}:/hello", "--cmd", '["/hello"]',
                 "-o", str(tmp_path / "b.tar"))
    assert (res.returncode, res.stderr) == (0, "")


def test_shell_form_needs_a_shell(testdata_out: Path, tmp_path: Path) -> None:
    err = _fails("--add", f"{testdata_out / 'hello-c'}:/hello", "--cmd", "/hello --loud", "-o", str(tmp_path / "x.tar"))
    assert "L003 error: /bin/sh: the command ['/hello --loud'] needs a shell" in err
    build_ok("--tarball", str(testdata_out / "busybox-rootfs.tar.gz"), "--cmd", "echo hi && ls", "-o", str(tmp_path / "y.tar"))


def test_command_program_checks(testdata_out: Path, tmp_path: Path) -> None:
    (tmp_path / "tool").write_bytes(b"#!/bin/sh\n")
    err = _fails("--add", f"{tmp_path / 'tool'}:/tool:0644", "--entrypoint", '["/tool"]', "-o", str(tmp_path / "a.tar"))
    assert "L002 error: /tool: the command's program has no execute bit" in err
    err = _fails("--add", f"{tmp_path / 'tool'}:/tool:0755", "--entrypoint", '["/missing"]', "-o", str(tmp_path / "a.tar"))
    assert "L002 error: /missing: the command's program does not exist in the image" in err


def test_user_needs_passwd(testdata_out: Path, tmp_path: Path) -> None:
    err = _fails("--add", f"{testdata_out / 'hello-c'}:/hello", "--user", "nonroot", "-o", str(tmp_path / "a.tar"))
    assert "L004 error: /etc/passwd: USER 'nonroot': the image has no /etc/passwd" in err
    build_ok("--add", f"{testdata_out / 'hello-c'}:/hello", "--user", "nonroot", "--accounts", "-o", str(tmp_path / "b.tar"))
    build_ok("--add", f"{testdata_out / 'hello-c'}:/hello", "--user", "1000", "-o", str(tmp_path / "c.tar"))


def test_ownership_world_writable_and_setuid_warnings(tmp_path: Path) -> None:
    import os

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "open").write_text("x")
    (tmp_path / "d" / "suid").write_text("x")
    os.chmod(tmp_path / "d" / "open", 0o666)
    os.chmod(tmp_path / "d" / "suid", 0o4755)
    res = lamina("build", "--accounts", "--add", f"{tmp_path / 'd'}:/d", "-o", str(tmp_path / "w.tar"))
    assert res.returncode == 0
    assert "L007 warning: /d/open: world-writable without the sticky bit" in res.stderr
    assert "L008 warning: /d/suid: setuid/setgid" in res.stderr
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "lamina.toml").write_text(
        f'accounts = true\noutput = "o.tar"\nlint_ignore = ["L007", "L008"]\n'
        f'[[layer]]\nentries = [{{ src = "{tmp_path / "d" / "open"}", dst = "/o", uid = 4242 }}]\n')
    res = lamina("build", cwd=tmp_path / "spec")
    assert res.returncode == 0
    assert res.stderr.strip() == "lamina: L006 warning: /o: owned by 4242:0, which /etc/passwd or /etc/group does not list"


def test_lint_command_on_a_finished_image(testdata_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "dyn.tar"
    build_ok("--no-lint", "--add", f"{testdata_out / 'hello-c-dynamic'}:/hello", "--cmd", '["/hello"]', "-o", str(out))
    res = lamina("lint", "--json", str(out))
    assert res.returncode == 1
    findings = json.loads(res.stdout)
    assert [(f["id"], f["severity"], f["path"]) for f in findings] == [("L001", "error", "/hello")]
    assert lamina("lint", "--ignore", "L001", str(out)).returncode == 0
    res = lamina("build", "--ignore", "X1", "--add", f"{testdata_out / 'hello-c'}:/h", "-o", str(tmp_path / "z.tar"))
    assert (res.returncode, res.stderr.strip()) == (2, "lamina: error: bad --ignore 'X1': expected a finding id like L006")


@pytest.mark.e2e
def test_docker_proves_the_dynamic_binary_finding(dockerd, testdata_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "dyn.tar"
    build_ok("--no-lint", "--add", f"{testdata_out / 'hello-c-dynamic'}:/hello", "--cmd", '["/hello"]', "-t", "lamina-e2e/dyn",
             "-o", str(out))
    dockerd.docker("load", "-i", str(out))
    res = dockerd.docker("run", "--pull", "never", "--rm", "--network", "none", "lamina-e2e/dyn", check=False)
    assert res.returncode != 0
    assert "no such file or directory" in res.stderr.lower()
    static = tmp_path / "static.tar"
    build_ok("--add", f"{testdata_out / 'hello-c'}:/hello", "--cmd", '["/hello"]', "-t", "lamina-e2e/static", "-o", str(static))
    dockerd.docker("load", "-i", str(static))
    assert dockerd.docker("run", "--pull", "never", "--rm", "--network", "none", "lamina-e2e/static").stdout == "hello, scratch!\n"


def test_lint_a_spec_file_writes_nothing_and_finds_wrong_architectures(testdata_out: Path, tmp_path: Path) -> None:
    (tmp_path / "lamina.toml").write_text(
        f'cmd = ["/hello"]\noutput = "never.tar"\n[[layer]]\nentries = [{{ src = "{testdata_out / "hello-c-dynamic"}", dst = "/hello" }}]\n')
    res = lamina("lint", "--json", str(tmp_path / "lamina.toml"))
    assert res.returncode == 1
    assert [f["id"] for f in json.loads(res.stdout)] == ["L001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lamina.toml"]
    out = tmp_path / "arm.tar"
    build_ok("--platform", "linux/arm64", "--no-arch-check", "--no-lint", "--add", f"{testdata_out / 'hello-c'}:/hello",
             "--cmd", '["/hello"]', "-o", str(out))
    res = lamina("lint", str(out))
    assert res.returncode == 1
    assert res.stdout.strip() == ("linux/arm64: L009 error: /hello: an ELF x86-64 executable, but the image platform is "
                                  "linux/arm64 — build it for linux/arm64")


def test_elf_reader_agrees_with_pyelftools(testdata_out: Path) -> None:
    """Two code paths that must agree: lamina's ELF reader and pyelftools."""
    import glob

    from elftools.elf.elffile import ELFFile

    from lamina.elf import read_elf

    paths = [str(testdata_out / n) for n in ("hello-c-dynamic", "hello-c", "hello-amd64", "hello-arm64")]
    paths += sorted(glob.glob("/usr/lib/x86_64-linux-gnu/*.so*"))[:60] + ["/usr/bin/openssl", "/usr/bin/python3"]
    compared = 0
    for path in paths:
        mine = read_elf(path, "usr/lib/x")
        if mine is None:
            continue
        with open(path, "rb") as f:
            elf = ELFFile(f)
            interp, needed, search = None, [], []
            for segment in elf.iter_segments():
                if segment["p_type"] == "PT_INTERP":
                    interp = segment.get_interp_name()
                elif segment["p_type"] == "PT_DYNAMIC":
                    for tag in segment.iter_tags():
                        if tag.entry.d_tag == "DT_NEEDED":
                            needed.append(tag.needed)
                        elif tag.entry.d_tag in ("DT_RUNPATH", "DT_RPATH"):
                            search.extend(p for p in (getattr(tag, "runpath", None) or tag.rpath).split(":") if p)
            go = elf.get_section_by_name(".go.buildinfo") is not None
        assert (mine.interpreter, mine.needed, mine.go) == (interp, tuple(needed), go), path
        assert len(mine.search) == len(search), path
        compared += 1
    assert compared >= 20
