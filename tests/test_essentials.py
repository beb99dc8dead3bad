"""What scratch lacks: CA bundle, accounts, /tmp, tzdata — deterministic and opt-in."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support.cli import build_ok, lamina

from lamina.errors import InputError, UsageError
from lamina.essentials import Essentials, ca_bundle, materialize
from lamina.image import ConfigChanges


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


def test_accounts_and_user(tmp_path: Path) -> None:
    adds, config = materialize(Essentials(accounts=True), ConfigChanges(user="app:1000"), tmp_path / "g")
    passwd = (tmp_path / "g" / "passwd").read_text().splitlines()
    assert passwd == ["root:x:0:0:root:/root:/sbin/nologin", "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin",
                      "app:x:1000:1000:app:/home/app:/sbin/nologin"]
    assert config.user == "app"
    assert {a.dst for a in adds} == {"/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/root", "/home/nonroot"}
    with pytest.raises(UsageError, match="give a new user as NAME:UID"):
        materialize(Essentials(accounts=True), ConfigChanges(user="app"), tmp_path / "h")
    _, config = materialize(Essentials(accounts=True), ConfigChanges(user="nonroot"), tmp_path / "i")
    assert config.user == "nonroot"


def test_cli_and_spec_give_the_same_image(certs: list[Path], tmp_path: Path) -> None:
    ca = str(certs[0])
    flags = build_ok("--ca-certs", ca, "--accounts", "--tmp", "--user", "nonroot", "-o", str(tmp_path / "f.tar"))
    (tmp_path / "lamina.toml").write_text(
        f'ca_certs = ["{ca}"]\naccounts = true\ntmp = true\nuser = "nonroot"\noutput = "s.tar"\n')
    assert build_ok(cwd=tmp_path) == flags
    info = json.loads(lamina("inspect", "--json", "--files", str(tmp_path / "f.tar")).stdout)[0]
    entries = {e["path"]: e for e in info["layers"][0]["entries"]}
    assert entries["tmp"]["mode"] == 0o1777 and entries["home/nonroot"]["uid"] == 65532
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in info["config"]["Env"]
    assert info["layers"][0]["created_by"].startswith("lamina: essentials /etc/ssl/certs/ca-certificates.crt")


def test_tzdata_and_system_bundle(tmp_path: Path) -> None:
    zoneinfo = tmp_path / "zoneinfo"
    (zoneinfo / "Europe").mkdir(parents=True)
    (zoneinfo / "Europe" / "Paris").write_bytes(b"TZif2 fake")
    res = lamina("build", "--tzdata", str(zoneinfo), "--ca-certs", "-o", str(tmp_path / "t.tar"))
    assert res.returncode == 0, res.stderr
    info = json.loads(lamina("inspect", "--json", "--files", str(tmp_path / "t.tar")).stdout)[0]
    paths = {e["path"] for e in info["layers"][0]["entries"]}
    assert {"usr/share/zoneinfo/Europe/Paris", "etc/ssl/certs/ca-certificates.crt"} <= paths
    res = lamina("build", "--tzdata", str(tmp_path / "missing"), "-o", str(tmp_path / "u.tar"))
    assert res.returncode == 1 and "is not a directory of zoneinfo files" in res.stderr
    assert not (tmp_path / "u.tar").exists()
    assert os.path.exists("/etc/ssl/certs/ca-certificates.crt")
