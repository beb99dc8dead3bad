"""Write the seed corpus (fuzz/corpus/<target>/): small valid inputs that reach every branch
a fuzzer would otherwise take hours to find (each compression, each member kind, PAX and GNU
headers, each image-archive document). Deterministic; rerun after changing it:

    python fuzz/seeds.py
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import sys
import tarfile
from pathlib import Path

import zstandard

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from targets import archive_members  # noqa: E402


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode, info.mtime = kind, size, link, mode, 1_600_000_000
    info.uid, info.gid = 1000, 1000
    return info


def _tar(members: list[tuple[tarfile.TarInfo, bytes]], fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def tar_seeds() -> dict[str, bytes]:
    dev = _info("dev/null", tarfile.CHRTYPE)
    dev.devmajor, dev.devminor = 1, 3
    kinds = [
        (_info("./", tarfile.DIRTYPE, mode=0o755), b""),
        (_info("./bin", tarfile.DIRTYPE, mode=0o755), b""),
        (_info("./bin/busybox", size=4, mode=0o4755), b"\x7fELF"),
        (_info("./bin/sh", tarfile.SYMTYPE, link="busybox"), b""),
        (_info("bin/ls", tarfile.LNKTYPE, link="./bin/busybox"), b""),
        (dev, b""),
        (_info("run/fifo", tarfile.FIFOTYPE), b""),
        (_info("a/" + "long" * 40, size=3), b"abc"),
        (_info("n\u00e9/\u00fc", size=1), b"x"),
    ]
    out: dict[str, bytes] = {}
    for fmt, name in ((tarfile.USTAR_FORMAT, "ustar"), (tarfile.GNU_FORMAT, "gnu"), (tarfile.PAX_FORMAT, "pax")):
        members = [m for m in kinds if fmt != tarfile.USTAR_FORMAT or len(m[0].name) < 100]
        if fmt == tarfile.USTAR_FORMAT:
            members = [m for m in members if m[0].name.isascii()]
        out[f"kinds-{name}"] = _tar(members, fmt)
    plain = out["kinds-pax"]
    out["kinds-gzip"] = gzip.compress(plain, mtime=0)
    out["kinds-xz"] = lzma.compress(plain)
    out["kinds-bzip2"] = bz2.compress(plain)
    out["kinds-zstd"] = zstandard.ZstdCompressor().compress(plain)
    # A GNU sparse member (old format, typeflag 'S'), hand-made as GNU tar writes it.
    sparse = bytearray(_tar([(_info("sparse", size=512), b"s" * 512)], tarfile.GNU_FORMAT))
    sparse[156:157] = b"S"
    sparse[386:386 + 24] = b"%011o\0%011o\0" % (0, 512)  # one (offset, numbytes) pair
    sparse[483:483 + 12] = b"%011o\0" % 4096  # realsize
    sparse[148:156] = b"        "
    sparse[148:156] = b"%06o\0 " % sum(sparse[:512])
    out["sparse-gnu"] = bytes(sparse)
    # PAX records that override size, path, linkpath, uid.
    pax = _info("p", size=2)
    pax.pax_headers = {"path": "pax/name", "uid": "70000", "mtime": "1.5", "comment": "x"}
    out["pax-records"] = _tar([(pax, b"hi")], tarfile.PAX_FORMAT)
    return out


def image_seeds() -> dict[str, bytes]:
    docker = json.dumps([{"Config": "config.json", "RepoTags": ["fuzz:latest"], "Layers": ["layer.tar.gz"]}]).encode()
    docs = {1: docker, 2: _valid_oci_doc(2), 3: _valid_oci_doc(3), 4: _valid_oci_doc(4)}
    out = {name: bytes([kind]) + docs[kind]
           for kind, name in ((1, "manifest-json"), (2, "index-json"), (3, "manifest"), (4, "config"))}
    for kind, name in ((1, "whole-docker"), (2, "whole-oci")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for member, body in archive_members(kind, docs[kind]).items():
                info = tarfile.TarInfo(member)
                info.size = len(body)
                tf.addfile(info, io.BytesIO(body))
        out[name] = b"\0" + buf.getvalue()
    return out


def _valid_oci_doc(kind: int) -> bytes:
    """The valid index (2), manifest (3) or config (4) of the archive archive_members builds."""
    from targets import _config, _index, _layer, _manifest

    layer, diff_id = _layer()
    config = _config(diff_id)
    manifest = _manifest(config, layer)
    return {2: _index(manifest), 3: manifest, 4: config}[kind]


def spec_seeds() -> dict[str, bytes]:
    out = {"hello": (HERE.parent / "examples" / "hello" / "lamina.toml").read_bytes()}
    out["full"] = b'''base = { image = "oci:img:latest", sha256 = "%s" }
remove = ["/etc/motd"]
hermetic = false
platforms = ["linux/amd64", "linux/arm64/v8"]
docker_platform = "linux/amd64"
arch_check = true
ca_certs = ["certs.pem"]
accounts = true
tmp = true
tzdata = "zoneinfo"
lint = true
lint_ignore = ["L006"]
sbom = "spdx"
sbom_attach = false
entrypoint = ["/hello", "-v"]
cmd = "serve"
env = { PATH = "/bin", N = 3 }
workdir = "/srv"
user = "65532:65532"
labels = { "org.example" = "x" }
annotations = { a = "b" }
expose = [8080, "53/udp"]
stop_signal = "SIGTERM"
tags = ["example/hello:1", "hello"]
output = "out.tar"
oci_dir = "layout"
compression = "zstd"
source_date_epoch = 1700000000
metadata_file = "meta.json"

[[layer]]
entries = [{ src = "hello", dst = "/hello", mode = "0755" }, { src = "conf/", dst = "/etc/app/" }]
comment = "app"

[[layer]]
tarball = "rootfs.tar.gz"
dst = "/"
sha256 = "%s"
''' % (b"0" * 64, b"1" * 64)
    return out


def main() -> None:
    for target, seeds in (("tar", tar_seeds()), ("image", image_seeds()), ("spec", spec_seeds())):
        folder = HERE / "corpus" / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (folder / name).write_bytes(data)
        print(f"{target}: {len(seeds)} seeds in {folder}")


if __name__ == "__main__":
    main()
