"""The image configuration blob (OCI image-spec config.md)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import attrs

from lamina.errors import ParseError
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
    def from_json(cls, data: Any) -> ContainerConfig:
        """Parse the ``config`` object of someone's config blob; wrong types are a ParseError."""
        data = data or {}
        if not isinstance(data, dict):
            raise ParseError("config.config must be a JSON object")

        def seq(key: str) -> tuple[str, ...] | None:
            value = data.get(key)
            return None if value is None else _strings(value, key)

        labels = data.get("Labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise ParseError("config.Labels must map strings to strings")
        return cls(
            user=_string(data.get("User"), "User"),
            exposed_ports=_keys(data.get("ExposedPorts"), "ExposedPorts"),
            env=_strings(data.get("Env") or (), "Env"),
            entrypoint=seq("Entrypoint"),
            cmd=seq("Cmd"),
            volumes=_keys(data.get("Volumes"), "Volumes"),
            working_dir=_string(data.get("WorkingDir"), "WorkingDir"),
            labels=tuple(labels.items()),
            stop_signal=_string(data.get("StopSignal"), "StopSignal"),
            extra=_extra(data, _MODELLED),
        )


def _string(value: Any, key: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ParseError(f"config {key} must be a string")
    return value


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ParseError(f"config {key} must be a list of strings")
    return tuple(value)


def _keys(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ParseError(f"config {key} must be a JSON object")
    return tuple(value)


def _extra(data: dict[str, Any], modelled: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """Keys lamina does not model, as canonical JSON, so a round trip keeps them."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in data.items()
                        if k not in modelled and v is not None))


@attrs.frozen
class HistoryEntry:
    created: str
    created_by: str
    comment: str = ""
    empty_layer: bool = False
    author: str = ""

    @classmethod
    def from_json(cls, data: Any) -> HistoryEntry:
        if not isinstance(data, dict):
            raise ParseError("config history entries must be JSON objects")
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


_CONFIG_MODELLED = frozenset({"created", "architecture", "os", "variant", "config", "rootfs", "history"})


def _bad_diff_id(value: Any) -> Digest:
    raise ParseError(f"config diff_id {value!r} is not a digest string")


@attrs.frozen
class ConfigFile:
    platform: Platform
    created: str
    config: ContainerConfig
    diff_ids: tuple[Digest, ...]
    history: tuple[HistoryEntry, ...]
    # Top-level keys lamina does not model (author, os.version, docker_version, ...), kept
    # as canonical JSON by from_json so that reading and writing a config loses nothing.
    extra: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> ConfigFile:
        """Parse someone's config blob (image-spec config.md); malformed fields are a ParseError."""
        if not isinstance(data, dict):
            raise ParseError("an image config must be a JSON object")
        rootfs = data.get("rootfs")
        if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
            raise ParseError("the image config has no rootfs.diff_ids")
        history = data.get("history") or []
        if not isinstance(history, list):
            raise ParseError("config history must be a list")
        return cls(
            platform=Platform(_string(data.get("os"), "os"), _string(data.get("architecture"), "architecture"),
                              _string(data.get("variant"), "variant")),
            created=_string(data.get("created"), "created"),
            config=ContainerConfig.from_json(data.get("config")),
            diff_ids=tuple(Digest.parse(d) if isinstance(d, str) else _bad_diff_id(d) for d in rootfs["diff_ids"]),
            history=tuple(HistoryEntry.from_json(h) for h in history),
            extra=_extra(data, _CONFIG_MODELLED),
        )

    def layer_history(self) -> tuple[HistoryEntry, ...]:
        """The history entries that made a layer (not ``empty_layer`` ones), in layer order."""
        return tuple(h for h in self.history if not h.empty_layer)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"created": self.created} if self.created else {}
        out.update(architecture=self.platform.architecture, os=self.platform.os)
        if self.platform.variant:
            out["variant"] = self.platform.variant
        out["config"] = self.config.to_json()
        out["rootfs"] = {"type": "layers", "diff_ids": [str(d) for d in self.diff_ids]}
        out["history"] = [h.to_json() for h in self.history]
        for key, value in self.extra:
            out[key] = json.loads(value)
        return out

    def to_bytes(self) -> bytes:
        return canonical.dumps(self.to_json())
