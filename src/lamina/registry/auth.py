"""Credentials and challenges, as docker and crane do them.

Where credentials come from, first match wins: ``LAMINA_REGISTRY_USERNAME`` and
``LAMINA_REGISTRY_PASSWORD``, only for the one registry named by ``LAMINA_REGISTRY_HOST``
(host[:port]; without it they are refused, so CI secrets never reach a base image's
registry), then ``$DOCKER_CONFIG/config.json``
(default ``~/.docker/config.json``): ``credHelpers[host]``, then ``auths[host]`` (``auth``
or ``identitytoken``), then ``credsStore``. Helpers are run as ``docker-credential-NAME get``
with the host on stdin, as the docker CLI does. Secrets never reach a message or a log.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import attrs

from lamina.errors import AuthError, OutputError

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@attrs.frozen(repr=False)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""

    def __repr__(self) -> str:  # never print a secret, even by accident
        return f"Credentials(username={self.username!r}, password=***)"

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def config_path() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"


def _load_config() -> dict[str, Any]:
    path = config_path()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AuthError(f"cannot read {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def _keys(host: str) -> tuple[str, ...]:
    if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        return DOCKER_HUB_KEYS
    return (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/")


def _helper(name: str, host: str) -> Credentials | None:
    program = f"docker-credential-{name}"
    try:
        res = subprocess.run([program, "get"], input=host, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise AuthError(f"credential helper {program} is not on PATH (named in {config_path()})") from None
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {program} did not answer within 60 s") from None
    if res.returncode != 0:
        if "credentials not found" in (res.stdout + res.stderr).lower():
            return None
        raise AuthError(f"credential helper {program} failed for {host} (exit {res.returncode})")
    try:
        data = json.loads(res.stdout)
    except json.JSONDecodeError:
        raise AuthError(f"credential helper {program} answered something that is not JSON") from None
    user, secret = data.get("Username", ""), data.get("Secret", "")
    if user == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(user, secret)


def same_registry(a: str, b: str) -> bool:
    """Whether two spellings name one registry: host and port exactly, Docker Hub's aliases alike."""
    def norm(text: str) -> str:
        text = text.strip().lower().removeprefix("https://").removeprefix("http://").split("/", 1)[0]
        return "docker.io" if text in ("docker.io", "registry-1.docker.io", "index.docker.io") else text

    return norm(a) == norm(b)


def _from_env(host: str) -> Credentials | None:
    user = os.environ.get("LAMINA_REGISTRY_USERNAME")
    password = os.environ.get("LAMINA_REGISTRY_PASSWORD")
    if not user or password is None:
        return None
    scope = os.environ.get("LAMINA_REGISTRY_HOST", "")
    if not scope.strip():
        raise AuthError("LAMINA_REGISTRY_USERNAME is set but LAMINA_REGISTRY_HOST is not: "
                        "name the registry (host[:port]) the credentials are for")
    return Credentials(user, password) if same_registry(scope, host) else None


def lookup(host: str) -> Credentials | None:
    """The credentials for ``host`` (host[:port] exactly), from the first source that has them."""
    env = _from_env(host)
    if env is not None:
        return env
    config = _load_config()
    keys = _keys(host)
    helpers = config.get("credHelpers") or {}
    for key in keys:
        if key in helpers:
            return _helper(str(helpers[key]), host)
    auths = config.get("auths") or {}
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict):
            if entry.get("identitytoken"):
                return Credentials(identity_token=str(entry["identitytoken"]))
            if entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise AuthError(f"{config_path()}: the auth entry for {key} is not base64 user:password") from None
                return Credentials(user, password)
            if entry.get("username"):
                return Credentials(str(entry["username"]), str(entry.get("password", "")))
    if config.get("credsStore"):
        return _helper(str(config["credsStore"]), host)
    return None


def save_login(host: str, username: str, password: str) -> Path:
    """Write (or replace) auths[host] in config.json, atomically and readable by the owner only."""
    from lamina.sinks.atomic import atomic_file

    path = config_path()
    config = _load_config()
    config.setdefault("auths", {})[host] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    with atomic_file(path) as out:
        out.write(json.dumps(config, indent=2).encode() + b"\n")
    os.chmod(path, 0o600)
    return path


_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…",scope="…"`` → ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _PARAM.finditer(rest)}
    return scheme.lower(), params


TokenKey = tuple[str, str, str, str]  # (origin that challenged, realm, service, scope)


@attrs.define
class TokenCache:
    """Bearer tokens per (challenging origin, realm, service, scope), reused until shortly before they expire.

    The origin is part of the key: a token fetched with one registry's credentials is never
    handed to another host that names the same realm.
    """

    tokens: dict[TokenKey, tuple[str, float]] = attrs.field(factory=dict)

    def get(self, key: TokenKey) -> str | None:
        hit = self.tokens.get(key)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        return None

    def put(self, key: TokenKey, token: str, expires_in: float) -> None:
        self.tokens[key] = (token, time.monotonic() + max(expires_in - 10, 1))
