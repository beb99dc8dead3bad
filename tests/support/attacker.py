"""A fake, hostile registry: small threaded HTTP(S) servers on 127.0.0.1 whose answers a test
scripts (realms and upload Locations on other ports, redirects, endless and slow bodies,
wrong digests), each recording every request's headers, so a test can prove where
credentials went. Every server stops itself when its ``with`` block ends.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import itertools
import json
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any


@dataclass
class Seen:
    """One request as the server received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False  # the whole Content-Length arrived

    @property
    def route(self) -> str:
        return self.path.split("?", 1)[0]


@dataclass
class Reply:
    """An answer. ``body`` may be an iterator (slow or endless); then, without ``length``,
    no Content-Length is sent and the body ends when the connection closes."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""
    length: int | None = None
    raw: Iterable[bytes] | None = None  # written as they are, status line and headers included


Handler = Callable[[Seen], "Reply | None"]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _any(self) -> None:
        fake = self.server.fake
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        with fake.lock:
            fake.requests.append(seen)
        length = int(self.headers.get("Content-Length") or 0)
        while len(seen.body) < length:
            try:
                data = self.rfile.read1(min(1 << 16, length - len(seen.body)))
            except OSError:
                data = b""
            if not data:
                self.close_connection = True
                return  # the client gave up mid-body: no answer
            seen.body += data
        seen.complete = True
        reply = fake.answer(seen) or Reply(404)
        self._reply(reply)

    def _reply(self, reply: Reply) -> None:
        fake = self.server.fake
        if reply.raw is not None:
            self.close_connection = True
            try:
                for piece in reply.raw:
                    if fake.stopping.is_set():
                        break
                    self.wfile.write(piece)
                    self.wfile.flush()
            except OSError:
                pass
            return
        body = reply.body
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        if isinstance(body, bytes | bytearray):
            self.send_header("Content-Length", str(reply.length if reply.length is not None else len(body)))
            pieces: Iterable[bytes] = [bytes(body)] if self.command != "HEAD" else []
        else:
            if reply.length is not None:
                self.send_header("Content-Length", str(reply.length))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            pieces = body
        try:
            self.end_headers()
            for piece in pieces:
                if fake.stopping.is_set():
                    break
                self.wfile.write(piece)
                self.wfile.flush()
                with fake.lock:
                    fake.sent += len(piece)
        except OSError:  # the client hung up, as it should on an endless body
            self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _any


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeServer
    context: ssl.SSLContext | None = None

    def finish_request(self, request: socket.socket, client_address: Any) -> None:  # type: ignore[override]
        request.settimeout(30)
        if self.context is not None:
            try:
                request = self.context.wrap_socket(request, server_side=True)
            except OSError:
                return
        self.RequestHandlerClass(request, client_address, self)

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up mid-answer is what these tests provoke."""


