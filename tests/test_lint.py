"""lint: what breaks on scratch, caught at build time (real binaries from testdata)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.cli import build_ok, lamina
from support.rootfs import Member, busybox_with_accounts, debian_like, host_debian, write_rootfs

from lamina.lint import Finding, LintImage, lint, summarise
from lamina.model import ContainerConfig, Platform
from lamina.sources.rootfs import MergedFS


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


def test_no_owner_findings_for_ids_the_account_files_list(testdata_out: Path, tmp_path: Path) -> None:
    """The flood: 250 lines of `owned by 0:0` over busybox, because the rootfs's /etc/passwd was never read."""
    rootfs = busybox_with_accounts(testdata_out, tmp_path / "bb.tar.gz")
    res = lamina("build", "--tarball", str(rootfs), "--accounts", "--user", "nonroot", "--cmd", '["/bin/sh","-c","id -u"]',
                 "-o", str(tmp_path / "a.tar"))
    assert (res.returncode, res.stderr) == (0, "")
    assert lamina("lint", "--json", str(tmp_path / "a.tar")).stdout.strip() == "[]"


def _image(tmp_path: Path, members: list[Member]) -> LintImage:
    layer = write_rootfs(tmp_path / "layer.tar.gz", members)
    openers = [lambda: open(layer, "rb")]
    return LintImage(MergedFS.read("t", openers), openers, str(tmp_path))  # type: ignore[arg-type]


def test_owner_check_reads_passwd_and_group(tmp_path: Path) -> None:
    image = _image(tmp_path, [
        Member("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n# no:x:7:7\napp:x:1000:1001::/:/bin/sh\n"),
        Member("etc/group", data=b"root:x:0:\nstaff:x:50:\n"),
        Member("a", uid=1000, gid=1001),  # 1001: app's primary group, in passwd only
        Member("b", uid=0, gid=50), Member("c", uid=7, gid=0), Member("d", uid=0, gid=7),
    ])
    found = lint(image, ContainerConfig(), Platform("linux", "amd64"))
    assert [(f.id, f.path, f.note) for f in found] == [("L006", "/c", "7:0"), ("L006", "/d", "0:7")]


def test_summarise_one_line_per_file_id_and_platform() -> None:
    amd, arm = Platform("linux", "amd64"), Platform("linux", "arm64")
    many = [(amd, Finding("L007", "warning", f"/w{i}", "world-writable without the sticky bit")) for i in range(5)]
    owner = [(amd, Finding("L006", "warning", f"/o{i}", "owned by 5:5, which ...", note="5:5")) for i in range(2)]
    error = (amd, Finding("L001", "error", "/hello", "dynamically linked"))
    lines = summarise([many[0], error, *many[1:], *owner, (arm, many[0][1])])
    assert lines == [
        (amd, "L007 warning: 5 files or directories world-writable without the sticky bit, e.g. /w0, /w1, /w2, … "
              "(lamina lint --json IMAGE lists each)"),
        (amd, "L001 error: /hello: dynamically linked"),
        (amd, "L006 warning: 2 files owned by a uid or gid that /etc/passwd or /etc/group does not list, e.g. /o0 (5:5), "
              "/o1 (5:5) (lamina lint --json IMAGE lists each)"),
        (arm, "L007 warning: /w0: world-writable without the sticky bit"),  # one finding: its own line
    ]


