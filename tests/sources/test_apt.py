"""Repositories and resolution, against the real tools: dpkg's version order, apt's own
install plan over a repository made by dpkg-scanpackages and apt-ftparchive."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.aptrepo import COMPONENT, SUITE, make_deb, make_repo, serve

from lamina.errors import DigestMismatch, InputError, UsageError
from lamina.sources import apt


def _index(root: Path | str, arch: str = "amd64") -> list[apt.Candidate]:
    return apt.read_index(apt.AptSource(str(root), SUITE, COMPONENT), arch, lambda _: None)


_VERSION = st.from_regex(r"\A([1-9]:)?[0-9][0-9a-z.+~]{0,6}(-[0-9a-z.+~]{1,5})?\Z", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(_VERSION, _VERSION)
def test_version_order_is_dpkgs(a: str, b: str) -> None:
    def dpkg(op: str) -> bool:
        return subprocess.run(["dpkg", "--compare-versions", a, op, b], capture_output=True).returncode == 0

    expected = 0 if dpkg("eq") else -1 if dpkg("lt") else 1
    assert apt.compare_versions(a, b) == expected


def test_relations_parse() -> None:
    parsed = apt.parse_relations("libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, foo:any [amd64] <!nocheck>", "t")
    assert parsed == [[apt.Relation("libc6", ">=", "2.34")],
                      [apt.Relation("debconf", ">=", "0.5"), apt.Relation("debconf-2.0")], [apt.Relation("foo")]]
    with pytest.raises(InputError, match="cannot parse the relation"):
        apt.parse_relations("libc6 (>= 2.34", "t")


@pytest.mark.parametrize("parts", [("u", "s"), ("ftp://x", "s", "main"), ("/r", "../x", "main"), ("/r", "s", "")])
def test_bad_sources_are_usage_errors(parts: tuple[str, ...]) -> None:
    with pytest.raises(UsageError):
        apt.parse_apt_source(*parts)


@pytest.mark.slow  # downloads real packages with apt-get (cached across sessions)
def test_resolution_matches_apts_plan(real_repo: Path, real_debs: list[Path], tmp_path: Path) -> None:
    """apt-get -s install over an empty status is the oracle for the closed set."""
    wanted = ["ca-certificates", "libc6", "busybox-static", "tzdata"]
    empty = tmp_path / "status"
    empty.touch()
    plan = subprocess.run(["apt-get", "-s", "-o", f"Dir::State::status={empty}", "install", "--no-install-recommends",
                           *wanted], capture_output=True, text=True, check=True).stdout
    expected = sorted((m[1], m[2]) for m in re.finditer(r"^Inst (\S+) \((\S+) ", plan, re.M))
    universe = apt.Universe(_index(real_repo), "amd64")
    got = apt.resolve(wanted, universe, apt.Installed())
    assert sorted((c.name, c.version) for c in got) == expected
    # What the base already has is left out, and so is what only it needed.
    base = apt.installed_from([("status", "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n\n"
                                          "Package: debconf\nVersion: 1.5.82\n")])
    got = {c.name for c in apt.resolve(wanted, universe, base)}
    assert "libc6" not in got and "debconf" not in got and "libgcc-s1" not in got and "ca-certificates" in got


def test_alternatives_versions_and_provides(tmp_path: Path) -> None:
    pool = tmp_path / "debs"
    pool.mkdir()
    debs = [
        make_deb(pool, "app", fields={"Depends": "missing-thing | virt (>= 2), lib (>= 1.5)", "Pre-Depends": "early"}),
        make_deb(pool, "provider-old", fields={"Provides": "virt (= 1)"}),
        make_deb(pool, "provider-new", fields={"Provides": "virt (= 2)"}),
        make_deb(pool, "lib", "1.0"), make_deb(pool, "lib", "2.0"), make_deb(pool, "lib", "1.9"),
        make_deb(pool, "early", arch="all"),
        make_deb(pool, "other-arch", arch="arm64"),
    ]
    repo = make_repo(debs, tmp_path / "repo")
    universe = apt.Universe(_index(repo), "amd64")
    got = {(c.name, c.version) for c in apt.resolve(["app"], universe, apt.Installed())}
    assert got == {("app", "1.0"), ("provider-new", "1.0"), ("lib", "2.0"), ("early", "1.0")}
    assert {c.name: c.version for c in apt.resolve(["lib=1.9"], universe, apt.Installed())} == {"lib": "1.9"}
    with pytest.raises(InputError, match=r"cannot resolve lib \(= 3\), needed by requested.*the sources have 2.0, 1.9, 1.0"):
        apt.resolve(["lib=3"], universe, apt.Installed())
    with pytest.raises(InputError, match="cannot resolve other-arch"):
        apt.resolve(["other-arch"], universe, apt.Installed())
    # A base that already provides virt (= 2) needs no provider.
    base = apt.installed_from([("status.d/x", "Package: x\nVersion: 1\nProvides: virt (= 2)\n")])
    assert "provider-new" not in {c.name for c in apt.resolve(["app"], universe, base)}


def test_release_hashes_are_checked(tmp_path: Path) -> None:
    deb = make_deb(tmp_path, "tiny", files={"/usr/share/tiny": "x"})
    repo = make_repo([deb], tmp_path / "repo")
    packages = repo / "dists" / SUITE / COMPONENT / "binary-amd64" / "Packages.gz"
    data = bytearray(packages.read_bytes())
    data[-20] ^= 1
    packages.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch, match="Packages.gz does not match the sha256"):
        _index(repo)
    packages.unlink()  # the next listed index (.xz) is used
    assert [c.name for c in _index(repo)] == ["tiny"]
    # Once verified, an index is kept by its sha256: a later change on the server is not read.
    xz = packages.with_suffix(".xz")
    xz.write_bytes(b"changed")
    assert [c.name for c in _index(repo)] == ["tiny"]
    (repo / "dists" / SUITE / "Release").unlink()
    with pytest.raises(InputError, match="no InRelease or Release"):
        _index(repo)


def test_fetch_verifies_and_a_changed_cached_byte_is_caught(tmp_path: Path) -> None:
    deb = make_deb(tmp_path, "tiny", files={"/usr/share/tiny": "x" * 1000})
    repo = make_repo([deb], tmp_path / "repo")
    cache = tmp_path / "cache"
    with serve(repo) as url:
        candidate = _index(url)[0]
        first = Path(apt.fetch(candidate, cache))
        assert first.read_bytes() == deb.read_bytes()
        data = bytearray(first.read_bytes())
        data[100] ^= 1
        first.write_bytes(bytes(data))
        assert Path(apt.fetch(candidate, cache)).read_bytes() == deb.read_bytes()  # refetched
        pool = repo / "pool" / COMPONENT / deb.name
        pool.unlink()
        pool.write_bytes(bytes(data))
        first.unlink()
        with pytest.raises(DigestMismatch, match="has sha256 .*, the index says"):
            apt.fetch(candidate, cache)
        assert list(cache.iterdir()) == []


def test_filenames_cannot_leave_the_repository(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="refusing path"):
        apt._join(str(tmp_path), "../../etc/passwd")
    with pytest.raises(InputError, match="refusing path"):
        apt._join("http://127.0.0.1:1/debian", "pool/../../x")


def test_lock_round_trip_and_hermetic_packages(tmp_path: Path) -> None:
    import os
    import shutil
    import tomllib

    from support.cli import lamina

    pool = tmp_path / "debs"
    pool.mkdir()
    debs = [make_deb(pool, "app", fields={"Depends": "lib (>= 1)"}, files={"/usr/share/app/a": "app"}),
            make_deb(pool, "lib", "1.5", files={"/usr/lib/lib.so": "lib"}),
            make_deb(pool, "local", files={"/usr/share/local": "local"})]
    repo = make_repo(debs[:2], tmp_path / "repo")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(debs[2], project / "local.deb")
    spec = project / "lamina.toml"
    spec.write_text(f'[apt]\nsources = ["{repo} {SUITE} {COMPONENT}"]\n\n[[layer]]\npackages = ["app"]\ndebs = ["local.deb"]\n')
    cache = tmp_path / "cache"  # a private deb cache, so this test sees its own fetches
    env = {"XDG_CACHE_HOME": str(cache)}
    unlocked = lamina("build", str(spec), "-o", str(tmp_path / "unlocked.tar"), env=env)
    assert unlocked.returncode == 0, unlocked.stderr
    refused = lamina("build", str(spec), "--hermetic", "-o", str(tmp_path / "x.tar"), env=env)
    assert refused.returncode == 1 and "local.deb: not pinned" in refused.stderr

    res = lamina("lock", str(spec), env=env)
    assert res.returncode == 0, res.stderr
    assert "(3 inputs pinned)" in res.stdout
    lock = tomllib.loads((project / "lamina.lock").read_text())
    assert set(lock["inputs"]) == {"local.deb"}
    assert [(p["name"], p["version"], p["architecture"], p["request"], p["platform"]) for p in lock["package"]] == [
        ("app", "1.0", "amd64", "app", "linux/amd64"), ("lib", "1.5", "amd64", "app", "linux/amd64")]
    import hashlib

    assert lock["package"][1]["sha256"] == "sha256:" + hashlib.sha256(debs[1].read_bytes()).hexdigest()
    assert lock["package"][1]["url"] == str(repo / "pool" / COMPONENT / debs[1].name)

    # Hermetic: no index is read any more (the repository's dists/ is gone), same image.
    shutil.rmtree(repo / "dists")
    locked = lamina("build", str(spec), "--hermetic", "-o", str(tmp_path / "locked.tar"), env=env)
    assert locked.returncode == 0, locked.stderr
    assert locked.stdout == unlocked.stdout
    # A changed byte in a cached package is caught: fetched again from the pool...
    cached = cache / "lamina" / "debs" / (lock["package"][1]["sha256"].split(":")[1] + ".deb")
    data = bytearray(cached.read_bytes())
    data[50] ^= 1
    cached.write_bytes(bytes(data))
    again = lamina("build", str(spec), "--hermetic", "-o", str(tmp_path / "again.tar"), env=env)
    assert again.returncode == 0 and again.stdout == unlocked.stdout, again.stderr
    # ... and refused when the pool's copy changed too.
    pooled = repo / "pool" / COMPONENT / debs[1].name
    os.unlink(pooled)
    pooled.write_bytes(bytes(data))
    cached.write_bytes(bytes(data))
    bad = lamina("build", str(spec), "--hermetic", "-o", str(tmp_path / "bad.tar"), env=env)
    assert bad.returncode == 1 and "lamina.lock says" in bad.stderr
    # A request the lock does not list is refused in hermetic mode.
    spec.write_text(spec.read_text().replace('packages = ["app"]', 'packages = ["app", "lib"]'))
    other = lamina("build", str(spec), "--hermetic", "-o", str(tmp_path / "other.tar"), env=env)
    assert other.returncode == 1 and "packages app lib for linux/amd64 are not in lamina.lock" in other.stderr


def test_a_later_layer_does_not_reinstall_what_an_earlier_one_installed(tmp_path: Path) -> None:
    import json
    import tarfile

    from support.cli import lamina

    debs = [make_deb(tmp_path, "app", fields={"Depends": "lib"}, files={"/usr/share/app": "a"}),
            make_deb(tmp_path, "lib", files={"/usr/share/lib": "l"})]
    repo = make_repo(debs, tmp_path / "repo")
    spec = tmp_path / "lamina.toml"
    spec.write_text(f'[apt]\nsources = ["{repo} {SUITE} {COMPONENT}"]\n\n[[layer]]\npackages = ["lib"]\n\n'
                    '[[layer]]\npackages = ["app"]\n')
    layout = tmp_path / "layout"
    res = lamina("build", str(spec), "--oci-dir", str(layout))
    assert res.returncode == 0, res.stderr
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    names = []
    for layer in manifest["layers"]:
        with tarfile.open(blobs / layer["digest"].split(":")[1]) as tf:
            names.append([n for n in tf.getnames() if n.startswith("var/lib/dpkg/status.d/")])
    assert names == [["var/lib/dpkg/status.d/lib"], ["var/lib/dpkg/status.d/app"]]


def test_release_signatures_with_a_keyring(tmp_path: Path) -> None:
    import os
    import shutil

    from support.tools import require

    gpg = require("gpg")
    require("gpgv")
    deb = make_deb(tmp_path, "tiny", files={"/usr/share/tiny": "x"})
    repo = make_repo([deb], tmp_path / "repo")
    dist = repo / "dists" / SUITE

    def keyring(name: str) -> Path:
        home = tmp_path / f"gnupg-{name}"
        home.mkdir(mode=0o700)
        env = {**os.environ, "GNUPGHOME": str(home)}
        subprocess.run([gpg, "--batch", "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.org>",
                        "default", "default", "never"], env=env, check=True, capture_output=True)
        exported = subprocess.run([gpg, "--export"], env=env, check=True, capture_output=True).stdout
        (tmp_path / f"{name}.gpg").write_bytes(exported)
        return home

    signer, stranger = keyring("signer"), keyring("stranger")
    subprocess.run([gpg, "--batch", "--yes", "--clearsign", "--output", str(dist / "InRelease"), str(dist / "Release")],
                   env={**os.environ, "GNUPGHOME": str(signer)}, check=True, capture_output=True)
    notes: list[str] = []
    good = apt.AptSource(str(repo), SUITE, COMPONENT, keyring=str(tmp_path / "signer.gpg"))
    assert [c.name for c in apt.read_index(good, "amd64", notes.append)] == ["tiny"]
    assert notes == []  # checked: nothing to warn about
    unsigned = apt.AptSource(str(repo), SUITE, COMPONENT)
    apt.read_index(unsigned, "amd64", notes.append)
    assert len(notes) == 1 and "signature is not checked" in notes[0]
    wrong = apt.AptSource(str(repo), SUITE, COMPONENT, keyring=str(tmp_path / "stranger.gpg"))
    with pytest.raises(InputError, match="the Release signature does not verify"):
        apt.read_index(wrong, "amd64", notes.append)
    signed = (dist / "InRelease").read_text()
    (dist / "InRelease").write_text(signed.replace("Suite: stable", "Suite: stabl3"))
    with pytest.raises(InputError, match="the Release signature does not verify"):
        apt.read_index(good, "amd64", notes.append)
    # Release + detached Release.gpg, as older repositories serve them.
    (dist / "InRelease").unlink()
    with pytest.raises(InputError, match="neither InRelease nor Release.gpg"):
        apt.read_index(good, "amd64", notes.append)
    subprocess.run([gpg, "--batch", "--yes", "--detach-sign", "--output", str(dist / "Release.gpg"), str(dist / "Release")],
                   env={**os.environ, "GNUPGHOME": str(signer)}, check=True, capture_output=True)
    assert [c.name for c in apt.read_index(good, "amd64", notes.append)] == ["tiny"]
    shutil.rmtree(signer, ignore_errors=True)
    shutil.rmtree(stranger, ignore_errors=True)
