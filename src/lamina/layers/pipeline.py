"""The one-pass layer stream: tar bytes → diff_id hash → compressor → digest hash → blob file.

Writes are cut into fixed-size chunks so the compressor sees the same calls whatever the
entry sizes (zstd's streaming output may depend on how its input is split). The caller's
thread reads files and hashes the uncompressed stream; a worker thread compresses, hashes
and writes the blob, so both cores work (hashlib, igzip and zstd release the GIL).
A bounded queue keeps memory flat: at most a few chunks are in flight.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from typing import BinaryIO

import attrs

from lamina.layers.compression import Compression, new_compressor
from lamina.model import Digest

CHUNK = 1 << 20
_IN_FLIGHT = 4


@attrs.frozen
class StreamResult:
    diff_id: Digest
    uncompressed_size: int
    digest: Digest
    size: int


class LayerStream:
    """A write-only file object; ``finish()`` returns both digests once the blob is complete."""

    def __init__(self, out: BinaryIO, compression: Compression, on_bytes: Callable[[int], None] | None = None) -> None:
        self._out = out
        self._on_bytes = on_bytes  # progress: uncompressed bytes, reported per chunk
        self._compression = compression
        self._compressor = new_compressor(compression)
        self._diff = hashlib.sha256()
        self._blob = hashlib.sha256() if compression is not Compression.NONE else self._diff
        self._usize = 0
        self._csize = 0
        self._buf = bytearray()
        self._queue: queue.Queue[bytes | None] = queue.Queue(_IN_FLIGHT)
        self._error: BaseException | None = None
        self._worker = threading.Thread(target=self._run, name="lamina-compress", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        ended = False  # the end marker was taken: do not wait for another one
        try:
            while (chunk := self._queue.get()) is not None:
                if self._error is None:
                    self._emit(self._compressor.compress(chunk))
            ended = True
            if self._error is None:
                self._emit(self._compressor.flush())
        except BaseException as exc:  # surfaced to the caller's thread in finish()
            self._error = exc
            while not ended and self._queue.get() is not None:
                pass

    def _emit(self, data: bytes) -> None:
        if data:
            if self._compression is not Compression.NONE:
                self._blob.update(data)
            self._out.write(data)
            self._csize += len(data)

    def _send(self, chunk: bytes) -> None:
        # diff_id is hashed on this thread; for an uncompressed layer it is the digest too.
        self._diff.update(chunk)
        self._usize += len(chunk)
        self._queue.put(chunk)
        if self._on_bytes is not None:
            self._on_bytes(len(chunk))
        if self._error is not None:
            raise self._error

    def write(self, data: bytes | bytearray | memoryview) -> int:
        buf = self._buf
        buf += data
        if len(buf) >= CHUNK:
            view = memoryview(buf)
            full = len(buf) - len(buf) % CHUNK
            for start in range(0, full, CHUNK):
                self._send(bytes(view[start : start + CHUNK]))
            view.release()
            del buf[:full]
        return len(data)

    def finish(self) -> StreamResult:
        if self._buf:
            self._send(bytes(self._buf))
            self._buf.clear()
        self._queue.put(None)
        self._worker.join()
        if self._error is not None:
            raise self._error
        return StreamResult(
            diff_id=Digest(self._diff.hexdigest()),
            uncompressed_size=self._usize,
            digest=Digest(self._blob.hexdigest()),
            size=self._csize,
        )

    def abort(self) -> None:
        """Stop the worker after a failure on the caller's side."""
        self._error = self._error or RuntimeError("aborted")
        self._queue.put(None)
        self._worker.join()
