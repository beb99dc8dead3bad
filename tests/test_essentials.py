"""What scratch lacks: CA bundle, accounts, /tmp, tzdata — deterministic and opt-in."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from support.cli import build_ok, lamina
from support.rootfs import BUSYBOX_PASSWD, Member, busybox_with_accounts, host_debian, write_rootfs

from lamina.errors import InputError, UsageError
from lamina.essentials import BUNDLE, Essentials, ca_bundle, configure, materialize
from lamina.image import ConfigChanges
from lamina.lint import LintImage
from lamina.spec import parse_platforms
from lamina.sources.rootfs import MergedFS


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("certs")
    out = []
    for name in ("a", "b", "c"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(root / f"{name}.key"), "-out", str(root / f"{name}.pem"), "-days", "1",
                        "-subj", f"/CN={name}"], check=True, capture_output=True)
        out.append(root / f"{name}.pem")
    return out


def test_bundle_is_deduplicated_sorted_and_independent_of_input_order(certs: list[Path], tmp_path: Path) -> None:
    a, b, c = (str(p) for p in certs)
    messy = tmp_path / "messy.pem"  # comments, CRLFs and a duplicate
    messy.write_bytes(b"# my certs\r\n" + Path(a).read_bytes().replace(b"\n", b"\r\n") + b"junk\n" + Path(b).read_bytes())
    one = ca_bundle((a, b, c))
    assert one == ca_bundle((c, str(messy), b, a))
    assert one.count(b"BEGIN CERTIFICATE") == 3
    assert ca_bundle((str(certs[0].parent),)) == one  # a directory: its .pem files


def test_bundle_rejects_files_without_certificates(tmp_path: Path) -> None:
    (tmp_path / "empty.pem").write_text("nothing here\n")
    with pytest.raises(InputError, match=r"--ca-certs .*empty.pem: no PEM certificate in this file"):
        ca_bundle((str(tmp_path / "empty.pem"),))
    with pytest.raises(InputError, match="no such file or directory"):
        ca_bundle((str(tmp_path / "nope.pem"),))


def _below(tmp_path: Path, members: list[Member]) -> LintImage:
    """The image below the essentials layer, in the model a build gives them: a merged filesystem of real layers."""
    layer = write_rootfs(tmp_path / f"below-{len(list(tmp_path.iterdir()))}.tar.gz", members)
    openers = [lambda: open(layer, "rb")]
    (tmp_path / "spool").mkdir(exist_ok=True)
    return LintImage(MergedFS.read("below", openers), openers, str(tmp_path / "spool"))  # type: ignore[arg-type]


def _generated(adds: list, dst: str) -> str:
    return Path(next(a.src for a in adds if a.dst == dst)).read_text()


def test_accounts_and_user(tmp_path: Path) -> None:
    scratch = _below(tmp_path, [])
    config = configure(Essentials(accounts=True), ConfigChanges(user="app:1000"))
    assert config.user == "app"
    adds = materialize(Essentials(accounts=True), ConfigChanges(user="app:1000"), scratch, tmp_path / "g")
    assert _generated(adds, "/etc/passwd").splitlines() == [
        "root:x:0:0:root:/root:/sbin/nologin", "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin",
        "app:x:1000:1000:app:/home/app:/sbin/nologin"]
    assert {a.dst for a in adds} == {"/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/root", "/home/nonroot"}
    with pytest.raises(UsageError, match="give a new user as NAME:UID"):
        materialize(Essentials(accounts=True), ConfigChanges(user="app"), scratch, tmp_path / "h")
    assert configure(Essentials(accounts=True), ConfigChanges(user="nonroot")).user == "nonroot"
    assert materialize(Essentials(accounts=True), ConfigChanges(user="nonroot:65532"), scratch, tmp_path / "i") == \
        materialize(Essentials(accounts=True), ConfigChanges(user="nonroot"), scratch, tmp_path / "i")
    with pytest.raises(UsageError, match="--user nonroot:1000: with --accounts, nonroot is uid 65532"):
        configure(Essentials(accounts=True), ConfigChanges(user="nonroot:1000"))


def test_accounts_amend_the_image_below(tmp_path: Path) -> None:
    """Every line of the image's files kept; root only if missing; lines already there verbatim not repeated."""
    below = _below(tmp_path, [
        Member("etc", "dir", mode=0o755),
        Member("etc/passwd", data=b"root:x:0:0:root:/root:/bin/bash\n# a comment\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
                                  b"app:x:1000:1000:App:/home/app:/bin/sh"),  # no final newline
        Member("etc/group", data=b"root:x:0:\nstaff:x:50:app\n"),
        Member("etc/nsswitch.conf", data=b"passwd: files systemd\n"),
        Member("home", "dir"), Member("home/nonroot", "dir", mode=0o750, uid=65532, gid=65532),
    ])
    adds = materialize(Essentials(accounts=True), ConfigChanges(user="app"), below, tmp_path / "g")
    assert _generated(adds, "/etc/group").splitlines() == ["root:x:0:", "staff:x:50:app", "nonroot:x:65532:"]
    assert {a.dst for a in adds} == {"/etc/group", "/root"}  # passwd, nsswitch.conf and /home/nonroot already right
    adds = materialize(Essentials(accounts=True), ConfigChanges(user="web:1001"), below, tmp_path / "g")
    assert _generated(adds, "/etc/passwd").splitlines() == [
        "root:x:0:0:root:/root:/bin/bash", "# a comment", "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin",
        "app:x:1000:1000:App:/home/app:/bin/sh", "web:x:1001:1001:web:/home/web:/sbin/nologin"]
    scratch = materialize(Essentials(accounts=True), ConfigChanges(), _below(tmp_path, [Member("etc/group", data=b"wheel:x:10:\n")]),
                          tmp_path / "g")
    assert _generated(scratch, "/etc/group").splitlines() == ["root:x:0:", "wheel:x:10:", "nonroot:x:65532:"]


