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

The registry may be an attacker, or answer for one, so:

- credentials go only to the origin (scheme, host, port) they belong to: an upload
  ``Location`` or a redirect to another host gets no ``Authorization``, and a challenge
  from another host is answered with that host's own credentials, never this registry's;
- a Bearer realm in plain HTTP is refused for an HTTPS registry (unless it is loopback or
  ``--insecure-registry``), and so is a redirect from HTTPS down to HTTP;
- lamina follows redirects itself, at most 5, a body-carrying request only on 307/308;
- a body read whole (manifest, index, token, error) is capped at 4 MiB, whatever a
  descriptor claims; a blob body at its descriptor's size;
- every request has a total deadline beside the per-read timeout, so a server trickling
  one byte at a time cannot hold a build forever (``LAMINA_REGISTRY_DEADLINE`` seconds,
  default 300, plus one second per 64 KiB of a blob sent or received;
  ``LAMINA_REGISTRY_TIMEOUT``, default 60, bounds each connect, read and write).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from lamina.errors import AuthError, RegistryError, UsageError
from lamina.model.canonical import loads
from lamina.registry.auth import Credentials, TokenCache, lookup, parse_challenge

MAX_DOCUMENT = 4 << 20  # manifests, indexes, tokens, error bodies: a hard cap no descriptor can raise
MIN_RATE = 64 << 10  # bytes per second a blob transfer is granted on top of the deadline
REDIRECTS = 5
_READ = 1 << 20  # the most one socket read takes (Stream.read)
_WRITE = 64 << 10  # writes are cut to this size so the deadline is checked between them
_REDIRECT_CODES = (301, 302, 303, 307, 308)

__all__ = ["AuthError", "MAX_DOCUMENT", "Registry", "RegistryError", "describe_failure", "origin"]


def _number(name: str, default: float, *, positive: bool = False) -> float:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{name}={text!r}: expected a number") from None
    if value != value or value < 0 or (positive and value == 0) or value == float("inf"):
        raise UsageError(f"{name}={text!r}: must be a {'positive' if positive else 'non-negative'} number")
    return value


def printable(text: str, limit: int = 200) -> str:
    """Text a registry chose, made safe for one line of an error message (no control characters)."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


RETRIES = int(_number("LAMINA_REGISTRY_RETRIES", 5))
BACKOFF = _number("LAMINA_REGISTRY_BACKOFF", 0.5)


def _is_local(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1 : host.index("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _split_host(host: str) -> tuple[str, int]:
    """``host[:port]`` (``[v6]:port`` too) as a name and a port, 443 when none is given."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else 443
    name, colon, port = host.rpartition(":")
    return (name, int(port)) if colon and port.isdigit() else (host, 443)


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL, the port spelled out: what credentials are bound to."""
    import httpx

    u = httpx.URL(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    host = f"[{u.host}]" if ":" in u.host else u.host
    return f"{u.scheme}://{host}:{port}"


def _host_port(org: str) -> str:
    """``host[:port]`` as users and config.json name a registry (the default port left out)."""
    scheme, _, rest = org.partition("://")
    host, _, port = rest.rpartition(":")
    return host if port == ("443" if scheme == "https" else "80") else rest


def describe_failure(response: Any) -> str:
    """``HTTP 401 Unauthorized (UNAUTHORIZED: authentication required)`` from a registry answer."""
    text = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    try:
        errors = loads(response.content).get("errors") or []
    except (ValueError, AttributeError, UnicodeDecodeError):
        errors = []
    if not isinstance(errors, list):
        errors = []
    codes = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
    return printable(f"{text} ({'; '.join(codes)})" if codes else text, 500)


# ---- the total deadline: a per-thread end time that every socket operation respects

_deadline = threading.local()


def _arm(seconds: float) -> None:
    _deadline.end = time.monotonic() + seconds


def _extend(end: float) -> None:
    """Move this thread's deadline out to ``end`` (a ``time.monotonic()`` time), never in."""
    _deadline.end = max(getattr(_deadline, "end", end), end)


