"""Hard size limits on documents lamina parses whole (JSON, TOML): the one place they live.

A document is read into memory to be parsed, so a ``/dev/zero`` config or a 1.5 GB
"manifest" must stop at a cap, and a cap the document itself (or its descriptor) could
raise would be no cap: these are constants.
"""

from __future__ import annotations

from typing import BinaryIO

MAX_MANIFEST = 4 << 20  # manifests, indexes, index.json, manifest.json: containerd's limit
MAX_CONFIG = 16 << 20  # image configs: a long history is legitimate
MAX_SPEC = 4 << 20  # lamina.toml and lamina.lock


class TooLarge(Exception):
    """Raised by read_limited; callers turn it into their own error naming the file."""


def read_limited(f: BinaryIO, cap: int) -> bytes:
    """The whole of ``f``, or TooLarge once more than ``cap`` bytes have been read."""
    data = f.read(cap + 1)
    if len(data) > cap:
        raise TooLarge(f"larger than {cap >> 20} MiB")
    return data
