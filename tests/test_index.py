"""lamina index: single-platform images built apart join into the one index a multi-platform
build gives, byte for byte; clashes and mislabelled executables are refused."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from support.cli import build_ok, lamina
from support.oci import validate_image

from lamina.errors import InputError


def _index(tarball: Path) -> dict:
    with tarfile.open(tarball) as t:
        top = json.load(t.extractfile("index.json"))  # type: ignore[arg-type]
        digest = top["manifests"][0]["digest"]
        return json.load(t.extractfile(f"blobs/sha256/{digest[7:]}"))  # type: ignore[arg-type]


@pytest.fixture
def hellos(testdata_out: Path, tmp_path: Path) -> dict[str, str]:
    """One image per architecture, built as two CI runners would."""
    digests = {}
    for arch in ("amd64", "arm64"):
        digests[arch] = build_ok("--add", f"{testdata_out / f'hello-{arch}'}:/hello:0755", "--cmd", '["/hello"]',
                                 "--platform", f"linux/{arch}", "-o", str(tmp_path / f"{arch}.tar"))
    return digests


def test_joined_index_is_the_one_a_multi_platform_build_gives(hellos: dict[str, str], testdata_out: Path,
                                                              tmp_path: Path) -> None:
    joined = lamina("index", str(tmp_path / "amd64.tar"), str(tmp_path / "arm64.tar"), "-t", "hello:multi",
                    "-o", str(tmp_path / "multi.tar"), "--oci-dir", str(tmp_path / "layout"))
    assert joined.returncode == 0, joined.stderr
    index = _index(tmp_path / "multi.tar")
    assert [(m["digest"], m["platform"]["architecture"]) for m in index["manifests"]] == [
        (hellos["amd64"], "amd64"), (hellos["arm64"], "arm64")]  # the inputs' manifests, byte for byte
    validate_image(tmp_path / "multi.tar")
    validate_image(tmp_path / "layout")
    one_build = build_ok("--add", f"{testdata_out / 'hello-{arch}'}:/hello:0755", "--cmd", '["/hello"]',
                         "--platform", "linux/amd64,linux/arm64", "-t", "hello:multi", "-o", str(tmp_path / "built.tar"))
    assert joined.stdout.strip() == one_build
    assert (tmp_path / "multi.tar").read_bytes() == (tmp_path / "built.tar").read_bytes()
    again = lamina("index", str(tmp_path / "amd64.tar"), str(tmp_path / "arm64.tar"), "-t", "hello:multi",
                   "-o", str(tmp_path / "again.tar"))
    assert again.stdout == joined.stdout


def test_an_index_joins_with_more_platforms_and_the_docker_face_follows(hellos: dict[str, str], tmp_path: Path) -> None:
    assert lamina("index", str(tmp_path / "amd64.tar"), "--oci-dir", str(tmp_path / "one")).returncode == 0
    res = lamina("index", f"oci:{tmp_path / 'one'}", str(tmp_path / "arm64.tar"), "--docker-platform", "linux/arm64",
                 "-o", str(tmp_path / "multi.tar"))
    assert res.returncode == 0, res.stderr
    with tarfile.open(tmp_path / "multi.tar") as t:
        docker = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(t.extractfile(docker[0]["Config"]))  # type: ignore[arg-type]
    assert config["architecture"] == "arm64"


def test_platforms_must_not_clash(hellos: dict[str, str], tmp_path: Path) -> None:
    res = lamina("index", str(tmp_path / "amd64.tar"), str(tmp_path / "amd64.tar"), "-o", str(tmp_path / "x.tar"))
    assert res.returncode == 1 and "platform linux/amd64 is already given by" in res.stderr, res.stderr
    assert not (tmp_path / "x.tar").exists()


def test_a_mislabelled_executable_is_refused(testdata_out: Path, tmp_path: Path) -> None:
    build_ok("--add", f"{testdata_out / 'hello-arm64'}:/hello:0755", "--platform", "linux/amd64", "--no-arch-check",
             "--no-lint", "-o", str(tmp_path / "wrong.tar"))
    res = lamina("index", str(tmp_path / "wrong.tar"), "-o", str(tmp_path / "x.tar"))
    assert res.returncode == 1 and "/hello: an ELF aarch64 executable" in res.stderr, res.stderr
    assert lamina("index", str(tmp_path / "wrong.tar"), "--no-arch-check", "-o", str(tmp_path / "x.tar")).returncode == 0


def test_nothing_to_write_is_a_usage_error(tmp_path: Path) -> None:
    res = lamina("index", str(tmp_path / "a.tar"))
    assert res.returncode == 2 and "nothing to write" in res.stderr


def test_a_layer_shared_by_two_manifests_is_read_once(tmp_path: Path) -> None:
    """Two images built from one tree share their layer: the platform check decompresses and
    verifies it once, not once per manifest (the `lamina index` benchmark row)."""
    import contextlib

    from lamina.api import index_images
    from lamina.join import join
    from lamina.resolve import Resolver
    from lamina.sources import archive

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "data").write_bytes(b"shared " * 10000)
    (tree / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (tree / "run.sh").chmod(0o755)
    for arch in ("amd64", "arm64"):
        build_ok("--add", f"{tree}:/app", "--platform", f"linux/{arch}", "-o", str(tmp_path / f"{arch}.tar"))
    opened: list[str] = []
    real_open = archive.ArchiveBlobs.open
    real_decompress = archive.open_decompressed
    decompressed: list[object] = []

    def counting_open(self: archive.ArchiveBlobs, descriptor: Any) -> Any:
        opened.append(str(descriptor.digest))
        return real_open(self, descriptor)

    def counting_decompress(raw: Any) -> Any:
        decompressed.append(raw)
        return real_decompress(raw)

    with pytest.MonkeyPatch.context() as mp, contextlib.ExitStack() as stack:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no census remembered from before
        mp.setattr(archive.ArchiveBlobs, "open", counting_open)
        mp.setattr(archive, "open_decompressed", counting_decompress)
        index = join(Resolver(stack, None, None), [str(tmp_path / "amd64.tar"), str(tmp_path / "arm64.tar")])
        layers = {layer.descriptor.digest for image in index.images for layer in image.layers}
        assert len(layers) == 1, "the two images should share their one layer"
        assert opened == [str(d) for d in layers] and len(decompressed) == 1
        # The whole command: the outputs copy the blob the check verified, not the input's again.
        mp.setenv("XDG_CACHE_HOME", str(tmp_path / "cache" / "cold"))
        opened.clear()
        index_images([str(tmp_path / "amd64.tar"), str(tmp_path / "arm64.tar")], output=tmp_path / "joined.tar",
                     oci_dir=tmp_path / "layout")
        assert opened == [str(d) for d in layers]
    validate_image(tmp_path / "joined.tar")
    validate_image(tmp_path / "layout")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["amd64.tar", "arm64.tar", "cache", "joined.tar", "layout", "tree"]


def test_a_census_is_remembered_by_digest_and_diff_id(testdata_out: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A second `lamina index` of the same layers reads none of them for the check; what is
    remembered is what the layer holds, so a mislabelled binary is still refused, and a
    memo the cache mangled is no memo."""
    import contextlib

    from lamina.join import join
    from lamina.resolve import Resolver
    from lamina.sources import archive

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for arch in ("amd64", "arm64"):
        build_ok("--add", f"{testdata_out / f'hello-{arch}'}:/hello:0755", "--platform", f"linux/{arch}",
                 "-o", str(tmp_path / f"{arch}.tar"))
    build_ok("--add", f"{testdata_out / 'hello-arm64'}:/hello:0755", "--platform", "linux/amd64", "--no-arch-check",
             "--no-lint", "-o", str(tmp_path / "wrong.tar"))
    decompressed: list[object] = []
    real = archive.open_decompressed

    def counting(raw: Any) -> Any:
        decompressed.append(raw)
        return real(raw)

    monkeypatch.setattr(archive, "open_decompressed", counting)

    def joined(*names: str) -> int:
        decompressed.clear()
        with contextlib.ExitStack() as stack:
            join(Resolver(stack, None, None), [str(tmp_path / n) for n in names])
        return len(decompressed)

    assert joined("amd64.tar", "arm64.tar") == 2
    assert joined("amd64.tar", "arm64.tar") == 0
    memos = sorted((tmp_path / "cache" / "lamina" / "census").iterdir())
    assert len(memos) == 2
    memos[0].write_text('{"machines": [[62, 2')
    assert joined("amd64.tar", "arm64.tar") == 1
    for _ in range(2):  # the census of the first time, then the memo: refused both times
        with pytest.raises(InputError, match="/hello: an ELF aarch64 executable"):
            joined("wrong.tar")


