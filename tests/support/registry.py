"""A real CNCF distribution registry on 127.0.0.1, and a proxy in front of it that counts
requests, injects faults and can demand Bearer tokens (a token service of its own)."""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import secrets
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DistributionRegistry:
    """``docker-registry serve`` with its own storage; optional htpasswd Basic auth over TLS."""

    def __init__(self, binary: str, *, htpasswd: Path | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lamina-registry-"))
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        config = [
            "version: 0.1",
            "log: {level: info}",
            f"storage: {{filesystem: {{rootdirectory: {self.dir / 'data'}}}, delete: {{enabled: true}}}}",
            f"http: {{addr: '{self.host}'" + (f", tls: {{certificate: {tls[0]}, key: {tls[1]}}}" if tls else "") + "}",
        ]
        if htpasswd is not None:
            config.append(f"auth: {{htpasswd: {{realm: lamina-test, path: {htpasswd}}}}}")
        (self.dir / "config.yml").write_text("\n".join(config) + "\n")
        self.log = open(self.dir / "registry.log", "wb")
        self.proc = subprocess.Popen([binary, "serve", str(self.dir / "config.yml")], stdout=self.log, stderr=self.log)
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"registry exited: {(self.dir / 'registry.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("registry did not start in 30 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self) -> None:
        proxy = self.server.proxy
        path = self.path
        with proxy.lock:
            proxy.requests.append((self.command, path.split("?")[0], path))
            fault = proxy.faults.pop(0) if proxy.faults and proxy._matches(self.command, path) else None
        if path.startswith("/token"):
            return self._token()
        if proxy.bearer is not None and not self._authorized():
            self.rfile.read(int(self.headers.get("Content-Length") or 0))  # drain, as registries do
            scope = proxy.scope_for(path)
            challenge = f'Bearer realm="http://{proxy.host}/token",service="lamina-test",scope="{scope}"'
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}).encode()
            return self._send(401, body, {"WWW-Authenticate": challenge, "Content-Type": "application/json"})
        length = int(self.headers.get("Content-Length") or 0)
        if isinstance(fault, threading.Event):  # held until the test sets it, then forwarded
            fault.wait(60)
        if fault == "drop":
            self.rfile.read(min(length, 1 << 16))  # take part of the upload, then hang up
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if isinstance(fault, int):
            self.rfile.read(length)
            body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "injected failure"}]}).encode()
            return self._send(fault, body, {"Content-Type": "application/json"})
        upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
        upstream.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
        for key, value in self.headers.items():
            if key.lower() not in ("host", "authorization", "connection"):
                upstream.putheader(key, value)
        upstream.putheader("Host", proxy.host)
        upstream.endheaders()
        remaining = length
        while remaining:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            upstream.send(chunk)
            remaining -= len(chunk)
        response = upstream.getresponse()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("connection", "transfer-encoding"):
                self.send_header(key, value)
        data = response.read() if self.command != "HEAD" else b""
        if response.getheader("Content-Length") is None:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    def _authorized(self) -> bool:
        value = self.headers.get("Authorization", "")
        return value.startswith("Bearer ") and value[7:] in self.server.proxy.tokens

    def _token(self) -> None:
        proxy = self.server.proxy
        user, password = proxy.bearer  # type: ignore[misc]
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}).encode()
            return self._send(401, body, {"Content-Type": "application/json"})
        token = secrets.token_hex(16)
        with proxy.lock:
            proxy.tokens.add(token)
            proxy.tokens_issued += 1
        self._send(200, json.dumps({"token": token, "expires_in": 300}).encode(), {"Content-Type": "application/json"})

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward


class _ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    proxy: Proxy


class Proxy:
    """Forwards to a registry; ``requests`` records (method, path, full path) of every request."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.server = _ProxyServer(("127.0.0.1", 0), _Handler)
        self.server.proxy = self
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.requests: list[tuple[str, str, str]] = []
        self.faults: list[Any] = []
        self.fault_filter: tuple[str, str] | None = None
        self.bearer: tuple[str, str] | None = None
        self.tokens: set[str] = set()
        self.tokens_issued = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _matches(self, method: str, path: str) -> bool:
        if self.fault_filter is None:
            return True
        want_method, fragment = self.fault_filter
        return method == want_method and fragment in path

    @staticmethod
    def scope_for(path: str) -> str:
        parts = path.split("/")
        if len(parts) > 3 and parts[1] == "v2":
            name = "/".join(parts[2:parts.index("blobs") if "blobs" in parts else parts.index("manifests") if "manifests" in parts else len(parts)])
            return f"repository:{name}:pull,push"
        return ""

    def count(self, method: str, fragment: str = "") -> int:
        return sum(1 for m, p, _ in self.requests if m == method and fragment in p)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.faults.clear()
            self.fault_filter = None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
