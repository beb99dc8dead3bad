"""One registry, spoken to over HTTP(S): scheme choice, TLS, timeouts, retries, auth.

Why httpx: its Client is thread-safe (lamina pushes several blobs at once), every request
has a timeout by default, it takes an ``ssl.SSLContext`` directly (so the system trust
store, ``SSL_CERT_FILE`` and ``--ca-file`` all apply), and it streams request bodies from
iterators with an explicit Content-Length. requests would do too; it needs an adapter for
the SSL context and has no default timeout. Imported only when a registry is used.

Plain HTTP is used only for localhost, 127.0.0.0/8 and ::1, or hosts named with
``--insecure-registry``. Connection errors, 429 and 5xx are retried with exponential
backoff, a bounded number of times; then the error names the registry, what was being
done, the HTTP status and the registry's own error code.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from lamina.errors import LaminaError
from lamina.registry.auth import AuthError, Credentials, TokenCache, lookup, parse_challenge

RETRIES = int(os.environ.get("LAMINA_REGISTRY_RETRIES", "5"))
BACKOFF = float(os.environ.get("LAMINA_REGISTRY_BACKOFF", "0.5"))
TIMEOUT = float(os.environ.get("LAMINA_REGISTRY_TIMEOUT", "60"))


class RegistryError(LaminaError):
    """The registry refused, failed, or could not be reached."""


def _is_local(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1 : host.index("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def describe_failure(response: Any) -> str:
    """``HTTP 401 Unauthorized (UNAUTHORIZED: authentication required)`` from a registry answer."""
    text = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    try:
        errors = response.json().get("errors") or []
    except (json.JSONDecodeError, ValueError, AttributeError):
        errors = []
    codes = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
    return f"{text} ({'; '.join(codes)})" if codes else text


@attrs.define
class Registry:
    """A client for one registry host, shared by every thread of a push or pull."""

    host: str
    insecure: bool = False
    ca_file: str | None = None
    debug: Callable[[str], None] | None = None
    _client: Any = None
    _tokens: TokenCache = attrs.field(factory=TokenCache)
    _creds: Credentials | None = None
    _creds_loaded: bool = False
    _basic: bool = False
    _last_auth: dict[tuple[str, ...], str] = attrs.field(factory=dict)

    @property
    def api_host(self) -> str:
        return "registry-1.docker.io" if self.host == "docker.io" else self.host

    _scheme: str | None = None

    @property
    def base(self) -> str:
        if self._scheme is None:
            self._scheme = self._probe() if (self.insecure or _is_local(self.host)) else "https"
        return f"{self._scheme}://{self.api_host}"

    def _probe(self) -> str:
        """Local and --insecure-registry hosts: HTTPS if they speak it (as docker does), else HTTP.

        A certificate that does not verify still means HTTPS: the error then says so, rather
        than lamina silently sending credentials in clear text.
        """
        import httpx

        try:
            self.client().get(f"https://{self.api_host}/v2/", timeout=5)
            return "https"
        except httpx.TransportError as exc:
            return "https" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else "http"

    def client(self) -> Any:
        if self._client is None:
            import httpx

            context = ssl.create_default_context(cafile=self.ca_file)  # system store + SSL_CERT_FILE
            self._client = httpx.Client(verify=context, timeout=httpx.Timeout(TIMEOUT), follow_redirects=True,
                                        limits=httpx.Limits(max_connections=16), trust_env=False)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def credentials(self) -> Credentials | None:
        if not self._creds_loaded:
            self._creds = lookup(self.host)
            self._creds_loaded = True
        return self._creds

    # ---- auth

    def _authorize(self, challenge: str, scopes: tuple[str, ...]) -> str:
        scheme, params = parse_challenge(challenge)
        creds = self.credentials()
        if scheme == "basic":
            if creds is None or not creds.username:
                raise AuthError(f"{self.host}: authentication required and no credentials found (try 'lamina login {self.host}')")
            self._basic = True
            return creds.basic()
        if scheme != "bearer" or "realm" not in params:
            raise AuthError(f"{self.host}: unsupported authentication challenge {scheme!r}")
        scope = " ".join(scopes) if scopes else params.get("scope", "")
        key = (params["realm"], params.get("service", ""), scope)
        token = self._tokens.get(key)
        if token is None:
            token, expires = self._fetch_token(params, scope, creds)
            self._tokens.put(key, token, expires)
        return f"Bearer {token}"

    def _fetch_token(self, params: dict[str, str], scope: str, creds: Credentials | None) -> tuple[str, float]:
        realm = params["realm"]
        query: dict[str, Any] = {"service": params.get("service", "")}
        if scope:
            query["scope"] = scope.split(" ")
        try:
            if creds is not None and creds.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                        "service": query["service"], "scope": scope, "client_id": "lamina"}
                response = self.client().post(realm, data=form)
            else:
                headers = {"Authorization": creds.basic()} if creds is not None and creds.username else {}
                response = self.client().get(realm, params=query, headers=headers)
        except Exception as exc:  # httpx.HTTPError: keep the type out of the import-time path
            raise RegistryError(f"{self.host}: cannot reach the token service: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            who = f"as {creds.username!r}" if creds and creds.username else "anonymously"
            raise AuthError(f"{self.host}: authentication failed {who} ({describe_failure(response)})")
        if response.status_code != 200:
            raise RegistryError(f"{self.host}: token service answered {describe_failure(response)}")
        data = response.json()
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RegistryError(f"{self.host}: token service answered without a token")
        return str(token), float(data.get("expires_in") or 60)

    # ---- requests

    def request(self, method: str, url: str, *, what: str, scopes: tuple[str, ...] = (),
                headers: dict[str, str] | None = None, body: Callable[[], Iterable[bytes] | bytes] | None = None,
                ok: Iterable[int] = (200,), retry: bool = True, stream: bool = False) -> Any:
        """One logical request: auth challenges answered, transient failures retried.

        ``body`` is a factory so a retried request sends its bytes again from the start.
        With ``stream``, a successful response is returned unread: the caller iterates and closes it.
        """
        import httpx

        if not url.startswith("http"):
            url = self.base + url
        ok = tuple(ok)
        # Reuse what answered the last challenge for these scopes, so bodies are not sent twice.
        auth: str | None = self._last_auth.get(scopes)
        challenged = False
        attempt = 0
        while True:
            sent = dict(headers or {})
            if auth:
                sent["Authorization"] = auth
            try:
                client = self.client()
                response = client.send(client.build_request(method, url, headers=sent, content=body() if body else None),
                                       stream=True)
                if not (stream and response.status_code in ok):
                    response.read()
                    response.close()
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if "CERTIFICATE_VERIFY_FAILED" in failure:  # not transient: say so at once
                    raise RegistryError(f"{self.host}: {what}: TLS certificate not trusted ({exc}); "
                                        "use --ca-file or SSL_CERT_FILE") from None
                response = None
            else:
                self._log(method, url, response.status_code)
                if response.status_code == 401 and not challenged and "www-authenticate" in response.headers:
                    challenged = True
                    auth = self._authorize(response.headers["www-authenticate"], scopes)
                    self._last_auth[scopes] = auth
                    continue
                if response.status_code == 401:
                    creds = self.credentials()
                    who = f"as {creds.username!r}" if creds and creds.username else "without credentials"
                    raise AuthError(f"{self.host}: {what}: authentication failed {who} ({describe_failure(response)})")
                if response.status_code in ok:
                    return response
                failure = describe_failure(response)
                if not (response.status_code == 429 or response.status_code >= 500):
                    raise RegistryError(f"{self.host}: {what}: {failure}")
            attempt += 1
            if not retry or attempt > RETRIES:
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                raise RegistryError(f"{self.host}: {what}: {failure}{tries}")
            time.sleep(BACKOFF * 2 ** (attempt - 1))

    def _log(self, method: str, url: str, status: int) -> None:
        if self.debug is not None:
            path = url.split("?", 1)[0]  # query strings may carry upload state; never credentials
            self.debug(f"{method} {path} -> {status}")

