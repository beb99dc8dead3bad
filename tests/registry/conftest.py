"""What every in-process registry test starts from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.registry import client


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An empty docker config and cache, no credentials or cache repo in the environment,
    one quick retry (a test file that needs other retries overrides this fixture)."""
    for name in list(os.environ):
        if name.startswith(("LAMINA_REGISTRY_", "LAMINA_CACHE_REPO")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(client, "RETRIES", 1)
    monkeypatch.setattr(client, "BACKOFF", 0.01)
    return monkeypatch
