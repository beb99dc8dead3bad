"""The porcelain the CLI calls: push a plan to a reference, log in."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from lamina.errors import UsageError
from lamina.model import Reference
from lamina.registry.options import Options
from lamina.registry.push import PushPlan, Pusher, PushStats


@attrs.frozen
class Pushed:
    reference: str  # name@sha256:…
    stats: PushStats


def push(plan: PushPlan, target: str, options: Options) -> Pushed:
    ref = Reference.parse(target)
    if ref.digest and ref.digest != str(plan.top.digest):
        raise UsageError(f"cannot push to {target}: the image's digest is {plan.top.digest}")
    registry = options.registry(ref.registry)
    try:
        pusher = Pusher(registry, ref.repository, plan, chunk_size=options.chunk_size, progress=options.progress)
        digest = pusher.run(ref)
    finally:
        registry.close()
    return Pushed(f"{ref.name}@{digest}", pusher.stats)


def login(host: str, username: str, password: str, options: Options) -> str:
    """Check the credentials against the registry (GET /v2/), then save them in config.json."""
    from lamina.registry.auth import Credentials, save_login

    registry = options.registry(host)
    registry.use_credentials(Credentials(username, password))
    try:
        registry.request("GET", "/v2/", what="log in", ok=(200,))
    finally:
        registry.close()
    return str(save_login(host, username, password))


def parse_size(text: str) -> int:
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    raw = text.strip().lower().removesuffix("b").removesuffix("i")
    number, unit = (raw[:-1], raw[-1]) if raw and raw[-1] in units else (raw, "")
    try:
        value = int(number) * units[unit]
    except (ValueError, KeyError):
        raise UsageError(f"bad size {text!r}: expected bytes, or a number with K, M or G") from None
    if value <= 0:
        raise UsageError(f"bad size {text!r}: must be positive")
    return value


__all__ = ["Options", "Pushed", "login", "parse_size", "push", "Sequence"]
