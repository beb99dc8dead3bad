"""A throwaway CA and a tiny HTTPS server for testing CA bundles in images.

Images built FROM scratch have no CA certificates unless lamina adds them; a
binary doing HTTPS against a server signed by this CA shows whether the
bundle it was given is the one it uses.
"""

from __future__ import annotations

import http.server
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

BODY = b"hello over tls"


class CertBundle(NamedTuple):
    """Paths written by make_test_ca."""

    ca_pem: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{r.stderr}")


def make_test_ca(dir: Path | str) -> CertBundle:
    """Create a CA and a server certificate for 127.0.0.1/localhost in `dir`.

    Go refuses certificates without a subjectAltName, hence the extfile.
    P-256 keys keep generation fast.
    """
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
             "-subj", "/CN=lamina test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=d)
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "30", "-extfile", "server.ext",
             "-out", "server.pem", cwd=d)
    return CertBundle(d / "ca.pem", d / "server.pem", d / "server.key")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body: bytes = self.server.body  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output clean."""


class _TLSServer(http.server.ThreadingHTTPServer):
    """Does the TLS handshake in the per-connection thread, so a client that
    rejects our certificate (the point of some tests) cannot stall the
    accept loop, and its failure is not printed as a server error."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, body: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.context = context
        self.body = body

    def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        request.settimeout(10)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError:  # includes ssl.SSLError: client gave up on the handshake
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()

    def handle_error(self, request: object, client_address: object) -> None:
        """Ignore clients that hang up mid-response."""


class HttpsServer:
    """Serve `body` over HTTPS on 127.0.0.1 on a free port, in a thread."""

    def __init__(self, cert: Path | str, key: Path | str, body: bytes = BODY) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self._server = _TLSServer(ctx, body)
        self.port: int = self._server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"https-{self.port}", daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> HttpsServer:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