@pytest.mark.parametrize(("passwd", "user", "clash"), [
    (b"nonroot:x:1000:1000::/home/nonroot:/bin/sh\n", None, "'nonroot:x:1000:1000::/home/nonroot:/bin/sh', which clashes with "
     "'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' that --accounts adds (the same name)"),
    (b"distroless:x:65532:65532::/home/d:/sbin/nologin\n", None, "'distroless:x:65532:65532::/home/d:/sbin/nologin', which clashes "
     "with 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' that --accounts adds (the same id)"),
    (b"app:x:1000:1000:App:/home/app:/bin/sh\n", "app:1000", "'app:x:1000:1000:App:/home/app:/bin/sh', which clashes with "
     "'app:x:1000:1000:app:/home/app:/sbin/nologin' that --accounts adds (the same name)"),
    (b"toor:x:0:0:root:/root:/bin/sh\n", None, "'toor:x:0:0:root:/root:/bin/sh', which clashes with "
     "'root:x:0:0:root:/root:/sbin/nologin' that --accounts adds (the same id)"),
])
def test_accounts_clash_names_both_lines(tmp_path: Path, passwd: bytes, user: str | None, clash: str) -> None:
    below = _below(tmp_path, [Member("etc/passwd", data=passwd)])
    with pytest.raises(InputError, match=re.escape(f"--accounts: the image's /etc/passwd has {clash}")):
        materialize(Essentials(accounts=True), ConfigChanges(user=user), below, tmp_path / "g")


