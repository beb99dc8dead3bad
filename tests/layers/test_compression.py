import gzip
import hashlib
import io
import os

import pytest
import zstandard

from lamina.layers import pipeline
from lamina.layers.compression import Compression, describe
from lamina.layers.pipeline import LayerStream


def _stream(data: bytes, compression: Compression, pieces: list[int]) -> tuple[bytes, pipeline.StreamResult]:
    out = io.BytesIO()
    stream = LayerStream(out, compression)
    pos = 0
    for n in pieces:
        stream.write(data[pos : pos + n])
        pos += n
    stream.write(data[pos:])
    result = stream.finish()
    return out.getvalue(), result


DATA = os.urandom(300_000) + b"lamina " * 400_000 + bytes(range(256)) * 3000


@pytest.mark.parametrize("compression", list(Compression))
def test_digests_describe_the_bytes_and_readers_agree(compression: Compression) -> None:
    blob, result = _stream(DATA, compression, [1, 511, 70_000])
    assert result.diff_id.hex == hashlib.sha256(DATA).hexdigest()
    assert result.digest.hex == hashlib.sha256(blob).hexdigest()
    assert (result.size, result.uncompressed_size) == (len(blob), len(DATA))
    if compression is Compression.GZIP:
        assert gzip.decompress(blob) == DATA  # the system zlib reads igzip output
        assert blob[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # fixed header: no mtime, no name
        assert len(blob) < len(DATA) * 0.8
    elif compression is Compression.ZSTD:
        assert zstandard.ZstdDecompressor().decompressobj().decompress(blob) == DATA
    else:
        assert blob == DATA and result.digest == result.diff_id


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_output_does_not_depend_on_how_writes_are_split(compression: Compression) -> None:
    a, _ = _stream(DATA, compression, [10] * 100)
    b, _ = _stream(DATA, compression, [pipeline.CHUNK + 7, 3])
    assert a == b


def test_golden_compressed_digests() -> None:
    """A change here changes every lamina digest: make it deliberately, with a note in the changelog."""
    data = b"".join(hashlib.sha256(str(i).encode()).digest() * 40 for i in range(6000))  # > one zstd job
    golden = {
        Compression.GZIP: "4b2137f797d8b85ad949ca537cada3a761b13d302386df8a42e01a740e4210bc",
        Compression.ZSTD: "f9960eab0aaa49cc60761948b5d16b79b594876befb521e257dc5bd984dfc69e",
    }
    for compression, expected in golden.items():
        blob, _ = _stream(data, compression, [])
        assert hashlib.sha256(blob).hexdigest() == expected, (compression, describe(compression))


def test_empty_stream_is_a_valid_gzip() -> None:
    blob, result = _stream(b"", Compression.GZIP, [])
    assert gzip.decompress(blob) == b""
    assert result.uncompressed_size == 0


def test_describe_names_compressor_and_version() -> None:
    assert describe(Compression.GZIP).startswith("isal-1.9.1 igzip level 2")
    assert "libzstd-1.5.7" in describe(Compression.ZSTD)


def test_zstd_output_is_the_same_for_any_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = set()
    for cores in (1, 2, 4):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        blob, _ = _stream(DATA * 3, Compression.ZSTD, [])
        outputs.add(blob)
    assert len(outputs) == 1
