"""Content digests (``sha256:<hex>``), the names of every blob."""

from __future__ import annotations

import hashlib
import re

import attrs

from lamina.errors import ParseError

_HEX = re.compile(r"^[a-f0-9]{64}$")


@attrs.frozen(order=True)
class Digest:
    """A sha256 digest; the only algorithm lamina writes."""

    hex: str
    algorithm: str = "sha256"

    @classmethod
    def parse(cls, text: str) -> Digest:
        algorithm, sep, hexpart = text.partition(":")
        if not sep or algorithm != "sha256" or not _HEX.match(hexpart):
            raise ParseError(f"not a sha256 digest: {text!r}")
        return cls(hexpart)

    @classmethod
    def of_bytes(cls, data: bytes) -> Digest:
        return cls(hashlib.sha256(data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"