def _time_left() -> float | None:
    end: float | None = getattr(_deadline, "end", None)
    return None if end is None else end - time.monotonic()


def _deadline_passed() -> bool:
    left = _time_left()
    return left is not None and left <= 0


def _transport(context: ssl.SSLContext, max_connections: int, trust: Callable[[], None] = lambda: None) -> Any:
    """An httpx transport whose sockets give up when the calling thread's deadline passes.

    httpx times each read, write and connect, but nothing bounds their sum; a network backend
    that shortens every timeout to what is left of the deadline does. Every TLS handshake goes
    through its streams' ``start_tls``, which first calls ``trust`` (once): the trust store is
    in ``context`` before any certificate is checked against it.
    """
    import httpcore
    import httpx

    trusted: list[bool] = []
    trust_lock = threading.Lock()

    def load_trust(ssl_context: ssl.SSLContext) -> None:
        if ssl_context is not context:
            raise httpcore.ConnectError("a TLS handshake with another SSL context than lamina's")
        with trust_lock:
            if not trusted:
                trust()
                trusted.append(True)

    def budget(timeout: float | None) -> float | None:
        left = _time_left()
        if left is None:
            return timeout
        if left <= 0:
            raise httpcore.ReadTimeout("the request's total deadline passed")
        return left if timeout is None else min(timeout, left)

    class Stream(httpcore.NetworkStream):
        def __init__(self, inner: httpcore.NetworkStream) -> None:
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            # httpcore asks for 64 KiB at a time; what the socket holds beyond that is taken in
            # the same call (up to 1 MiB): a blob body then costs a tenth of the trips through
            # h11 and httpx, the CPU a pull spends besides hashing and inflating.
            return self._inner.read(max(max_bytes, _READ), budget(timeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            if len(buffer) <= _WRITE:
                return self._inner.write(buffer, budget(timeout))
            view = memoryview(buffer)  # slices of it, not copies: sockets send from any buffer
            for start in range(0, len(view), _WRITE):
                self._inner.write(view[start:start + _WRITE], budget(timeout))  # type: ignore[arg-type]

        def close(self) -> None:
            self._inner.close()

        def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                      timeout: float | None = None) -> httpcore.NetworkStream:
            load_trust(ssl_context)
            return Stream(self._inner.start_tls(ssl_context, server_hostname, budget(timeout)))

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):
        def __init__(self) -> None:
            self._inner = httpcore.SyncBackend()

        def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                        socket_options: Any = None) -> httpcore.NetworkStream:
            return Stream(self._inner.connect_tcp(host, port, budget(timeout), local_address, socket_options))

        def connect_unix_socket(self, path: str, timeout: float | None = None,
                                socket_options: Any = None) -> httpcore.NetworkStream:
            raise httpcore.ConnectError("lamina does not talk to registries over unix sockets")

        def sleep(self, seconds: float) -> None:
            time.sleep(seconds)

    transport = httpx.HTTPTransport(verify=context, trust_env=False)
    # httpx takes no network backend; its transport's pool is the one place to give it one
    # (httpx is pinned in pyproject.toml, and tests/registry checks the deadline holds).
    transport._pool = httpcore.ConnectionPool(ssl_context=context, max_connections=max_connections,
                                              network_backend=Backend())
    return transport


