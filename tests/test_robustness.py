"""Bad inputs and failing disks found in review: each is one clean error, never a hang or a lie."""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
from support.cli import SRC, build_ok, lamina

from lamina.errors import InputError
from lamina.layers.build import build_layer
from lamina.layers.compression import Compression
from lamina.layers.pipeline import LayerStream
from lamina.sources.files import AddSpec, LayerContext, tree_layer
from lamina.store import BlobStore


def _tar(path: Path, members: list[tarfile.TarInfo]) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for m in members:
            tf.addfile(m, io.BytesIO(b"x" * m.size) if m.size else None)


def _info(name: str, **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def test_corrupt_member_header_and_gzip_checksum_are_errors(testdata_out: Path, tmp_path: Path) -> None:
    plain = tmp_path / "bb.tar"
    plain.write_bytes(gzip.decompress((testdata_out / "busybox-rootfs.tar.gz").read_bytes()))
    with tarfile.open(plain) as tf:
        members = tf.getmembers()
    middle = members[len(members) // 2].offset  # a header in the middle of the archive
    data = bytearray(plain.read_bytes())
    data[middle + 148] ^= 0x11  # its checksum field
    (tmp_path / "badhdr.tar").write_bytes(bytes(data))
    res = lamina("build", "--tarball", str(tmp_path / "badhdr.tar"), "-o", str(tmp_path / "x.tar"))
    assert res.returncode == 1 and "corrupt header after member" in res.stderr, res.stderr
    gz = bytearray((testdata_out / "busybox-rootfs.tar.gz").read_bytes())
    gz[len(gz) // 2 : len(gz) // 2 + 64] = bytes(64)
    (tmp_path / "bad.tar.gz").write_bytes(bytes(gz))
    res = lamina("build", "--tarball", str(tmp_path / "bad.tar.gz"), "-o", str(tmp_path / "y.tar"))
    assert res.returncode == 1 and res.stderr.startswith("lamina: error:") and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "x.tar").exists() and not (tmp_path / "y.tar").exists()


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_info("big-uid", uid=2**40), "has uid 1099511627776, outside 0..4294967295"),
        (_info("dev", type=tarfile.CHRTYPE, devmajor=2**22), "has device major 4194304"),
    ],
)
def test_numbers_tar_readers_reject_are_refused(tmp_path: Path, member: tarfile.TarInfo, message: str) -> None:
    _tar(tmp_path / "t.tar", [member])
    res = lamina("build", "--tarball", str(tmp_path / "t.tar"), "-o", str(tmp_path / "x.tar"))
    assert res.returncode == 1 and message in res.stderr, res.stderr


def test_hardlink_to_a_directory_is_refused(tmp_path: Path) -> None:
    _tar(tmp_path / "t.tar", [_info("d", type=tarfile.DIRTYPE), _info("h", type=tarfile.LNKTYPE, linkname="d")])
    res = lamina("build", "--tarball", str(tmp_path / "t.tar"), "-o", str(tmp_path / "x.tar"))
    assert res.returncode == 1 and "is a hardlink to a directory" in res.stderr


def test_flush_failure_does_not_hang() -> None:
    class Full(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: bytes) -> int:
            raise OSError(28, "No space left on device")

    errors: list[BaseException] = []

    def run() -> None:
        stream = LayerStream(Full(), Compression.GZIP)  # type: ignore[arg-type]
        stream.write(b"small")  # nothing is written until flush
        try:
            stream.finish()
        except OSError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "finish() hung after the compressor's flush failed"
    assert errors and errors[0].errno == 28


def test_a_file_that_grows_during_the_build_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"a" * 1000)
    items = tree_layer([AddSpec(str(tmp_path / "f"), "/f")], LayerContext())
    with open(tmp_path / "f", "ab") as f:
        f.write(b"more")
    with pytest.raises(InputError, match="file grew while it was being read"):
        build_layer(items, compression=Compression.GZIP, store=BlobStore(tmp_path / "store"), created_by="t")


def test_clashing_output_paths_are_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f")
    res = lamina("build", "--add", f"{tmp_path / 'f'}:/f", "-o", str(tmp_path / "same"), "--metadata-file", str(tmp_path / "same"))
    assert (res.returncode, res.stderr.strip()) == (
        2, "lamina: error: the tarball, --oci-dir, --metadata-file and --depfile must be different paths")


def test_non_utf8_names_and_bad_spec_types(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / os.fsdecode(b"caf\xe9")).write_text("latin-1 name")
    res = lamina("build", "--add", f"{tree}:/t", "-o", str(tmp_path / "x.tar"))
    assert res.returncode == 0, res.stderr
    with tarfile.open(tmp_path / "x.tar") as tf:
        layer = json.load(tf.extractfile("manifest.json"))[0]["Layers"][0]
        raw = tf.extractfile(layer).read()
    assert b"t/caf\xe9" in gzip.decompress(raw)  # the name's bytes, as on disk
    (tmp_path / "lamina.toml").write_text('tags = [1]\noutput = "y.tar"\n')
    res = lamina("build", cwd=tmp_path)
    assert (res.returncode, res.stderr.strip()) == (2, "lamina: error: lamina.toml: tags: expected a list of strings")
    (tmp_path / "latin.toml").write_bytes(b'output = "caf\xe9.tar"\n')
    res = lamina("build", "latin.toml", cwd=tmp_path)
    assert res.returncode == 2 and "not valid TOML" in res.stderr
    res = lamina("build", "--add", f"{tree}:/t", "--source-date-epoch", "1_000", "-o", str(tmp_path / "z.tar"))
    assert res.returncode == 2 and "expected a whole number of seconds" in res.stderr


def test_layout_modes_do_not_follow_the_umask(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f")
    code = subprocess.run(
        ["sh", "-c", f'umask 077 && exec "$0" -m lamina build --add {tmp_path / "f"}:/f --oci-dir {tmp_path / "l"}',
         __import__("sys").executable], env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True).returncode
    assert code == 0
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "l").rglob("*")}
    assert set(modes.values()) <= {0o644, 0o755} and modes["blobs"] == 0o755 and modes["index.json"] == 0o644


def test_archives_with_dot_slash_member_names_are_read(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f")
    build_ok("--add", f"{tmp_path / 'f'}:/f", "--oci-dir", str(tmp_path / "layout"))
    subprocess.run(["tar", "-C", str(tmp_path / "layout"), "-cf", str(tmp_path / "dot.tar"), "."], check=True)
    assert build_ok("--from", f"oci-archive:{tmp_path / 'dot.tar'}", "-o", str(tmp_path / "x.tar")).startswith("sha256:")
