"""The CLI end to end in a subprocess: outputs, spec files, errors, reproducibility."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from support.cli import SRC, lamina
from support.oci import validate_image

def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "hello").write_bytes(b"\x7fELF fake binary")
    os.chmod(tmp_path / "hello", 0o755)
    (tmp_path / "cacert.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "out").mkdir()
    return tmp_path


def test_build_prints_digest_and_writes_every_output(app: Path) -> None:
    res = lamina(
        "build", "--add", "hello:/hello", "--add", "cacert.pem:/etc/ssl/certs/", "--cmd", '["/hello"]',
        "--env", "A=1", "--label", "org.opencontainers.image.title=hello", "--expose", "8080",
        "--annotation", "org.opencontainers.image.source=testdata", "--user", "65532", "--workdir", "/",
        "--stop-signal", "SIGINT", "-t", "hello", "-t", "example.com/hello:v1",
        "-o", "out/hello.tar", "--oci-dir", "out/layout", "--metadata-file", "out/meta.json", cwd=app,
    )
    assert res.returncode == 0, res.stderr
    digest = res.stdout.strip().splitlines()[-1]
    tarball = validate_image(app / "out" / "hello.tar")
    layout = validate_image(app / "out" / "layout")
    assert tarball == layout
    [manifest], [config] = tarball["manifests"], tarball["configs"]
    assert [m["digest"] for m in tarball["index"]["manifests"]] == [digest, digest]
    names = [m["annotations"] for m in tarball["index"]["manifests"]]
    assert names == [
        {"io.containerd.image.name": "docker.io/library/hello:latest", "org.opencontainers.image.ref.name": "latest"},
        {"io.containerd.image.name": "example.com/hello:v1", "org.opencontainers.image.ref.name": "v1"},
    ]
    assert config["config"]["Cmd"] == ["/hello"]
    assert "A=1" in config["config"]["Env"]
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert (config["config"]["User"], config["config"]["StopSignal"]) == ("65532", "SIGINT")
    assert config["created"] == "1970-01-01T00:00:00Z"
    assert manifest["annotations"] == {"org.opencontainers.image.source": "testdata"}
    assert all(l["annotations"]["dev.lamina.layer.compressor"].startswith("isal-") for l in manifest["layers"])
    meta = json.loads((app / "out" / "meta.json").read_text())
    [record] = meta["platforms"]  # one shape for one platform or several (docs/metadata.schema.json)
    assert meta["digest"] == record["manifest_digest"] == digest
    assert record["config_digest"] == manifest["config"]["digest"]
    assert [l["diff_id"] for l in record["layers"]] == config["rootfs"]["diff_ids"]
    with tarfile.open(app / "out" / "hello.tar") as tf:
        docker = json.load(tf.extractfile("manifest.json"))
        assert docker[0]["RepoTags"] == ["hello:latest", "example.com/hello:v1"]
        layer = tarfile.open(fileobj=tf.extractfile(docker[0]["Layers"][1]), mode="r|gz")
        assert [m.name for m in layer] == ["etc", "etc/ssl", "etc/ssl/certs", "etc/ssl/certs/cacert.pem"]
    assert _files(app / "out") == ["hello.tar", "layout", "meta.json"]  # no temp files left


def test_quiet_prints_only_the_digest(app: Path) -> None:
    res = lamina("build", "-q", "--add", "hello:/hello", "-o", "out/x.tar", cwd=app)
    assert res.returncode == 0
    assert res.stderr == ""
    assert res.stdout.startswith("sha256:") and len(res.stdout.split()) == 1


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_other_compressions(app: Path, compression: str) -> None:
    res = lamina("build", "--add", "hello:/hello", "--compression", compression, "-o", "out/x.tar", cwd=app)
    assert res.returncode == 0, res.stderr
    [manifest] = validate_image(app / "out" / "x.tar")["manifests"]
    expected = {"zstd": "application/vnd.oci.image.layer.v1.tar+zstd", "none": "application/vnd.oci.image.layer.v1.tar"}
    assert manifest["layers"][0]["mediaType"] == expected[compression]


def test_spec_file_and_flags_override(app: Path) -> None:
    (app / "lamina.toml").write_text(
        """
platform = "linux/arm64"
cmd = ["/hello", "-v"]
env = { A = "file", B = "file" }
tags = ["from-file"]
output = "out/spec.tar"
source_date_epoch = 1700000000

