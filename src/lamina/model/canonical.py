"""Canonical JSON bytes: the same value always gives the same bytes, hence the same digest."""

from __future__ import annotations

import json
from typing import Any


def dumps(value: Any) -> bytes:
    """Compact JSON in the key order the caller built, UTF-8, no trailing newline.

    Key order is fixed by the model classes (spec order, as Go's encoding/json
    writes struct fields), so no sort is needed; map-valued fields (labels, env
    sets) are sorted where they are built.
    """
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def loads(data: bytes | str) -> Any:
    """JSON a stranger wrote (a registry's answer, an archive's or a cache entry's document): any
    way it can fail to parse is a ValueError, including nesting past Python's recursion limit
    (json raises RecursionError; Go's encoding/json, which registries run, accepts 10,000
    levels) and, as json itself, bad UTF-8 and integers past 4,300 digits."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
