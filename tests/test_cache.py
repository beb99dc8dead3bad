"""The layer cache: hits skip tar and compression, and never change a byte of the output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from shutil import which as shutil_which

import pytest
from support.cli import SRC, lamina
from support.oci import validate_image

import lamina.build as build_module
from lamina.spec import FilesLayer, TarballLayer, BuildSpec
from lamina.sources.files import AddSpec


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "tree").mkdir()
    for i in range(20):
        (tmp_path / "tree" / f"f{i}").write_bytes(os.urandom(10_000))
    (tmp_path / "app").write_bytes(b"version 1")
    return tmp_path


def _spec(root: Path, out: str) -> BuildSpec:
    return BuildSpec(
        layers=(FilesLayer((AddSpec(str(root / "tree"), "/tree"),)), FilesLayer((AddSpec(str(root / "app"), "/app"),))),
        output=root / out,
    )


def test_unchanged_layers_are_not_rebuilt_and_bytes_do_not_change(inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = build_module.build_layer

    def counting(items, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw["created_by"])
        return real(items, **kw)

    monkeypatch.setattr(build_module, "build_layer", counting)
    cold = build_module.build(_spec(inputs, "cold.tar"), epoch=0)
    assert len(calls) == 2
    warm = build_module.build(_spec(inputs, "warm.tar"), epoch=0)
    assert len(calls) == 2  # both layers from the cache
    assert (inputs / "warm.tar").read_bytes() == (inputs / "cold.tar").read_bytes()
    (inputs / "app").write_bytes(b"version 2")
    build_module.build(_spec(inputs, "changed.tar"), epoch=0)
    assert calls[2:] == ["lamina: add app -> /app"]  # only the changed layer
    uncached = build_module.build(_spec(inputs, "nocache.tar"), epoch=0, use_cache=False)
    assert len(calls) == 5  # --no-cache builds everything
    assert (inputs / "nocache.tar").read_bytes() == (inputs / "changed.tar").read_bytes()
    assert warm.image.digest == cold.image.digest != uncached.image.digest
    # Mode and epoch are part of the key too: a mode changes one layer, the epoch every layer.
    os.chmod(inputs / "app", 0o700)
    build_module.build(_spec(inputs, "mode.tar"), epoch=0)
    assert len(calls) == 6
    build_module.build(_spec(inputs, "epoch.tar"), epoch=5)
    assert len(calls) == 8


def test_tarball_layers_are_cached_by_content(inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    subprocess.run(["tar", "-cf", str(inputs / "rootfs.tar"), "-C", str(inputs), "tree"], check=True)
    calls = []
    real = build_module.build_layer
    monkeypatch.setattr(build_module, "build_layer", lambda items, **kw: calls.append(1) or real(items, **kw))
    spec = BuildSpec(layers=(TarballLayer(str(inputs / "rootfs.tar")),), output=inputs / "t1.tar")
    build_module.build(spec, epoch=0)
    build_module.build(spec, epoch=0)
    assert len(calls) == 1
    with open(inputs / "rootfs.tar", "r+b") as f:  # same size, new content
        f.seek(2000)  # inside the first file's data
        f.write(b"X")
    build_module.build(spec, epoch=0)
    assert len(calls) == 2


def test_corrupt_cache_entry_is_rebuilt_and_prune_empties(inputs: Path) -> None:
    env = {"XDG_CACHE_HOME": str(inputs / "cache")}
    first = lamina("build", "-q", "--add", f"{inputs / 'tree'}:/t", "-o", str(inputs / "a.tar"), env=env)
    blobs = list((inputs / "cache" / "lamina" / "layers" / "blobs" / "sha256").iterdir())
    assert len(blobs) == 1
    blobs[0].write_bytes(blobs[0].read_bytes()[:-10])  # truncated
    second = lamina("build", "-q", "--add", f"{inputs / 'tree'}:/t", "-o", str(inputs / "b.tar"), env=env)
    assert second.stdout == first.stdout
    assert (inputs / "a.tar").read_bytes() == (inputs / "b.tar").read_bytes()
    res = lamina("cache", "prune", env=env)
    first_line = res.stdout.strip().splitlines()[0]
    assert res.returncode == 0 and first_line.startswith("removed 1 layers") and first_line.endswith("0 layers (0 bytes) remain")


def test_emptying_the_cache_forgets_up_to_date_records_and_census_memos(inputs: Path) -> None:
    """What was remembered beside the layers goes with them (the records of up-to-date outputs,
    the command lines lamina.quickcheck answers early, the censuses of lamina index); a size
    limit keeps them."""
    env = {"XDG_CACHE_HOME": str(inputs / "cache")}
    root = inputs / "cache" / "lamina"
    args = ("build", "-q", "--add", f"{inputs / 'tree'}:/t", "-o", str(inputs / "a.tar"))
    assert lamina(*args, env=env).returncode == 0
    joined = lamina("index", str(inputs / "a.tar"), "-o", str(inputs / "j.tar"), env=env)
    assert joined.returncode == 0, joined.stderr
    assert any((root / "uptodate").iterdir()) and any((root / "census").iterdir())  # control
    kept = lamina("cache", "prune", "--max-size", "1G", env=env)
    assert kept.returncode == 0 and len(kept.stdout.strip().splitlines()) == 1
    assert any((root / "uptodate").iterdir()) and any((root / "census").iterdir())
    res = lamina("cache", "prune", env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[1].startswith("removed 1 up-to-date records and 1 census memos")
    assert not any((root / "uptodate").iterdir()) and not any((root / "census").iterdir())


def test_two_builds_at_once_share_the_cache(inputs: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC), "XDG_CACHE_HOME": str(inputs / "cache")}
    procs = [subprocess.Popen([sys.executable, "-m", "lamina", "build", "-q", "--add", f"{inputs / 'tree'}:/t",
                               "--add", f"{inputs / 'app'}:/app", "-o", str(inputs / f"c{i}.tar")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert len({out for out, _ in results}) == 1
    assert len({(inputs / f"c{i}.tar").read_bytes() for i in range(4)}) == 1


def _cache_blob(root: Path) -> Path:
    [blob] = (root / "cache" / "lamina" / "layers" / "blobs" / "sha256").iterdir()
    return blob


def test_a_cached_blob_corrupted_in_place_is_evicted_and_rebuilt(inputs: Path) -> None:
    env = {"XDG_CACHE_HOME": str(inputs / "cache")}
    add = ("--add", f"{inputs / 'tree'}:/t")
    assert lamina("build", *add, "-o", str(inputs / "a.tar"), env=env).returncode == 0
    blob = _cache_blob(inputs)
    st = blob.stat()
    data = bytearray(blob.read_bytes())
    data[1000:1016] = bytes(b ^ 0xFF for b in data[1000:1016])  # same size, 16 bytes flipped
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))  # and its mtime put back: only ctime tells
    res = lamina("build", *add, "-o", str(inputs / "b.tar"), env=env)
    assert res.returncode == 0, res.stderr
    assert res.stderr.startswith(f"lamina: note: cached layer sha256:{blob.name} was corrupt"), res.stderr
    validate_image(inputs / "b.tar")  # re-hashes every blob
    assert (inputs / "b.tar").read_bytes() == (inputs / "a.tar").read_bytes()
    # The rebuilt layer went back into the cache, whole: the next build is quiet and identical.
    res = lamina("build", *add, "-o", str(inputs / "c.tar"), env=env)
    assert (res.returncode, res.stderr) == (0, "")
    assert (inputs / "c.tar").read_bytes() == (inputs / "a.tar").read_bytes()


def test_cached_blobs_are_hashed_once_not_on_every_hit(inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import lamina.cache as cache_module

    hashed: list[Path] = []
    real = cache_module.sha256_file
    monkeypatch.setattr(cache_module, "sha256_file", lambda path: hashed.append(Path(path)) or real(path))
    blobs = inputs / "cache" / "lamina" / "layers" / "blobs" / "sha256"

    def build(name: str) -> list[str]:
        del hashed[:]
        build_module.build(_spec(inputs, name), epoch=0)
        return sorted(p.name for p in hashed if p.parent == blobs)  # cached blobs, not the inputs

    assert build("cold.tar") == []
    time.sleep(1.1)  # a stat younger than a second is not remembered (racy: a write could hide in its tick)
    assert build("warm1.tar") == sorted(p.name for p in blobs.iterdir())  # the first use hashes
    assert build("warm2.tar") == []  # later uses cost a stat
    assert build("warm3.tar") == []
    blob = _cache_blob_of(inputs)
    os.utime(blob)  # a changed stat: hashed again, then remembered again
    time.sleep(1.1)
    assert build("warm4.tar") == [blob.name]
    assert build("warm5.tar") == []


def test_prune_leaves_the_blobs_a_build_is_using(inputs: Path) -> None:
    from lamina.cache import LayerCache

    build_module.build(_spec(inputs, "cold.tar"), epoch=0)
    using, pruning = LayerCache(), LayerCache()
    try:
        key = using.db.execute("SELECT key FROM layers ORDER BY size DESC").fetchone()[0]
        hit = using.get(key)
        assert hit is not None
        assert pruning.prune(0)[0] == 2  # both records go; the blob in use stays, for now
        assert hit[1].is_file() and len(list(hit[1].parent.iterdir())) == 1
        using.close()
        pruning.prune(0)
        assert list(hit[1].parent.iterdir()) == []
    finally:
        pruning.close()


def test_a_full_disk_under_the_cache_never_fails_the_build(inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import shutil

    import lamina.cache as cache_module

    tmp = inputs / "cache" / "lamina" / "layers" / "tmp"
    real_link, real_copy = os.link, shutil.copyfile

    def link(src, dst, *a, **kw):  # type: ignore[no-untyped-def]
        if Path(dst).parent == tmp:  # as if the cache were on another filesystem
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(src, dst, *a, **kw)

    def copyfile(src, dst, *a, **kw):  # type: ignore[no-untyped-def]
        if Path(dst).parent == tmp:  # half the blob written, then the disk is full
            Path(dst).write_bytes(Path(src).read_bytes()[:4096])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(src, dst, *a, **kw)

    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(cache_module.shutil, "copyfile", copyfile)
    notes: list[str] = []
    result = build_module.build(_spec(inputs, "full.tar"), epoch=0, note=notes.append)
    assert list(tmp.iterdir()) == []
    assert notes and all("cannot keep a layer (No space left on device)" in n for n in notes), notes
    assert validate_image(inputs / "full.tar")["manifests"][0]["layers"][0]["digest"] == str(result.image.layers[0].descriptor.digest)
    monkeypatch.undo()
    uncached = build_module.build(_spec(inputs, "again.tar"), epoch=0, use_cache=False)
    assert uncached.image.digest == result.image.digest


def test_temporary_blobs_of_dead_builds_are_removed(inputs: Path) -> None:
    from lamina.cache import LayerCache

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp = inputs / "cache" / "lamina" / "layers" / "tmp"
    tmp.mkdir(parents=True)
    (tmp / f"{'a' * 64}.{dead.pid}").write_bytes(b"partial")
    (tmp / f"{'b' * 64}.{os.getpid()}").write_bytes(b"ours, in progress")
    LayerCache().close()
    assert sorted(p.name for p in tmp.iterdir()) == [f"{'b' * 64}.{os.getpid()}"]


@pytest.mark.skipif(not shutil_which("unshare"), reason="needs unshare(1) to mount a small tmpfs")
def test_a_full_tmpfs_under_the_cache_never_fails_the_build(inputs: Path) -> None:
    """The real thing: XDG_CACHE_HOME on a 256 KiB tmpfs, a 1 MiB incompressible layer."""
    (inputs / "big").write_bytes(os.urandom(1 << 20))
    cache = inputs / "small"
    cache.mkdir()
    script = (
        f"mount -t tmpfs -o size=256k tmpfs {cache} || exit 99; "
        f"XDG_CACHE_HOME={cache} PYTHONPATH={SRC} {sys.executable} -m lamina build --add {inputs / 'big'}:/big "
        f"-o {inputs / 'out.tar'}; echo rc=$?; ls -A {cache}/lamina/layers/tmp {cache}/lamina/layers/blobs/sha256"
    )
    res = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script], capture_output=True, text=True)
    if res.returncode == 99 or "unshare failed" in res.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    assert "rc=0" in res.stdout, res.stdout + res.stderr
    assert "No space left on device" in res.stderr
    listed = res.stdout.split("rc=0", 1)[1].split()
    assert [x for x in listed if not x.endswith(":")] == [], res.stdout  # no tmp/<hex>.<pid>, no partial blob
    validate_image(inputs / "out.tar")


def test_a_blob_corrupted_while_a_build_holds_it_is_caught_next_time(inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A blob remembered as verified, then written to (its mtime put back) while a build uses it."""
    import time

    build_module.build(_spec(inputs, "cold.tar"), epoch=0)
    time.sleep(1.1)  # so that the next build remembers the blobs as verified
    real = build_module.emit
    blob = _cache_blob_of(inputs)

    def corrupting(*args, **kw):  # type: ignore[no-untyped-def]
        st = blob.stat()
        with open(blob, "r+b") as f:
            f.seek(100)
            f.write(b"\xff" * 16)
        os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
        return real(*args, **kw)

    monkeypatch.setattr(build_module, "emit", corrupting)
    build_module.build(_spec(inputs, "during.tar"), epoch=0)
    monkeypatch.setattr(build_module, "emit", real)
    notes: list[str] = []
    build_module.build(_spec(inputs, "after.tar"), epoch=0, note=notes.append)
    assert len(notes) == 1 and "was corrupt (its bytes do not match its digest)" in notes[0], notes
    validate_image(inputs / "after.tar")
    assert (inputs / "after.tar").read_bytes() == (inputs / "cold.tar").read_bytes()