[[layer]]
entries = [
  { src = "hello", dst = "/hello", mode = "0700" },
  { src = "cacert.pem", dst = "/etc/ssl/certs/", uid = 7, gid = 8 },
]
"""
    )
    # Default spec: ./lamina.toml when no input flags are given.
    res = lamina("build", "--env", "A=flag", "--platform", "linux/arm/v7", cwd=app)
    assert res.returncode == 0, res.stderr
    result = validate_image(app / "out" / "spec.tar")
    config = result["configs"][0]
    assert (config["architecture"], config["variant"]) == ("arm", "v7")
    assert config["config"]["Cmd"] == ["/hello", "-v"]
    assert {"A=flag", "B=file"} <= set(config["config"]["Env"])
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert len(config["rootfs"]["diff_ids"]) == 1  # one [[layer]] with two entries
    with tarfile.open(app / "out" / "spec.tar") as tf:
        layer_name = json.load(tf.extractfile("manifest.json"))[0]["Layers"][0]
        members = {m.name: m for m in tarfile.open(fileobj=tf.extractfile(layer_name), mode="r|gz")}
    assert members["hello"].mode == 0o700
    assert (members["etc/ssl/certs/cacert.pem"].uid, members["etc/ssl/certs/cacert.pem"].gid) == (7, 8)
    assert members["hello"].mtime == 1700000000


def test_source_date_epoch_from_environment(app: Path) -> None:
    res = lamina("build", "--add", "hello:/hello", "-o", "out/x.tar", cwd=app, env={"SOURCE_DATE_EPOCH": "86400"})
    assert res.returncode == 0, res.stderr
    assert validate_image(app / "out" / "x.tar")["configs"][0]["created"] == "1970-01-02T00:00:00Z"


# ---- errors: one line, the right exit status, nothing left behind


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--add", "nope:/x"], 1, "lamina: error: add nope:/x: cannot read 'nope': No such file or directory"),
        (["--add", "hello:/hello:0999"], 2, "lamina: error: bad mode '0999': expected octal like 0755"),
        (["--add", "hello"], 2, "lamina: error: bad --add 'hello': expected SRC:DST[:MODE]"),
        (["--add", "hello:/h", "--platform", "linux/z80"], 2, "lamina: error: unknown platform 'linux/z80'"),
        (["--add", "hello:/h", "--env", "NOVALUE"], 2, "lamina: error: bad --env 'NOVALUE': expected KEY=VALUE"),
        (["--add", "hello:/h", "--cmd", "[1,"], 2, "lamina: error: bad --cmd '[1,': not a JSON array"),
        (["--add", "hello:/h", "--compression", "lz4"], 2, "lamina: error: bad compression 'lz4'"),
        (["--add", "hello:/h", "--expose", "99999"], 2, "lamina: error: bad --expose '99999'"),
        (["--add", "hello:/h", "-t", "Bad Tag"], 2, "lamina: error: bad image reference 'Bad Tag'"),
        (["--add", "hello:/../../h"], 1, "lamina: error: add hello:/../../h: destination '/../../h' would land outside"),
        (["--tarball", "hello"], 1, "lamina: error: tarball 'hello': not a readable tar archive"),
        (["--bogus"], 2, "lamina: error: No such option '--bogus'"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(app: Path, args: list[str], code: int, message: str) -> None:
    res = lamina("build", *args, "-o", "out/img.tar", "--oci-dir", "out/layout", cwd=app)
    assert res.returncode == code, res.stderr
    assert res.stderr.startswith(message), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr
    assert _files(app / "out") == []


def test_failure_mid_build_leaves_no_partial_output(app: Path) -> None:
    import gzip

    (app / "bad.tar.gz").write_bytes(gzip.compress(b"\0" * 100 + b"x" * 5000)[:50])
    res = lamina("build", "--tarball", "bad.tar.gz", "--add", "hello:/hello", "-o", "out/img.tar", cwd=app)
    assert res.returncode == 1
    assert res.stderr.startswith("lamina: error: tarball 'bad.tar.gz'")
    assert _files(app / "out") == []
    assert not [p for p in app.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cmd = 3", "lamina.toml: cmd: expected str or list, got int"),
        ("[[layer]]\nentries = [{ src = 'hello' }]", "lamina.toml: layer[0].entries[0]: missing 'dst'"),
        ("[[layer]]\nentries = [{ src = 'hello', dst = '/h', mode = '9' }]", "lamina.toml: layer[0].entries[0].mode: bad mode"),
        ("colour = 'blue'", "lamina.toml: colour: unknown key"),
        ("platform = 'linux/z80'", "lamina.toml: platform: unknown platform"),
        ("this is not toml", "lamina.toml: not valid TOML"),
    ],
)
def test_malformed_spec_names_file_and_key(app: Path, spec: str, message: str) -> None:
    (app / "lamina.toml").write_text("output = 'out/x.tar'\n" + spec)
    res = lamina("build", "lamina.toml", cwd=app)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"lamina: error: {app / message}" if False else "lamina: error: "), res.stderr
    assert message in res.stderr
    assert _files(app / "out") == []


@pytest.mark.parametrize("output", ["missing-dir/img.tar", "hello/img.tar"])
def test_unwritable_output(app: Path, output: str) -> None:
    res = lamina("build", "--add", "hello:/hello", "-o", output, cwd=app)
    assert res.returncode == 1
    assert res.stderr.startswith(f"lamina: error: cannot write '{output}'"), res.stderr


def test_no_output_is_a_usage_error(app: Path) -> None:
    res = lamina("build", "--add", "hello:/hello", cwd=app)
    assert res.returncode == 2
    assert "nothing to write" in res.stderr


def test_unreadable_source(app: Path) -> None:
    """A file lamina may not read is one clear error and no output.

    Root reads everything, so as root lamina runs without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH: still uid 0, so it can import itself from a checkout in a 0700
    home (/root/...), but the kernel now refuses it a mode-000 file.
    """
    secret = app / "secret"
    secret.write_text("x")
    os.chmod(secret, 0)
    cmd = [sys.executable, "-m", "lamina", "build", "--no-cache", "--add", "secret:/s", "-o", "out/img.tar"]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all", "--", *cmd]
    res = subprocess.run(cmd, cwd=app, env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True, text=True)
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip() == "lamina: error: add secret:/s: cannot read 'secret': Permission denied"
    assert _files(app / "out") == []


def test_inspect_errors(app: Path) -> None:
    res = lamina("inspect", "nope.tar", cwd=app)
    assert (res.returncode, res.stderr.strip()) == (1, "lamina: error: 'nope.tar': no such file or directory")
    res = lamina("inspect", "hello", cwd=app)
    assert res.returncode == 1 and res.stderr.startswith("lamina: error: 'hello': not an image")


# ---- reproducibility


def _make_tree(root: Path, reverse: bool, mtime: int) -> None:
    names = ["b", "a", "c/d", "c/e", "z"]
    for name in reversed(names) if reverse else names:
        path = root / "tree" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {name}")
        os.chmod(path, 0o755 if name == "a" else 0o644)  # a is the image's command
    os.link(root / "tree" / "a", root / "tree" / "hard")
    os.symlink("c/d", root / "tree" / "sym")
    for path in (root / "tree").rglob("*"):
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    for path in [root / "tree", *(p for p in (root / "tree").rglob("*") if p.is_dir() and not p.is_symlink())]:
        os.chmod(path, 0o755)


def test_same_inputs_give_identical_bytes(tmp_path: Path) -> None:
    outputs = []
    for i, (tz, seed, reverse) in enumerate([("UTC", "1", False), ("Asia/Tokyo", "4242", True)]):
        root = tmp_path / f"run{i}" / ("deeper" * i)
        root.mkdir(parents=True)
        _make_tree(root, reverse, mtime=1_000_000 * (i + 1))
        cwd, rel = root, "tree"  # same spelling of the input, different absolute location
        out = tmp_path / f"img{i}.tar"
        res = lamina(
            "build", "--add", f"{rel}:/app", "--cmd", "/app/a", "-t", "repro", "-o", str(out), cwd=cwd,
            env={"TZ": tz, "PYTHONHASHSEED": seed, "LC_ALL": "C.UTF-8" if i else "C", "SOURCE_DATE_EPOCH": "1234"},
        )
        assert res.returncode == 0, res.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_golden_digest(tmp_path: Path) -> None:
    """Changing this digest changes what every user's image digest is: do it deliberately."""
    (tmp_path / "hello").write_bytes(b"hello, scratch!\n")
    os.chmod(tmp_path / "hello", 0o755)
    res = lamina("build", "-q", "--add", "hello:/hello", "--cmd", '["/hello"]', "-o", "img.tar", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "sha256:61cca80dec9ca67faf54915534261e5e55786448527108b7c83207f9a34fbb27"


def test_digest_does_not_depend_on_where_the_spec_is_run_from(app: Path) -> None:
    (app / "sub").mkdir()
    (app / "sub" / "lamina.toml").write_text(
        'output = "../out/a.tar"\n[[layer]]\nentries = [{ src = "../hello", dst = "/hello" }]\n'
    )
    from_top = lamina("build", "-q", "sub/lamina.toml", cwd=app)
    from_sub = lamina("build", "-q", "lamina.toml", cwd=app / "sub")
    absolute = lamina("build", "-q", "--add", f"{app / 'hello'}:/hello", "-o", "out/b.tar", cwd=app)
    assert from_top.returncode == from_sub.returncode == absolute.returncode == 0
    assert from_top.stdout == from_sub.stdout == absolute.stdout


def test_oci_dir_never_replaces_user_data(app: Path) -> None:
    (app / "precious").mkdir()
    (app / "precious" / "notes.txt").write_text("keep me")
    res = lamina("build", "--add", "hello:/hello", "--oci-dir", "precious", cwd=app)
    assert res.returncode == 1
    assert res.stderr.strip() == (
        "lamina: error: cannot write 'precious': it is a non-empty directory and not an OCI layout; refusing to replace it"
    )
    assert (app / "precious" / "notes.txt").read_text() == "keep me"
    # An earlier untagged image in a layout is replaced in index.json (its blobs are kept, as
    # skopeo and umoci keep them), and a tarball path that is a directory is refused.
    assert lamina("build", "--add", "hello:/hello", "--oci-dir", "out/l", cwd=app).returncode == 0
    res = lamina("build", "--add", "hello:/hello", "--env", "X=1", "--oci-dir", "out/l", cwd=app)
    assert res.returncode == 0
    assert [m["digest"] for m in validate_image(app / "out" / "l")["index"]["manifests"]] == [res.stdout.strip()]
    assert len(list((app / "out" / "l" / "blobs" / "sha256").iterdir())) == 5  # the layer is shared
    res = lamina("build", "--add", "hello:/hello", "-o", "out", cwd=app)
    assert (res.returncode, res.stderr.strip()) == (1, "lamina: error: cannot write 'out': it is a directory")


def test_spec_tarball_layer_and_flag_destination(app: Path, tmp_path: Path) -> None:
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tf:
        info = tarfile.TarInfo("./etc/motd")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    (app / "rootfs.img").write_bytes(buf.getvalue())
    (app / "lamina.toml").write_text('output = "out/t.tar"\n[[layer]]\ntarball = "rootfs.img"\ndst = "/srv"\n')
    res = lamina("build", "lamina.toml", "--tarball", "rootfs.img:/opt", cwd=app)
    assert res.returncode == 0, res.stderr
    with tarfile.open(app / "out" / "t.tar") as tf:
        layers = json.load(tf.extractfile("manifest.json"))[0]["Layers"]
        names = [[m.name for m in tarfile.open(fileobj=tf.extractfile(l), mode="r|gz")] for l in layers]
    assert names == [["srv", "srv/etc", "srv/etc/motd"], ["opt", "opt/etc", "opt/etc/motd"]]


def test_inspect_text_files_and_json(app: Path) -> None:
    res = lamina("build", "-q", "--add", "hello:/bin/hello:0755", "--add", "cacert.pem:/etc/ssl/certs/",
                 "--cmd", '["/bin/hello"]', "-t", "insp:v2", "-o", "out/i.tar", "--oci-dir", "out/i", cwd=app)
    digest = res.stdout.strip()
    for target in ("out/i.tar", "out/i"):
        text = lamina("inspect", target, cwd=app)
        assert text.returncode == 0, text.stderr
        assert f"manifest:   {digest}" in text.stdout
        assert "lamina: add hello -> /bin/hello (mode 0755)" in text.stdout
        assert "Cmd:        ['/bin/hello']" in text.stdout
        files = lamina("inspect", "--files", target, cwd=app).stdout
        assert "-rwxr-xr-x 0/0         16  bin/hello" in files
        assert "drwxr-xr-x 0/0          0  etc/ssl/certs" in files
        [record] = json.loads(lamina("inspect", "--json", target, cwd=app).stdout)
        assert record["manifest_digest"] == digest
        assert record["platform"] == "linux/amd64"
        assert [l["files"] for l in record["layers"]] == [2, 4]
        assert record["layers"][0]["uncompressed_size"] == 512 * 3 + 1024  # 2 headers, 1 data block, 2 end blocks
        assert "entries" not in record["layers"][0]


def test_inspect_detects_a_corrupted_blob(app: Path) -> None:
    assert lamina("build", "--add", "hello:/hello", "--compression", "none", "--oci-dir", "out/c", cwd=app).returncode == 0
    index = json.loads((app / "out" / "c" / "index.json").read_text())
    manifest = json.loads((app / "out" / "c" / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
    layer = app / "out" / "c" / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]
    data = bytearray(layer.read_bytes())
    data[600] ^= 1  # flip one bit inside the file's content
    layer.write_bytes(bytes(data))
    res = lamina("inspect", "out/c", cwd=app)
    assert res.returncode == 1
    assert res.stderr.strip() == f"lamina: error: blob {manifest['layers'][0]['digest']} in out/c: content does not match its digest"


def test_progress_bars_only_on_a_terminal(app: Path, tmp_path: Path) -> None:
    """On a TTY a build shows per-layer progress (bytes and rate); in logs (no TTY) it stays quiet."""
    import fcntl
    import pty
    import struct
    import termios

    big = app / "big"
    big.write_bytes(os.urandom(24 << 20))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "lamina", "build", "--no-cache", "--add", "big:/big", "-o", "out/p.tar"],
                            cwd=app, env={**os.environ, "PYTHONPATH": str(SRC)}, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(timeout=120)
    os.close(master)
    assert proc.returncode == 0
    text = seen.decode(errors="replace")
    assert "lamina: add big -> /big" in text and "B/s" in text and "\r" in text
    quiet = lamina("build", "--no-cache", "--add", "big:/big", "-o", "out/q.tar", cwd=app)
    assert quiet.stderr == ""


def test_inspect_size_report_counts_wasted_bytes(app: Path) -> None:
    (app / "big").write_bytes(b"x" * 50_000)
    (app / "small").write_bytes(b"y" * 10)
    assert lamina("build", "--add", "big:/data/big", "--add", "small:/data/small", "--oci-dir", "out/base", cwd=app).returncode == 0
    res = lamina("build", "--from", "oci:out/base", "--remove", "/data/big", "--add", "small:/data/small:0600",
                 "--oci-dir", "out/next", cwd=app)
    assert res.returncode == 0, res.stderr
    [record] = json.loads(lamina("inspect", "--json", "out/next", cwd=app).stdout)
    fs = record["filesystem"]
    assert (fs["bytes"], fs["wasted"]) == (10, 50_010)  # big deleted, small overwritten
    assert [l["sizes"]["wasted"] for l in record["layers"]] == [50_000, 10, 0, 0]
    assert record["layers"][0]["sizes"]["largest_files"] == [{"path": "data/big", "size": 50_000}]
    assert record["layers"][2]["sizes"]["largest_files"] == []  # the whiteout layer adds no bytes
    text = lamina("inspect", "--sizes", "out/next", cwd=app).stdout
    assert "wasted (deleted or overwritten by later layers)" in text and "file   50.0 KB  data/big" in text


def _layout_with_dot_slash_names(root: Path, files: dict[str, bytes]) -> None:
    """An OCI layout as `tar -C rootfs .` makes layers: every member name starts with ./"""
    import hashlib
    import io

    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name in ("./", "./data/"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    layer = blob(buf.getvalue(), "application/vnd.oci.image.layer.v1.tar")
    config = blob(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                              "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}).encode(),
                  "application/vnd.oci.image.config.v1+json")
    manifest = blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                "config": config, "layers": [layer]}).encode(), "application/vnd.oci.image.manifest.v1+json")
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))