def test_per_file_findings_print_one_line_each_and_json_keeps_all(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(6):
        (tree / f"open{i}").write_text("x")
        os.chmod(tree / f"open{i}", 0o666)
        (tree / f"suid{i}").write_text("x")
        os.chmod(tree / f"suid{i}", 0o4755)
    (tmp_path / "lamina.toml").write_text(
        f'accounts = true\noutput = "o.tar"\n[[layer]]\nentries = [{{ src = "{tree}", dst = "/t", uid = 4242 }}]\n')
    res = lamina("build", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.strip().splitlines()
    assert [line.split(":")[1] for line in lines] == [" L006 warning", " L007 warning", " L008 warning"], lines
    assert lines[0].startswith("lamina: L006 warning: 13 files owned by a uid or gid that /etc/passwd or /etc/group does not "
                               "list, e.g. /t (4242:0), /t/open0 (4242:0), /t/open1 (4242:0), …")
    assert "L007 warning: 6 files or directories world-writable without the sticky bit, e.g. /t/open0, /t/open1, /t/open2, …" in lines[1]
    found = json.loads(lamina("lint", "--json", str(tmp_path / "o.tar")).stdout)
    assert sorted({f["id"]: sum(g["id"] == f["id"] for g in found) for f in found}.items()) == [("L006", 13), ("L007", 6), ("L008", 6)]
    assert len(lamina("lint", str(tmp_path / "o.tar")).stdout.splitlines()) == 3


def test_a_debian_rootfs_build_prints_a_few_lines(tmp_path: Path) -> None:
    rootfs = debian_like(tmp_path / "debian.tar.gz", files=3000)
    res = lamina("build", "--tarball", str(rootfs), "--accounts", "--user", "nonroot", "-o", str(tmp_path / "d.tar"))
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) <= 40, lines[:50]
    assert lines == ["lamina: L008 warning: 11 setuid or setgid files: make sure the image needs them, e.g. /usr/bin/chage, "
                     "/usr/bin/chfn, /usr/bin/chsh, … (lamina lint --json IMAGE lists each)"]


def test_build_time_lint_and_lint_image_agree(testdata_out: Path, tmp_path: Path) -> None:
    """The same image, linted while it is built (``lamina lint SPEC`` captures the build's findings)
    and afterwards from the finished tarball: the same findings, every one."""
    base = tmp_path / "base.tar"
    build_ok("--tarball", str(busybox_with_accounts(testdata_out, tmp_path / "bb.tar.gz")), "-o", str(base))
    dynamic = (testdata_out / "hello-c-dynamic").read_bytes()
    odd = write_rootfs(tmp_path / "odd.tar.gz", [
        Member("opt", "dir", mode=0o777), Member("opt/data", data=b"x", uid=4242, gid=4242),
        Member("opt/suid", data=b"#!/bin/sh\n", mode=0o4755), Member("opt/suid-link", "hardlink", mode=0o4755, link="opt/suid"),
        Member("opt/bin", "dir"), Member("opt/bin/dyn", data=dynamic, mode=0o755),  # no glibc in busybox: L001
        Member("opt/bin/dyn-link", "hardlink", mode=0o755, link="opt/bin/dyn"),
        Member("etc/ld.so.conf", data=b"include /etc/ld.so.conf.d/*.conf\n"),
    ])
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "open").write_text("x")
    os.chmod(tree / "sub" / "open", 0o646)
    (tree / "setgid").write_text("x")
    os.chmod(tree / "setgid", 0o2755)
    other = tmp_path / "other.tar"  # --copy-from sources: two layers, whose extractions share the build's spool
    build_ok("--no-lint", "--add", f"{testdata_out / 'hello-c-dynamic'}:/dyn", "--add", f"{tree / 'setgid'}:/text", "-o", str(other))
    spec = tmp_path / "lamina.toml"
    spec.write_text(
        f'base = "{base}"\naccounts = true\ntmp = true\nuser = "nonroot"\ncmd = ["/opt/bin/dyn"]\n'
        f'[[layer]]\ntarball = "{odd}"\n'
        f'[[layer]]\nentries = [{{ src = "{tree}", dst = "/srv", uid = 77, gid = 0 }}, '
        f'{{ src = "{testdata_out / "hello-amd64"}", dst = "/usr/local/bin/hello" }}]\n'
        f'[[layer]]\nentries = [{{ src = "/dyn", dst = "/copied/dyn", from = "{other}" }}]\n'
        f'[[layer]]\nentries = [{{ src = "/text", dst = "/copied/text", from = "{other}" }}]\n')
    at_build = lamina("lint", "--json", str(spec))
    assert at_build.returncode == 1, at_build.stderr
    build_ok("--no-lint", str(spec), "-o", str(tmp_path / "image.tar"))
    afterwards = lamina("lint", "--json", str(tmp_path / "image.tar"))
    assert afterwards.returncode == 1, afterwards.stderr
    found = json.loads(at_build.stdout)
    assert found == json.loads(afterwards.stdout)
    assert {f["id"] for f in found} == {"L001", "L005", "L006", "L007", "L008"}
    assert {f["path"] for f in found if f["id"] == "L001"} == {"/opt/bin/dyn", "/opt/bin/dyn-link", "/copied/dyn"}
    assert {f["path"] for f in found if f["id"] == "L008"} == {"/opt/suid", "/opt/suid-link", "/srv/setgid", "/copied/text"}


@pytest.mark.slow
def test_a_real_debian_rootfs_build_prints_a_few_lines(tmp_path: Path) -> None:
    """As above with real files: this machine's Debian packages (required ones and their dependencies)."""
    rootfs = host_debian(tmp_path / "debian.tar.gz")
    if rootfs is None:
        pytest.skip("needs a Debian machine (dpkg) to make a real Debian rootfs")
    res = lamina("build", "--tarball", str(rootfs), "--accounts", "--user", "nonroot", "-o", str(tmp_path / "d.tar"))
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) <= 40, lines[:50]
    assert not [line for line in lines if "L006" in line or "L001" in line], lines
    assert json.loads(lamina("lint", "--json", str(tmp_path / "d.tar")).stdout) != []  # the setuid programs, at least


def test_build_time_lint_reads_a_tarball_once(testdata_out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lint's bytes of a rootfs tarball's executables and account files are copied as the layer
    streams by (cold and from the cache): no second pass over the layer to extract them."""
    from lamina.api import build_image
    from lamina.spec import BuildSpec, TarballLayer

    rootfs = busybox_with_accounts(testdata_out, tmp_path / "bb.tar.gz")

    def no_second_pass(*args: object, **kwargs: object) -> None:
        raise AssertionError("lint extracted files from a layer again")

    monkeypatch.setattr(MergedFS, "extract", no_second_pass)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lines: list[str] = []
    for run in ("cold", "cached"):
        spec = BuildSpec(layers=(TarballLayer(str(rootfs), "/"),), output=tmp_path / f"{run}.tar")
        build_image(spec, report=lines.append)
    assert (tmp_path / "cold.tar").read_bytes() == (tmp_path / "cached.tar").read_bytes()
    assert lines[: len(lines) // 2] == lines[len(lines) // 2:]  # the same findings, cold and cached