def _cache_blob_of(root: Path) -> Path:
    """The cached blob of the /tree layer (the larger of the two)."""
    blobs = (root / "cache" / "lamina" / "layers" / "blobs" / "sha256").iterdir()
    return max(blobs, key=lambda p: p.stat().st_size)


# ---- tree stamps: an unchanged host tree costs a stat per path, no entry built, no file hashed


def _walked(spec: BuildSpec, *, age_ns: int = 2_000_000_000):  # type: ignore[no-untyped-def]
    """The build's walk of its inputs, as if taken ``age_ns`` after the files were last
    changed (the racy-clean rule trusts a stat only once its ctime is a second older)."""
    import attrs

    from lamina.depfile import inputs as read_inputs

    found = read_inputs(spec)
    return attrs.evolve(found, taken_ns=found.taken_ns + age_ns)


def _trees(root: Path) -> int:
    import sqlite3

    with sqlite3.connect(root / "cache" / "lamina" / "layers" / "index.sqlite") as db:
        return int(db.execute("SELECT COUNT(*) FROM trees").fetchone()[0])


def test_an_unchanged_tree_is_neither_walked_into_entries_nor_hashed(inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.cache import LayerCache

    walks: list[int] = []
    hashed: list[str] = []
    real_tree, real_digest = build_module.tree_layer, LayerCache.file_digest
    monkeypatch.setattr(build_module, "tree_layer", lambda specs, ctx: walks.append(1) or real_tree(specs, ctx))
    monkeypatch.setattr(LayerCache, "file_digest", lambda self, path: hashed.append(path) or real_digest(self, path))
    spec = _spec(inputs, "cold.tar")
    cold = build_module.build(spec, epoch=0, inputs=_walked(spec))
    assert len(walks) == 2 and len(hashed) == 21 and _trees(inputs) == 2
    walks.clear(), hashed.clear()
    spec = _spec(inputs, "warm.tar")
    warm = build_module.build(spec, epoch=0, inputs=_walked(spec))
    assert walks == [] and hashed == []  # both layers from their stamps
    assert warm.image.digest == cold.image.digest
    assert (inputs / "warm.tar").read_bytes() == (inputs / "cold.tar").read_bytes()
    # A file rewritten in place with the same size and its old mtime put back: its ctime moved.
    victim = inputs / "tree" / "f3"
    before = victim.stat()
    victim.write_bytes(os.urandom(10_000))
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    spec = _spec(inputs, "changed.tar")
    changed = build_module.build(spec, epoch=0, inputs=_walked(spec))
    assert len(walks) == 1 and str(victim) in hashed  # only the tree's layer is laid out again
    fresh = build_module.build(_spec(inputs, "fresh.tar"), epoch=0, use_cache=False)
    assert changed.image.digest == fresh.image.digest != cold.image.digest


def test_a_tree_changed_within_the_racy_second_is_not_remembered(inputs: Path) -> None:
    spec = _spec(inputs, "a.tar")
    build_module.build(spec, epoch=0, inputs=_walked(spec, age_ns=0))  # files written just now
    assert _trees(inputs) == 0
    build_module.build(spec, epoch=0, inputs=_walked(spec))
    assert _trees(inputs) == 2


def test_tree_stamps_follow_what_decides_the_entries(inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Destination, mode, epoch and platform are in the stamp: each change lays the tree out again."""
    import attrs

    walks: list[int] = []
    real_tree = build_module.tree_layer
    monkeypatch.setattr(build_module, "tree_layer", lambda specs, ctx: walks.append(1) or real_tree(specs, ctx))
    spec = _spec(inputs, "a.tar")
    build_module.build(spec, epoch=0, inputs=_walked(spec))
    assert len(walks) == 2
    moved = attrs.evolve(spec, layers=(FilesLayer((AddSpec(str(inputs / "tree"), "/elsewhere"),)), spec.layers[1]))
    result = build_module.build(moved, epoch=0, inputs=_walked(moved))
    assert len(walks) == 3
    assert any(p.startswith("elsewhere/") for p in _paths(inputs / "a.tar", result))
    build_module.build(spec, epoch=5, inputs=_walked(spec))
    assert len(walks) == 5
    os.symlink("f1", inputs / "tree" / "link")  # a new entry: the directory's listing changed
    build_module.build(spec, epoch=0, inputs=_walked(spec))
    assert len(walks) == 6


def _paths(tarball: Path, result) -> list[str]:  # type: ignore[no-untyped-def]
    import tarfile

    image = result.image
    names = []
    with tarfile.open(tarball) as outer:
        for layer in image.layers:
            member = outer.extractfile(f"blobs/sha256/{layer.descriptor.digest.hex}")
            assert member is not None
            with tarfile.open(fileobj=member, mode="r|*") as inner:
                names += [m.name for m in inner]
    return names


def test_a_stamped_tree_whose_blob_is_gone_is_built_from_its_remembered_entries(inputs: Path) -> None:
    spec = _spec(inputs, "a.tar")
    first = build_module.build(spec, epoch=0, inputs=_walked(spec))
    for blob in (inputs / "cache" / "lamina" / "layers" / "blobs" / "sha256").iterdir():
        blob.unlink()
    spec = _spec(inputs, "b.tar")
    again = build_module.build(spec, epoch=0, inputs=_walked(spec))
    assert again.image.digest == first.image.digest
    assert (inputs / "b.tar").read_bytes() == (inputs / "a.tar").read_bytes()

def test_large_inputs_hashed_on_threads_give_the_same_key_each_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files over PARALLEL_HASH_MIN are hashed ahead on a thread pool: the key is the one the
    one-by-one walk gives, each file is read once, and the digests are remembered by stat."""
    import lamina.cache as cache_module
    from lamina.layers.entries import Entry, Kind

    files = []
    for i in range(6):
        path = tmp_path / f"in{i}"
        path.write_bytes(os.urandom((2 << 20) if i % 2 else 1000))
        files.append(path)
    items = [(Entry(f"data/{p.name}", Kind.FILE, size=p.stat().st_size, source=str(p)), None) for p in files]
    hashed: list[str] = []
    real = cache_module.file_key
    monkeypatch.setattr(cache_module, "file_key", lambda path: hashed.append(path) or real(path))

    ahead = cache_module.LayerCache(tmp_path / "ahead")
    key = ahead.key_for_entries(items, "gzip")  # type: ignore[arg-type]
    assert sorted(hashed) == sorted(str(p) for p in files)  # each once: the walk found the big ones known
    monkeypatch.setattr(cache_module, "PARALLEL_HASH_MIN", 1 << 40)
    one_by_one = cache_module.LayerCache(tmp_path / "one-by-one")
    assert one_by_one.key_for_entries(items, "gzip") == key  # type: ignore[arg-type]
    monkeypatch.setattr(cache_module, "PARALLEL_HASH_MIN", 1 << 20)
    del hashed[:]
    assert ahead.key_for_entries(items, "gzip") == key  # type: ignore[arg-type]
    assert hashed == []  # remembered by stat
    (tmp_path / "in1").write_bytes(os.urandom(2 << 20))  # changed: a new key, that file hashed again
    assert ahead.key_for_entries(items, "gzip") != key  # type: ignore[arg-type]
    assert hashed == [str(tmp_path / "in1")]
    (tmp_path / "in3").unlink()  # said by the walk, as before (the build then builds uncached)
    with pytest.raises(FileNotFoundError, match="in3"):
        ahead.key_for_entries(items, "gzip")  # type: ignore[arg-type]
    ahead.close()
    one_by_one.close()


def test_file_key_is_blake3_of_the_whole_file(tmp_path: Path) -> None:
    """The content key is BLAKE3 (the spec's vector for empty input), read to the end across
    many buffers."""
    import blake3

    from lamina.hashing import file_key

    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert file_key(str(empty)) == "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    big = tmp_path / "big"
    data = os.urandom(3 << 20 | 12345)  # not a whole number of read buffers
    big.write_bytes(data)
    assert file_key(str(big)) == "blake3:" + blake3.blake3(data).hexdigest()


def test_content_digests_remembered_by_an_older_cache_are_not_reused(tmp_path: Path) -> None:
    """A cache index from before BLAKE3 content keys held sha256 digests by inode: they are
    dropped, once, never read as keys of the new kind."""
    import sqlite3

    import lamina.cache as cache_module

    path = tmp_path / "in"
    path.write_bytes(b"content")
    fresh = cache_module.LayerCache(tmp_path / "fresh").file_digest(str(path))
    root = tmp_path / "old"
    root.mkdir()
    st = path.stat()
    db = sqlite3.connect(root / "index.sqlite")
    db.execute("CREATE TABLE files (dev INTEGER, ino INTEGER, size INTEGER, mtime INTEGER, ctime INTEGER, sha256 TEXT, PRIMARY KEY (dev, ino))")
    db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)", (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, "0" * 64))
    db.commit()
    db.close()
    old = cache_module.LayerCache(root)
    assert old.file_digest(str(path)) == fresh
    assert old.db.execute("SELECT name FROM sqlite_master WHERE name='files'").fetchone() is None
    # An older lamina sharing the cache makes its table again: later opens leave it alone.
    old.db.execute("CREATE TABLE files (dev INTEGER, ino INTEGER, size INTEGER, mtime INTEGER, ctime INTEGER, sha256 TEXT, PRIMARY KEY (dev, ino))")
    old.close()
    again = cache_module.LayerCache(root)
    assert again.db.execute("SELECT name FROM sqlite_master WHERE name='files'").fetchone() is not None
    assert again.file_digest(str(path)) == fresh