def test_a_shared_layer_is_judged_against_each_manifests_platform(testdata_out: Path, tmp_path: Path) -> None:
    """One layer (an amd64 binary) in an amd64 and an arm64 manifest: it fits the first and
    not the second; what is remembered of a layer is what it holds, not a verdict."""
    build_ok("--add", f"{testdata_out / 'hello-amd64'}:/hello:0755", "--platform", "linux/amd64,linux/arm64",
             "--no-arch-check", "--no-lint", "-o", str(tmp_path / "both.tar"))
    res = lamina("index", str(tmp_path / "both.tar"), "-o", str(tmp_path / "x.tar"))
    assert res.returncode == 1, res.stderr
    assert "linux/arm64: /hello: an ELF x86-64 executable" in res.stderr, res.stderr
    assert not (tmp_path / "x.tar").exists()


def test_an_executable_hardlink_to_a_plain_file_is_checked(testdata_out: Path, tmp_path: Path) -> None:
    """The bytes of an executable hardlink are those of the file it links to, which need not
    be executable itself: they are checked all the same."""
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as t:
        data = (testdata_out / "hello-arm64").read_bytes()
        plain = tarfile.TarInfo("opt/blob")
        plain.size, plain.mode = len(data), 0o644
        t.addfile(plain, io.BytesIO(data))
        link = tarfile.TarInfo("hello")
        link.type, link.linkname, link.mode = tarfile.LNKTYPE, "opt/blob", 0o755
        t.addfile(link)
    build_ok("--tarball", str(rootfs), "--platform", "linux/amd64", "--no-arch-check", "--no-lint",
             "-o", str(tmp_path / "linked.tar"))
    res = lamina("index", str(tmp_path / "linked.tar"), "-o", str(tmp_path / "x.tar"))
    assert res.returncode == 1 and "/hello: an ELF aarch64 executable" in res.stderr, res.stderr


