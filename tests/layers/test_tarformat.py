import io
import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.layers import tarformat
from lamina.layers.entries import Entry, Kind

_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\x00"), min_size=1, max_size=40
)
_paths = st.lists(_names, min_size=1, max_size=6).map("/".join).filter(lambda p: p not in (".", "..") and ".." not in p.split("/") and "." not in p.split("/"))


def _archive(entries: list[tuple[Entry, bytes]]) -> bytes:
    out = io.BytesIO()
    for entry, data in entries:
        out.write(tarformat.header(entry))
        if entry.kind is Kind.FILE:
            out.write(data + tarformat.padding(len(data)))
    out.write(tarformat.END_OF_ARCHIVE)
    return out.getvalue()


@settings(max_examples=150, deadline=None)
@given(
    path=_paths,
    kind=st.sampled_from([Kind.FILE, Kind.DIR, Kind.SYMLINK, Kind.FIFO]),
    mode=st.integers(0, 0o7777),
    uid=st.integers(0, 2**32 - 1),
    gid=st.integers(0, 2**32 - 1),
    mtime=st.integers(0, 2**33 - 1),
    data=st.binary(max_size=700),
    link=_paths,
)
def test_python_tarfile_reads_back_every_field(path, kind, mode, uid, gid, mtime, data, link) -> None:
    entry = Entry(
        path, kind, mode=mode, uid=uid, gid=gid, mtime=mtime,
        size=len(data) if kind is Kind.FILE else 0, linkname=link if kind is Kind.SYMLINK else "",
    )
    raw = _archive([(entry, data)])
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        [member] = tf.getmembers()
        assert member.name == path
        assert member.type == kind.value
        assert member.mode == mode
        assert (member.uid, member.gid, member.mtime) == (uid, gid, mtime)
        assert member.uname == "" and member.gname == ""
        if kind is Kind.FILE:
            assert tf.extractfile(member).read() == data
        if kind is Kind.SYMLINK:
            assert member.linkname == link


def test_long_and_unicode_names_use_pax_with_sorted_records() -> None:
    long = "d/" + "x" * 150
    entry = Entry(long, Kind.SYMLINK, mode=0o777, linkname="é" * 120, uid=2**22)
    raw = tarformat.header(entry)
    assert raw[156:157] == b"x"  # a PAX header comes first
    body = raw[512:1024].rstrip(b"\0").decode()
    keys = [line.split(" ", 1)[1].split("=")[0] for line in body.splitlines()]
    assert keys == sorted(keys) == ["linkpath", "path", "uid"]
    with tarfile.open(fileobj=io.BytesIO(raw + tarformat.END_OF_ARCHIVE)) as tf:
        [member] = tf.getmembers()
        assert (member.name, member.linkname, member.uid) == (long, "é" * 120, 2**22)


def test_header_is_deterministic_and_block_aligned() -> None:
    entry = Entry("etc/ssl/certs", Kind.DIR, mode=0o755)
    assert tarformat.header(entry) == tarformat.header(Entry("etc/ssl/certs", Kind.DIR, mode=0o755))
    assert len(tarformat.header(entry)) == 512
    assert tarformat.header(entry)[:14] == b"etc/ssl/certs/"


def test_gnu_tar_agrees(tmp_path) -> None:
    import subprocess

    entries = [
        (Entry("a", Kind.DIR, mode=0o755), b""),
        (Entry("a/f", Kind.FILE, mode=0o4755, size=3, uid=1000, gid=1000, mtime=123), b"abc"),
        (Entry("a/h", Kind.HARDLINK, mode=0o4755, linkname="a/f"), b""),
        (Entry("a/" + "n" * 120, Kind.FILE, mode=0o600, size=0), b""),
    ]
    (tmp_path / "t.tar").write_bytes(_archive(entries))
    listing = subprocess.run(["tar", "--numeric-owner", "-tvf", str(tmp_path / "t.tar")], capture_output=True, text=True, check=True).stdout
    lines = listing.splitlines()
    assert lines[1].startswith("-rwsr-xr-x 1000/1000")
    assert lines[2].startswith("hrwsr-xr-x") and "a/h link to a/f" in lines[2]
    assert lines[3].endswith("a/" + "n" * 120)