class FakeServer:
    """An HTTP(S) server on 127.0.0.1 answering with ``handler`` (None from it means 404)."""

    def __init__(self, handler: Handler | None = None, *, tls: tuple[Path, Path] | None = None) -> None:
        self.handler = handler
        self.requests: list[Seen] = []
        self.sent = 0  # body bytes written, summed over all answers
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._server.context = context
        self.port: int = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"fake-{self.port}")
        self._thread.start()

    def answer(self, seen: Seen) -> Reply | None:
        return self.handler(seen) if self.handler else None

    def authorizations(self) -> list[str]:
        return [r.headers["authorization"] for r in self.requests if "authorization" in r.headers]

    def count(self, method: str, fragment: str = "") -> int:
        return sum(1 for r in self.requests if r.method == method and fragment in r.route)

    def stop(self) -> None:
        self.stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class TokenService(FakeServer):
    """A Bearer realm: hands out ``token`` (to anyone, or only to ``require``d Basic credentials)."""

    def __init__(self, require: tuple[str, str] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.require = require
        self.token = "tok-" + hashlib.sha256(str(id(self)).encode()).hexdigest()[:16]

    def answer(self, seen: Seen) -> Reply | None:
        if self.require and seen.headers.get("authorization") != basic(*self.require):
            return Reply(401, {"Content-Type": "application/json"}, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
        return Reply(200, {"Content-Type": "application/json"}, json.dumps({"token": self.token, "expires_in": 300}).encode())


_UPLOAD = re.compile(r"^/upload/(\d+)$")
_BLOB = re.compile(r"^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})$")
_MANIFEST = re.compile(r"^/v2/(.+)/manifests/([^/]+)$")


class FakeRegistry(FakeServer):
    """Enough of the distribution API for lamina to push to and pull from. It verifies nothing
    (an attacker's registry need not); ``override`` answers first when it returns a Reply.

    Auth: ``basic`` demands those credentials on every /v2/ request; ``bearer`` (a
    TokenService) demands its token, naming its URL as the realm.
    """

    def __init__(self, *, basic_auth: tuple[str, str] | None = None, bearer: TokenService | None = None,
                 upload_base: str = "", **kw: Any) -> None:
        self.basic_auth = basic_auth
        self.bearer = bearer
        self.upload_base = upload_base  # where upload Locations point ("" : this server, relative)
        self.override: Handler | None = None
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[str, bytes]] = {}  # tag or digest -> (media type, bytes)
        self.uploads: dict[str, bytearray] = {}
        self.finished: list[str] = []  # digests of uploads completed with a PUT
        self._ids = itertools.count(1)
        super().__init__(**kw)

    def _denied(self, seen: Seen) -> Reply | None:
        got = seen.headers.get("authorization")
        if self.basic_auth and got != basic(*self.basic_auth):
            return Reply(401, {"WWW-Authenticate": 'Basic realm="fake"'})
        if self.bearer and got != f"Bearer {self.bearer.token}":
            challenge = f'Bearer realm="{self.bearer.url}/token",service="fake"'
            return Reply(401, {"WWW-Authenticate": challenge, "Content-Type": "application/json"},
                         b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}')
        return None

    def answer(self, seen: Seen) -> Reply | None:
        if self.override is not None:
            reply = self.override(seen)
            if reply is not None:
                return reply
        if seen.route.startswith("/v2/"):
            denied = self._denied(seen)
            if denied is not None:
                return denied
        return self.upload(seen) or self.serve(seen)

    def upload(self, seen: Seen) -> Reply | None:
        """The push side: uploads (POST, PATCH, PUT) and manifest PUTs."""
        if seen.method == "POST" and seen.route.endswith("/blobs/uploads/"):
            number = str(next(self._ids))
            self.uploads[number] = bytearray()
            return Reply(202, {"Location": f"{self.upload_base}/upload/{number}", "Range": "0-0"})
        match = _UPLOAD.match(seen.route)
        if match and match[1] in self.uploads:
            data = self.uploads[match[1]]
            data += seen.body
            if seen.method == "PATCH":
                return Reply(202, {"Location": f"{self.upload_base}/upload/{match[1]}", "Range": f"0-{len(data) - 1}"})
            if seen.method == "PUT":
                digest = seen.path.split("digest=", 1)[1] if "digest=" in seen.path else ""
                self.blobs[digest] = bytes(data)  # stored under the name it was given: no check
                self.finished.append(digest)
                return Reply(201, {"Location": f"/v2/x/blobs/{digest}", "Docker-Content-Digest": digest})
            if seen.method == "GET":
                return Reply(204, {"Range": f"0-{max(len(data) - 1, 0)}", "Location": f"{self.upload_base}/upload/{match[1]}"})
        match = _MANIFEST.match(seen.route)
        if match and seen.method == "PUT":
            kind = seen.headers.get("content-type", "")
            self.manifests[match[2]] = (kind, bytes(seen.body))
            self.manifests[digest_of(bytes(seen.body))] = (kind, bytes(seen.body))
            return Reply(201, {"Docker-Content-Digest": digest_of(bytes(seen.body))})
        return None

    def serve(self, seen: Seen) -> Reply | None:
        """The pull side: /v2/, blobs and manifests by tag or digest."""
        if seen.route == "/v2/":
            return Reply(200, {"Content-Type": "application/json"}, b"{}")
        match = _BLOB.match(seen.route)
        if match and seen.method in ("GET", "HEAD"):
            data = self.blobs.get(match[2])
            return Reply(200, {"Docker-Content-Digest": match[2]}, data) if data is not None else Reply(404)
        match = _MANIFEST.match(seen.route)
        if match and seen.method in ("GET", "HEAD") and match[2] in self.manifests:
            kind, data = self.manifests[match[2]]
            return Reply(200, {"Content-Type": kind, "Docker-Content-Digest": digest_of(data)}, data)
        return None

    def add_image(self, tag: str = "v1", layer: bytes = b"layer bytes " * 100) -> tuple[bytes, dict[str, Any]]:
        """Store a config, one layer and a manifest tagged ``tag``; returns (manifest bytes, manifest)."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        self.blobs[digest_of(config)] = config
        self.blobs[digest_of(layer)] = layer
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config), "size": len(config)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(layer), "size": len(layer)}]}
        data = json.dumps(manifest).encode()
        self.manifests[tag] = (manifest["mediaType"], data)
        self.manifests[digest_of(data)] = (manifest["mediaType"], data)
        return data, manifest


def trickle(piece: bytes, every: float, stop: threading.Event | None = None) -> Iterator[bytes]:
    """``piece`` again and again, one every ``every`` seconds, for ever (a slow loris)."""
    while stop is None or not stop.is_set():
        yield piece
        time.sleep(every)


def endless(piece: bytes = b"\0" * (1 << 16), limit: int = 256 << 20) -> Iterator[bytes]:
    """An endless body (bounded at ``limit`` bytes so a broken client cannot fill the disk)."""
    for _ in range(limit // len(piece)):
        yield piece


def cert_for(ca_pem: Path, name: str, directory: Path) -> tuple[Path, Path]:
    """A server certificate for DNS name ``name``, signed by the test CA beside ``ca_pem``."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    key, csr, cert, ext = (directory / f"{name}.{s}" for s in ("key", "csr", "pem", "ext"))
    ext.write_text(f"subjectAltName=DNS:{name}\nbasicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    for args in (["req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"],
                 ["x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_pem.parent / "ca.key"),
                  "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert)]):
        subprocess.run(["openssl", *args], capture_output=True, check=True)
    return cert, key
