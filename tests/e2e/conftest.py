"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.registry import DistributionRegistry
from support.tools import require


@pytest.fixture(scope="module")
def registry() -> Iterator[DistributionRegistry]:
    """A private distribution registry on 127.0.0.1 for one module's tests, stopped after them
    (modules that watch the traffic put their own, behind a proxy, in its place)."""
    server = DistributionRegistry(require("docker-registry"))
    yield server
    server.stop()