@attrs.define
class Registry:
    """A client for one registry host, shared by every thread of a push or pull."""

    host: str
    insecure: bool = False
    ca_file: str | None = None
    debug: Callable[[str], None] | None = None
    timeout: float = attrs.field(factory=lambda: _number("LAMINA_REGISTRY_TIMEOUT", 60, positive=True))
    deadline: float = attrs.field(factory=lambda: _number("LAMINA_REGISTRY_DEADLINE", 300, positive=True))
    _client: Any = None
    _tokens: TokenCache = attrs.field(factory=TokenCache)
    _creds: Credentials | None = None
    _creds_loaded: bool = False
    _others: dict[str, Credentials | None] = attrs.field(factory=dict)  # other origins' own credentials
    _auth: dict[tuple[str, tuple[str, ...]], str] = attrs.field(factory=dict)  # (origin, scopes) -> header
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _scheme: str | None = None

    @property
    def api_host(self) -> str:
        return "registry-1.docker.io" if self.host == "docker.io" else self.host

    @property
    def base(self) -> str:
        if self._scheme is None:
            self._scheme = self._probe() if (self.insecure or _is_local(self.host)) else "https"
        return f"{self._scheme}://{self.api_host}"

    def _probe(self) -> str:
        """Local and --insecure-registry hosts: HTTPS if they speak it (as docker does), else HTTP.

        The question is only whether the host completes a TLS handshake, so it is asked with a
        handshake that checks no certificate and sends nothing over it: a certificate that does
        not verify still means HTTPS (the first real request then says so, rather than lamina
        silently sending credentials in clear text), and the trust store is not loaded for a
        registry that turns out to speak plain HTTP.
        """
        import socket

        host, port = _split_host(self.api_host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection((host, port), timeout=min(self.timeout, 5)) as sock, \
                    context.wrap_socket(sock, server_hostname=host):
                return "https"
        except OSError:  # refused, timed out, or not TLS (ssl.SSLError is an OSError)
            return "http"

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import httpx

                # As ssl.create_default_context: certificates and host names checked. The system
                # store (and SSL_CERT_FILE) is loaded before the first handshake, not before a
                # plain-HTTP registry's first request (~50 ms); --ca-file at once, so a bad one
                # is said here.
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                if self.ca_file:
                    context.load_verify_locations(cafile=self.ca_file)
                trust = (lambda: None) if self.ca_file else (lambda: context.load_default_certs(ssl.Purpose.SERVER_AUTH))
                # identity: a body is capped as it is read, and a compressed one would grow past the cap
                self._client = httpx.Client(transport=_transport(context, 16, trust), timeout=httpx.Timeout(self.timeout),
                                            follow_redirects=False, trust_env=False,
                                            headers={"Accept-Encoding": "identity"})
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def use_credentials(self, creds: Credentials) -> None:
        """Use these credentials for this registry instead of looking them up (lamina login)."""
        self._creds, self._creds_loaded = creds, True

    def credentials(self) -> Credentials | None:
        if not self._creds_loaded:
            self._creds = lookup(self.host)
            self._creds_loaded = True
        return self._creds

    def _credentials_for(self, org: str) -> Credentials | None:
        """This registry's credentials for its own origin; any other origin only ever gets its own."""
        if org == origin(self.base):
            return self.credentials()
        if org not in self._others:
            self._others[org] = lookup(_host_port(org))
        return self._others[org]

    def _plain_ok(self, org: str) -> bool:
        """Whether plain HTTP is acceptable next to ``org``: loopback, or named --insecure-registry."""
        return _is_local(_host_port(org)) or (self.insecure and org == origin(self.base))

    # ---- auth

    def _authorize(self, challenge: str, scopes: tuple[str, ...], org: str) -> str:
        """The Authorization that answers ``challenge`` from ``org``, with ``org``'s own credentials."""
        scheme, params = parse_challenge(challenge)
        who = _host_port(org)
        creds = self._credentials_for(org)
        if scheme == "basic":
            if creds is None or not creds.username:
                raise AuthError(f"{who}: authentication required and no credentials found (try 'lamina login {who}')")
            return creds.basic()
        if scheme != "bearer" or not params.get("realm"):
            raise AuthError(f"{who}: unsupported authentication challenge {printable(scheme, 40)!r}")
        realm = self._check_realm(params["realm"], org)
        scope = " ".join(scopes) if scopes else params.get("scope", "")
        key = (org, realm, params.get("service", ""), scope)
        token = self._tokens.get(key)
        if token is None:
            token, expires = self._fetch_token(realm, params.get("service", ""), scope, creds, who)
            self._tokens.put(key, token, expires)
        return f"Bearer {token}"

    def _check_realm(self, realm: str, org: str) -> str:
        import httpx

        who = _host_port(org)
        try:
            url = httpx.URL(realm)
        except httpx.InvalidURL:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise AuthError(f"{who}: the token service {printable(realm)!r} is not an http(s) URL")
        if url.scheme == "http" and org.startswith("https:") and not self._plain_ok(org):
            raise AuthError(f"{who}: refusing the plain-HTTP token service {printable(realm)} of an HTTPS registry "
                            f"(it would see credentials and tokens in clear text; --insecure-registry {who} allows it)")
        return realm

    def _fetch_token(self, realm: str, service: str, scope: str, creds: Credentials | None, who: str) -> tuple[str, float]:
        import httpx

        realm_origin = origin(realm)
        query: dict[str, Any] = {"service": service}
        if scope:
            query["scope"] = scope.split(" ")
        if creds is not None and creds.identity_token:
            method, body = "POST", httpx.QueryParams({"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                                                      "service": service, "scope": scope, "client_id": "lamina"})
            url, headers, auth = realm, {"Content-Type": "application/x-www-form-urlencoded"}, None
            content: Callable[[], bytes] | None = lambda: str(body).encode()
        else:
            method, content = "GET", None
            url, headers = str(httpx.URL(realm).copy_merge_params(query)), {}
            auth = creds.basic() if creds is not None and creds.username else None
        try:  # within the deadline of the request that was challenged
            response, _ = self._send(method, url, what="get a token", headers=headers, body=content,
                                     auth_for=lambda o: auth if o == realm_origin else None)
            response = self._read(response, "get a token", strict=response.status_code == 200)
        except httpx.HTTPError as exc:
            reason = "no answer within the deadline" if _deadline_passed() else type(exc).__name__
            raise RegistryError(f"{who}: cannot reach the token service: {reason}") from None
        if response.status_code in (401, 403):
            whom = f"as {creds.username!r}" if creds and creds.username else "anonymously"
            raise AuthError(f"{who}: authentication failed {whom} ({describe_failure(response)})")
        if response.status_code != 200:
            raise RegistryError(f"{who}: token service answered {describe_failure(response)}")
        try:
            data = loads(response.content)
            token = data.get("token") or data.get("access_token")
            try:
                expires = float(data.get("expires_in") or 60)
            except OverflowError:  # an integer past a float's range: long, then
                expires = 86400.0
            expires = 86400.0 if expires >= 86400 else expires if expires > 0 else 60.0  # nan: 60 s; past a day: a day
        except (ValueError, AttributeError, TypeError, UnicodeDecodeError):
            raise RegistryError(f"{who}: the token service answered something that is not a token") from None
        if not token or not isinstance(token, str) or not token.isprintable():
            raise RegistryError(f"{who}: token service answered without a token")
        return token, expires

    # ---- requests

    def request(self, method: str, url: str, *, what: str, scopes: tuple[str, ...] = (),
                headers: dict[str, str] | None = None, body: Callable[[], Iterable[bytes] | bytes] | None = None,
                ok: Iterable[int] = (200,), retry: bool = True, stream: bool = False, size: int = 0) -> Any:
        """One logical request: redirects followed, auth challenges answered, transient failures retried.

        ``body`` is a factory so a retried or redirected request sends its bytes again from the start.
        With ``stream``, a successful response is returned unread: the caller iterates and closes it.
        ``size`` is the blob size sent, which lengthens the deadline (a download lengthens its own
        as bytes arrive: see download).
        """
        import httpx

        if not url.startswith(("http://", "https://")):
            url = self.base + url
        ok = tuple(ok)
        attempt = 0
        budget = self.deadline + max(size, 0) / MIN_RATE
        while True:
            _arm(budget)
            try:
                response = self._exchange(method, url, what, scopes, headers or {}, body, ok, stream)
            except httpx.TransportError as exc:
                if _deadline_passed():
                    raise RegistryError(f"{self.host}: {what}: no complete answer within {budget:.0f} s "
                                        "(LAMINA_REGISTRY_DEADLINE)") from None
                failure = f"{type(exc).__name__}: {printable(str(exc))}" if str(exc) else type(exc).__name__
                if "CERTIFICATE_VERIFY_FAILED" in failure:  # not transient: say so at once
                    raise RegistryError(f"{self.host}: {what}: TLS certificate not trusted ({exc}); "
                                        "use --ca-file or SSL_CERT_FILE") from None
                response = None
            except (httpx.HTTPError, httpx.InvalidURL) as exc:  # a URL or body httpx refuses: not transient
                raise RegistryError(f"{self.host}: {what}: {type(exc).__name__}: {printable(str(exc))}") from None
            else:
                if response.status_code in ok:
                    return response
                if response.status_code == 401:
                    creds = self.credentials()
                    who = f"as {creds.username!r}" if creds and creds.username else "without credentials"
                    raise AuthError(f"{self.host}: {what}: authentication failed {who} ({describe_failure(response)})")
                failure = describe_failure(response)
                if not (response.status_code == 429 or response.status_code >= 500):
                    raise RegistryError(f"{self.host}: {what}: {failure}")
            attempt += 1
            if not retry or attempt > RETRIES:
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                raise RegistryError(f"{self.host}: {what}: {failure}{tries}")
            time.sleep(BACKOFF * 2 ** (attempt - 1))

    def _exchange(self, method: str, url: str, what: str, scopes: tuple[str, ...], headers: dict[str, str],
                  body: Callable[[], Iterable[bytes] | bytes] | None, ok: tuple[int, ...], stream: bool) -> Any:
        """Send, answering each origin's challenge once (with that origin's credentials), then read."""
        challenged: set[str] = set()
        while True:
            response, final = self._send(method, url, what=what, headers=headers, body=body,
                                         auth_for=lambda o: self._auth.get((o, scopes)))
            org = origin(final)
            if response.status_code == 401 and org not in challenged and "www-authenticate" in response.headers:
                response.close()
                challenged.add(org)
                self._auth[(org, scopes)] = self._authorize(response.headers["www-authenticate"], scopes, org)
                continue
            if not (stream and response.status_code in ok):
                response = self._read(response, what, strict=response.status_code in ok)
            return response

    def _send(self, method: str, url: str, *, what: str, headers: dict[str, str],
              body: Callable[[], Iterable[bytes] | bytes] | None, auth_for: Callable[[str], str | None]) -> tuple[Any, str]:
        """One request, redirects followed here: each hop gets only the Authorization of its own origin."""
        import httpx

        client = self.client()
        for _ in range(REDIRECTS + 1):
            sent = dict(headers)
            auth = auth_for(origin(url))
            if auth:
                sent["Authorization"] = auth
            response = client.send(client.build_request(method, url, headers=sent, content=body() if body else None),
                                   stream=True)
            self._log(method, url, response.status_code)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECT_CODES or not location:
                return response, url
            response.close()
            try:
                target = str(httpx.URL(url).join(location))
            except httpx.InvalidURL:
                raise RegistryError(f"{self.host}: {what}: redirected to an invalid URL") from None
            if not target.startswith(("http://", "https://")):
                raise RegistryError(f"{self.host}: {what}: redirected to a URL that is not http(s)")
            if url.startswith("https:") and target.startswith("http:") and not self._plain_ok(origin(target)):
                raise RegistryError(f"{self.host}: {what}: redirected from HTTPS to plain HTTP ({_host_port(origin(target))}); refused")
            if response.status_code not in (307, 308) and method not in ("GET", "HEAD"):
                raise RegistryError(f"{self.host}: {what}: the registry answered {method} with a "
                                    f"{response.status_code} redirect (only 307 and 308 keep the request)")
            url = target
        raise RegistryError(f"{self.host}: {what}: more than {REDIRECTS} redirects")

    def _read(self, response: Any, what: str, *, strict: bool) -> Any:
        """Read a whole body, at most MAX_DOCUMENT bytes: over it is an error (``strict``) or cut."""
        import httpx

        declared = response.headers.get("content-length", "")
        if response.request.method == "HEAD":  # no body; its Content-Length is the blob's size
            declared = ""
        try:
            if strict and declared.isdigit() and int(declared) > MAX_DOCUMENT:
                raise RegistryError(f"{self.host}: {what}: the answer is {declared} bytes, over the {MAX_DOCUMENT >> 20} MiB limit")
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > MAX_DOCUMENT:
                    if strict:
                        raise RegistryError(f"{self.host}: {what}: the answer is over the {MAX_DOCUMENT >> 20} MiB limit")
                    del data[MAX_DOCUMENT:]
                    break
        finally:
            response.close()
        dropped = ("content-encoding", "transfer-encoding") + (() if response.request.method == "HEAD" else ("content-length",))
        kept = {k: v for k, v in response.headers.items() if k.lower() not in dropped}  # a HEAD keeps the blob's size
        return httpx.Response(response.status_code, headers=kept, content=bytes(data), request=response.request)

    def download(self, url: str, *, what: str, scopes: tuple[str, ...], size: int) -> Iterator[bytes]:
        """A blob's body, never more than its descriptor's ``size`` bytes (more is an error, not stored).

        A connection that drops mid-body is resumed where it stopped with ``Range: bytes=N-``
        (a bounded number of times), so a flaky link costs the lost bytes, not the whole blob.
        A registry that ignores the Range and answers 200 is read from the start again, its
        first N bytes dropped. The caller hashes what is yielded: one unbroken byte stream.
        """
        import httpx

        got = 0
        drops = 0
        while True:
            headers = {"Range": f"bytes={got}-"} if got else None
            # The deadline grows with the bytes that arrive (MIN_RATE each second on top of the
            # base one), not with the size the manifest claims: a lie of 2**40 bytes, trickled,
            # would otherwise be waited on for months.
            start, base = time.monotonic(), got
            response = self.request("GET", url, what=what, scopes=scopes, stream=True,
                                    headers=headers, ok=(200, 206) if got else (200,))
            try:
                skip = 0
                if got and response.status_code == 206:
                    answered = response.headers.get("content-range", "").strip()
                    if not answered.startswith(f"bytes {got}-"):
                        raise RegistryError(f"{self.host}: {what}: asked for bytes from {got}, the registry "
                                            f"sent {printable(answered, 60) or 'no Content-Range'}")
                elif got:
                    skip = got  # Range ignored: the whole body again
                declared = response.headers.get("content-length", "")[:20]  # int() of 5,000 digits raises
                if declared.isdigit() and int(declared) + (got - skip) > size:
                    raise RegistryError(f"{self.host}: {what}: the registry sends {declared} bytes for a blob of {size}")
                for chunk in response.iter_bytes():  # as read: a 1 MiB chunker would lose its partial buffer on a drop
                    if skip:
                        dropped = min(skip, len(chunk))
                        chunk, skip = chunk[dropped:], skip - dropped
                        if not chunk:
                            continue
                    got += len(chunk)
                    if got > size:
                        raise RegistryError(f"{self.host}: {what}: the registry sent more than the blob's {size} bytes")
                    _extend(start + self.deadline + (got - base) / MIN_RATE)
                    yield chunk
                return
            except httpx.TransportError as exc:
                if _deadline_passed():
                    raise RegistryError(f"{self.host}: {what}: not complete within the deadline (LAMINA_REGISTRY_DEADLINE)") from None
                drops += 1
                if drops > RETRIES or got >= size:
                    raise RegistryError(f"{self.host}: {what}: {type(exc).__name__}: {printable(str(exc))}") from None
                if self.debug is not None:
                    self.debug(f"{what}: the connection dropped after {got} of {size} bytes; resuming there")
            except httpx.HTTPError as exc:
                raise RegistryError(f"{self.host}: {what}: {type(exc).__name__}: {printable(str(exc))}") from None
            finally:
                response.close()

    def _log(self, method: str, url: str, status: int) -> None:
        if self.debug is not None:
            path = url.split("?", 1)[0]  # query strings may carry upload state; never credentials
            self.debug(f"{method} {path} -> {status}")
