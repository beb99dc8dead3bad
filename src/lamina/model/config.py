"""The image configuration blob (OCI image-spec config.md)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import attrs

from lamina.model import canonical
from lamina.model.digest import Digest
from lamina.model.platform import Platform


def rfc3339(epoch: int) -> str:
    """The one place a timestamp is formatted: UTC, whole seconds, 'Z' suffix."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_MODELLED = frozenset(
    {"User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels", "StopSignal"}
)


@attrs.frozen
class ContainerConfig:
    """What the runtime uses: the ``config`` object of the config blob."""

    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    stop_signal: str = ""
    # Keys lamina does not model (Healthcheck, Shell, ArgsEscaped, ...), kept from a base as
    # canonical JSON so they pass through unchanged.
    extra: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in sorted(self.exposed_ports)}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.volumes:
            out["Volumes"] = {v: {} for v in sorted(self.volumes)}
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(sorted(self.labels))
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        for key, value in self.extra:
            out[key] = json.loads(value)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ContainerConfig:
        data = data or {}

        def seq(key: str) -> tuple[str, ...] | None:
            value = data.get(key)
            return None if value is None else tuple(value)

        return cls(
            user=data.get("User") or "",
            exposed_ports=tuple(data.get("ExposedPorts") or {}),
            env=tuple(data.get("Env") or ()),
            entrypoint=seq("Entrypoint"),
            cmd=seq("Cmd"),
            volumes=tuple(data.get("Volumes") or {}),
            working_dir=data.get("WorkingDir") or "",
            labels=tuple((data.get("Labels") or {}).items()),
            stop_signal=data.get("StopSignal") or "",
            extra=tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in data.items() if k not in _MODELLED and v is not None)),
        )


@attrs.frozen
class HistoryEntry:
    created: str
    created_by: str
    comment: str = ""
    empty_layer: bool = False
    author: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HistoryEntry:
        return cls(
            created=str(data.get("created") or ""),
            created_by=str(data.get("created_by") or ""),
            comment=str(data.get("comment") or ""),
            empty_layer=bool(data.get("empty_layer")),
            author=str(data.get("author") or ""),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.created:
            out["created"] = self.created
        if self.author:
            out["author"] = self.author
        out["created_by"] = self.created_by
        if self.comment:
            out["comment"] = self.comment
        if self.empty_layer:
            out["empty_layer"] = True
        return out


@attrs.frozen
class ConfigFile:
    platform: Platform
    created: str
    config: ContainerConfig
    diff_ids: tuple[Digest, ...]
    history: tuple[HistoryEntry, ...]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "created": self.created,
            "architecture": self.platform.architecture,
            "os": self.platform.os,
        }
        if self.platform.variant:
            out["variant"] = self.platform.variant
        out["config"] = self.config.to_json()
        out["rootfs"] = {"type": "layers", "diff_ids": [str(d) for d in self.diff_ids]}
        out["history"] = [h.to_json() for h in self.history]
        return out

    def to_bytes(self) -> bytes:
        return canonical.dumps(self.to_json())
