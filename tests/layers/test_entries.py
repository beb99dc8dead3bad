import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lamina.errors import UnsafePathError
from lamina.layers.entries import normalize, parents


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("./a//b/", "a/b"), ("/etc/ssl/certs/", "etc/ssl/certs"), ("/", ""), (".", ""), ("a/../b", "b"), ("a/./b/.", "a/b")],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize("raw", ["..", "../etc/passwd", "a/../../b", "/../x"])
def test_escapes_are_refused(raw: str) -> None:
    with pytest.raises(UnsafePathError, match="outside the image root"):
        normalize(raw, what="entry")


@given(st.lists(st.sampled_from(["a", "b", ".", "..", "", "c.d"]), max_size=8).map("/".join))
def test_normalize_agrees_with_posixpath_or_refuses(raw: str) -> None:
    try:
        out = normalize(raw)
    except UnsafePathError:
        # Refused exactly when the path climbs above its start at some point.
        depth, low = 0, 0
        for part in raw.split("/"):
            depth += -1 if part == ".." else (0 if part in ("", ".") else 1)
            low = min(low, depth)
        assert low < 0
        return
    expected = posixpath.normpath("/" + raw).lstrip("/")
    assert out == ("" if expected in (".", "") else expected)
    assert not out.startswith("/") and ".." not in out.split("/")


def test_parents_outermost_first() -> None:
    assert parents("a/b/c") == ["a", "a/b"]
    assert parents("a") == []