@pytest.mark.parametrize("where", ["middle", "end"])
def test_a_corrupt_layer_is_refused_and_nothing_is_written(hellos: dict[str, str], tmp_path: Path, where: str) -> None:
    """The layer is read ahead on a worker thread: its digest (or decompression) failure is
    still the command's error, and no output is written."""
    broken = tmp_path / "broken.tar"
    data = bytearray((tmp_path / "amd64.tar").read_bytes())
    with tarfile.open(tmp_path / "amd64.tar") as t:
        layer = max(t.getmembers(), key=lambda m: m.size)
    at = layer.offset_data + (layer.size // 2 if where == "middle" else layer.size - 9)  # inside the gzip CRC
    data[at] ^= 0xFF
    broken.write_bytes(bytes(data))
    res = lamina("index", str(broken), str(tmp_path / "arm64.tar"), "-o", str(tmp_path / "x.tar"))
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and str(layer.name.rsplit("/", 1)[1]) in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["amd64.tar", "arm64.tar", "broken.tar"]  # no output, no work dir


@pytest.mark.parametrize("arch_check", [(), ("--no-arch-check",)])
def test_a_false_diff_id_is_refused_with_or_without_the_arch_check(testdata_out: Path, tmp_path: Path,
                                                                   arch_check: tuple[str, ...]) -> None:
    """A config whose diff_id is not what its layer decompresses to: the verified pass every
    layer takes refuses it, also when the ELF check is off (it once let it into the index)."""
    import hashlib

    layout = tmp_path / "lie"
    build_ok("--add", f"{testdata_out / 'hello-amd64'}:/hello:0755", "--oci-dir", str(layout))
    blobs = layout / "blobs" / "sha256"

    def put(doc: dict) -> dict:
        data = json.dumps(doc).encode()
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
    config["rootfs"]["diff_ids"][0] = "sha256:" + "6" * 64
    manifest["config"].update(put(config))
    index["manifests"][0].update(put(manifest))
    (layout / "index.json").write_text(json.dumps(index))
    res = lamina("index", str(layout), *arch_check, "-o", str(tmp_path / "x.tar"))
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "diff_id" in res.stderr, res.stderr
    assert not (tmp_path / "x.tar").exists()


def test_a_layer_read_ahead_and_closed_early_still_fails_its_check(hellos: dict[str, str], tmp_path: Path) -> None:
    """A reader that stops early (the tar's end) and closes: the worker threads had read on
    and found the blob corrupt; closing says so instead of dropping their error."""
    import contextlib

    from lamina.errors import LaminaError
    from lamina.resolve import Resolver
    from lamina.sources.archive import open_uncompressed

    data = bytearray((tmp_path / "amd64.tar").read_bytes())
    with tarfile.open(tmp_path / "amd64.tar") as t:
        layer = max(t.getmembers(), key=lambda m: m.size)
    data[layer.offset_data + layer.size - 9] ^= 0xFF  # the gzip CRC: every byte before it decompresses
    (tmp_path / "broken.tar").write_bytes(bytes(data))
    with contextlib.ExitStack() as stack:
        image = Resolver(stack, None, None).all_platforms(str(tmp_path / "broken.tar"))[0]
        stream = open_uncompressed(image, image.layers[0], ahead=True)
        assert len(stream.read(512)) == 512
        time.sleep(0.5)  # the workers reach the end meanwhile
        with pytest.raises(LaminaError):
            stream.close()


def test_read_ahead_raises_at_close_an_error_the_reader_did_not_reach() -> None:
    """The worker thread read on and failed (a digest check at the end of a blob) after the
    reader's last read: closing raises that error instead of dropping it."""
    from lamina.errors import DigestMismatch
    from lamina.sources.archive import _ReadAhead

    class Failing(io.RawIOBase):
        calls = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            self.calls += 1
            if self.calls == 1:
                buffer[:4] = b"abcd"
                return 4
            raise DigestMismatch("the blob does not match its digest")

    ahead = _ReadAhead(Failing())  # type: ignore[arg-type]
    assert ahead.read(4) == b"abcd"
    deadline = time.monotonic() + 10
    while ahead._worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(DigestMismatch):
        ahead.close()


@pytest.mark.e2e
def test_a_joined_index_is_pushed_from_the_blobs_the_check_verified(hellos: dict[str, str], tmp_path: Path) -> None:
    """--push reads the layers from the work directory's store the check filled; the registry
    then serves the same index a local output gets."""
    from support.registry import DistributionRegistry
    from support.tools import require

    server = DistributionRegistry(require("docker-registry"))
    try:
        ref = f"{server.host}/lamina/joined:v1"
        env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "DOCKER_CONFIG": str(tmp_path / "docker")}
        pushed = lamina("index", str(tmp_path / "amd64.tar"), str(tmp_path / "arm64.tar"), "--push", ref,
                        "-o", str(tmp_path / "joined.tar"), env=env)
        assert pushed.returncode == 0, pushed.stderr
        local = lamina("index", str(tmp_path / "amd64.tar"), str(tmp_path / "arm64.tar"), "-o", str(tmp_path / "x.tar"))
        assert pushed.stdout.strip().endswith("@" + local.stdout.strip())
        back = lamina("index", ref, "-o", str(tmp_path / "back.tar"), env=env)
        assert back.returncode == 0, back.stderr
        assert back.stdout.strip() == local.stdout.strip()
        assert [m["digest"] for m in _index(tmp_path / "back.tar")["manifests"]] == [hellos["amd64"], hellos["arm64"]]
    finally:
        server.stop()