def test_inspect_and_the_sbom_read_one_merged_filesystem(app: Path) -> None:
    """A base whose layer says ./data/big: --remove /data/big really removes it for inspect too."""
    _layout_with_dot_slash_names(app / "base", {"./data/big": b"x" * 50_000, "./data/small": b"y" * 10})
    [before] = json.loads(lamina("inspect", "--json", "base", cwd=app).stdout)
    assert (before["filesystem"]["bytes"], before["filesystem"]["entries"]) == (50_010, 3)  # data, big, small
    res = lamina("build", "--from", "oci:base", "--remove", "/data/big", "--no-lint", "--sbom", "spdx",
                 "--oci-dir", "out/next", cwd=app)
    assert res.returncode == 0, res.stderr
    [record] = json.loads(lamina("inspect", "--json", "out/next", cwd=app).stdout)
    fs = record["filesystem"]
    assert (fs["bytes"], fs["entries"], fs["files"], fs["wasted"]) == (10, 2, 1, 50_000)
    assert [layer["sizes"]["wasted"] for layer in record["layers"]] == [50_000, 0]
    assert record["layers"][0]["sizes"]["largest_files"][0] == {"path": "data/big", "size": 50_000}
    sbom = json.loads((app / "out" / "next.spdx.json").read_text())
    assert [f["fileName"] for f in sbom["files"]] == ["./data/small"]
    files = lamina("inspect", "--files", "out/next", cwd=app).stdout
    assert "-rw-r--r-- 0/0      50000  data/big" in files  # the layer still holds it; the filesystem does not