def test_ca_certs_keep_the_image_bundle(certs: list[Path], tmp_path: Path) -> None:
    a, b, c = (str(p) for p in certs)
    below = _below(tmp_path, [Member("etc/ssl/certs/ca-certificates.crt", data=Path(a).read_bytes() + Path(b).read_bytes())])
    adds = materialize(Essentials(ca_certs=(c, b)), ConfigChanges(), below, tmp_path / "g")
    assert _generated(adds, BUNDLE).encode() == ca_bundle((a, b, c))
    broken = _below(tmp_path, [Member("etc/ssl/cert.pem", data=b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n")])
    with pytest.raises(InputError, match="the image's /etc/ssl/cert.pem: a certificate block is not valid base64"):
        materialize(Essentials(ca_certs=(c,)), ConfigChanges(), broken, tmp_path / "g")


def test_generated_files_are_named_by_content(tmp_path: Path) -> None:
    """Equal amended files give equal adds, so the layer is shared by platforms; different ones do not."""
    one = _below(tmp_path, [Member("etc/passwd", data=b"root:x:0:0::/:/bin/sh\n")])
    two = _below(tmp_path, [Member("etc/passwd", data=b"root:x:0:0::/:/bin/sh\n")])
    other = _below(tmp_path, [Member("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n")])
    made = [materialize(Essentials(accounts=True, tmp=True), ConfigChanges(), below, tmp_path / "g") for below in (one, two, other)]
    assert made[0] == made[1]
    assert made[0] != made[2]


def _merged(image: Path) -> dict[str, Any]:
    """The finished image's merged filesystem (one platform), path -> node."""
    from lamina.sources.archive import ImageSource, images, layer_openers

    with ImageSource.open(image) as source:
        (stored,) = list(images(source))
        fs = MergedFS.read(str(image), layer_openers(stored))
        return dict(fs.nodes)


def test_accounts_over_a_rootfs_with_its_own_passwd(testdata_out: Path, tmp_path: Path) -> None:
    """The regression: the essentials layer came first, so the rootfs's /etc/passwd hid nonroot (L004)."""
    rootfs = busybox_with_accounts(testdata_out, tmp_path / "bb.tar.gz")
    out = tmp_path / "a.tar"
    res = lamina("build", "--tarball", str(rootfs), "--accounts", "--tmp", "--user", "nonroot",
                 "--cmd", '["/bin/sh","-c","id -u"]', "-o", str(out))
    assert (res.returncode, res.stderr) == (0, "")
    info = json.loads(lamina("inspect", "--json", "--files", str(out)).stdout)[0]
    assert info["layers"][-1]["created_by"].startswith("lamina: essentials /etc/passwd")
    assert info["config"]["User"] == "nonroot"
    passwd = tmp_path / "passwd"
    with tarfile.open(out) as tar:  # the last layer's passwd: busybox's lines, then nonroot
        blob = tar.extractfile(f"blobs/sha256/{info['layers'][-1]['digest'].split(':')[1]}")
        assert blob is not None
        with tarfile.open(fileobj=blob, mode="r|gz") as layer:
            for member in layer:
                if member.name == "etc/passwd":
                    passwd.write_bytes(layer.extractfile(member).read())  # type: ignore[union-attr]
    assert passwd.read_text() == BUSYBOX_PASSWD + "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
    nodes = _merged(out)
    assert nodes["tmp"].entry.mode == 0o1777  # the rootfs's /tmp was 0755
    assert nodes["home/nonroot"].entry.uid == 65532


def test_essentials_layer_shared_by_platforms_when_the_image_below_is_the_same(testdata_out: Path, tmp_path: Path) -> None:
    from lamina.build import build
    from lamina.spec import BuildSpec, TarballLayer, merge

    same = busybox_with_accounts(testdata_out, tmp_path / "rootfs-amd64.tar.gz")
    shutil.copy(same, tmp_path / "rootfs-arm64.tar.gz")
    different = busybox_with_accounts(testdata_out, tmp_path / "rootfs-riscv64.tar.gz", [Member("etc/group", data=b"root:x:0:\n")])
    assert different.exists()
    results = {}
    for name, platforms in (("same", "linux/amd64,linux/arm64"), ("differ", "linux/amd64,linux/riscv64")):
        said: list[str] = []
        spec = merge(BuildSpec(), {"layers": [TarballLayer(str(tmp_path / "rootfs-{arch}.tar.gz"))], "accounts": True,
                                    "platforms": parse_platforms(platforms), "oci_dir": tmp_path / name, "arch_check": False})
        image = build(spec, epoch=0, progress=said.append, use_cache=False).image
        last = [m.layers[-1] for m in image.images]  # type: ignore[union-attr]
        results[name] = ({str(layer.descriptor.digest) for layer in last}, sum(s.startswith("lamina: essentials") for s in said))
    assert results["same"][0].__len__() == 1 and results["same"][1] == 1  # built once, one blob for both platforms
    assert results["differ"][0].__len__() == 2 and results["differ"][1] == 2


def test_cli_and_spec_give_the_same_image(certs: list[Path], tmp_path: Path) -> None:
    ca = str(certs[0])
    flags = build_ok("--ca-certs", ca, "--accounts", "--tmp", "--user", "nonroot", "-o", str(tmp_path / "f.tar"))
    (tmp_path / "lamina.toml").write_text(
        f'ca_certs = ["{ca}"]\naccounts = true\ntmp = true\nuser = "nonroot"\noutput = "s.tar"\n')
    assert build_ok(cwd=tmp_path) == flags
    info = json.loads(lamina("inspect", "--json", "--files", str(tmp_path / "f.tar")).stdout)[0]
    entries = {e["path"]: e for e in info["layers"][-1]["entries"]}
    assert entries["tmp"]["mode"] == 0o1777 and entries["home/nonroot"]["uid"] == 65532
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in info["config"]["Env"]
    assert info["layers"][-1]["created_by"].startswith("lamina: essentials /etc/ssl/certs/ca-certificates.crt")


def test_tzdata_and_system_bundle(tmp_path: Path) -> None:
    zoneinfo = tmp_path / "zoneinfo"
    (zoneinfo / "Europe").mkdir(parents=True)
    (zoneinfo / "Europe" / "Paris").write_bytes(b"TZif2 fake")
    res = lamina("build", "--tzdata", str(zoneinfo), "--ca-certs", "-o", str(tmp_path / "t.tar"))
    assert res.returncode == 0, res.stderr
    info = json.loads(lamina("inspect", "--json", "--files", str(tmp_path / "t.tar")).stdout)[0]
    paths = {e["path"] for e in info["layers"][-1]["entries"]}
    assert {"usr/share/zoneinfo/Europe/Paris", "etc/ssl/certs/ca-certificates.crt"} <= paths
    res = lamina("build", "--tzdata", str(tmp_path / "missing"), "-o", str(tmp_path / "u.tar"))
    assert res.returncode == 1 and "is not a directory of zoneinfo files" in res.stderr
    assert not (tmp_path / "u.tar").exists()
    assert os.path.exists("/etc/ssl/certs/ca-certificates.crt")


@pytest.mark.e2e
def test_docker_runs_nonroot_over_a_rootfs_with_its_own_passwd(dockerd: Any, testdata_out: Path, tmp_path: Path) -> None:
    rootfs = busybox_with_accounts(testdata_out, tmp_path / "bb.tar.gz")
    out = tmp_path / "a.tar"
    build_ok("--tarball", str(rootfs), "--accounts", "--tmp", "--user", "nonroot",
             "--cmd", '["/bin/sh","-c","id -u; id -un; grep -c . /etc/passwd; ls -ld /tmp | cut -c1-10"]',
             "-t", "lamina-e2e/accounts-rootfs", "-o", str(out))
    dockerd.docker("load", "-i", str(out))
    res = dockerd.docker("run", "--rm", "--pull", "never", "--network", "none", "lamina-e2e/accounts-rootfs")
    assert res.stdout.split() == ["65532", "nonroot", str(len(BUSYBOX_PASSWD.splitlines()) + 1), "drwxrwxrwt"]


@pytest.mark.e2e
@pytest.mark.slow
def test_docker_runs_nonroot_over_a_real_debian_rootfs(dockerd: Any, tmp_path: Path) -> None:
    rootfs = host_debian(tmp_path / "debian.tar.gz")
    if rootfs is None:
        pytest.skip("needs a Debian machine (dpkg) to make a real Debian rootfs")
    out = tmp_path / "d.tar"
    build_ok("--tarball", str(rootfs), "--accounts", "--tmp", "--user", "nonroot",
             "--cmd", '["/bin/sh","-c","id -u; id -un; grep ^root: /etc/passwd; grep -c . /etc/group"]',
             "-t", "lamina-e2e/accounts-debian", "-o", str(out))
    dockerd.docker("load", "-i", str(out))
    res = dockerd.docker("run", "--rm", "--pull", "never", "--network", "none", "lamina-e2e/accounts-debian")
    root = next(line for line in Path("/etc/passwd").read_text().splitlines() if line.startswith("root:"))
    groups = Path("/etc/group").read_text().splitlines()  # the rootfs's, every line kept, plus nonroot's
    assert res.stdout.split("\n")[:4] == ["65532", "nonroot", root, str(len(groups) + ("nonroot:x:65532:" not in groups))]


def test_a_clash_is_one_error_line_and_nothing_written(testdata_out: Path, tmp_path: Path) -> None:
    rootfs = busybox_with_accounts(testdata_out, tmp_path / "bb.tar.gz", [Member("etc/group", data=b"root:x:0:\nstaff:x:65532:\n")])
    out = tmp_path / "a.tar"
    res = lamina("build", "--tarball", str(rootfs), "--accounts", "-o", str(out))
    assert res.returncode == 1
    assert res.stderr == ("lamina: error: --accounts: the image's /etc/group has 'staff:x:65532:', which clashes with "
                          "'nonroot:x:65532:' that --accounts adds (the same id) — use the image's accounts (drop --accounts) "
                          "or another --user NAME:UID\n")
    assert not out.exists()