def _one_layer_layout(root: Path, members: list[tarfile.TarInfo]) -> str:
    """An OCI layout of one amd64 image whose one layer holds ``members`` (no data)."""
    import hashlib

    def sha(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for member in members:
            t.addfile(member)
    layer = buf.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": len(layer)}],
    }).encode()
    blobs = root / "layout" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in (layer, config, manifest):
        (blobs / sha(blob)[7:]).write_bytes(blob)
    (root / "layout" / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest), "size": len(manifest)}]}))
    (root / "layout" / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return f"oci:{root / 'layout'}"


def _member(name: str, kind: bytes, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)  # not executable: no ELF check needs its bytes
    member.type, member.linkname, member.mode = kind, linkname, mode
    return member


@pytest.mark.parametrize("member, says", [
    (_member("etc/notes", tarfile.LNKTYPE, "../../etc/shadow"), "../../etc/shadow"),  # leaves the root
    (_member("etc/notes", tarfile.LNKTYPE, "etc/missing"), "etc/missing"),  # links to nothing
    (_member("etc/tape", b"V"), "unsupported type"),  # a volume header docker cannot extract
])
def test_a_layer_no_reader_accepts_is_refused(tmp_path: Path, member: tarfile.TarInfo, says: str) -> None:
    """The census walks each layer as every reader does: member and link names resolve inside
    the image, hardlinks name a file, types are ones docker extracts; or the layer is refused."""
    image = _one_layer_layout(tmp_path, [member])
    res = lamina("index", image, "-o", str(tmp_path / "x.tar"), env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert says in res.stderr and not (tmp_path / "x.tar").exists()


def test_an_output_that_is_an_input_is_refused(hellos: dict[str, str], tmp_path: Path) -> None:
    before = (tmp_path / "amd64.tar").read_bytes()
    res = lamina("index", str(tmp_path / "amd64.tar"), str(tmp_path / "arm64.tar"), "-o", str(tmp_path / "amd64.tar"))
    assert res.returncode == 2 and "both an input and an output" in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert (tmp_path / "amd64.tar").read_bytes() == before
