"""The emulator's plain-HTTP side port: health, stats and OIDC certificates."""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .oidc import OidcSigner
from .state import Store

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    server: SideServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/v1/stats":
            self._json(self.server.store.stats())
        elif path == "/oauth2/v1/certs":
            self._json(self.server.signer.certs_v1())
        elif path == "/oauth2/v3/certs":
            self._json(self.server.signer.certs_v3())
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def _json(self, payload: Any) -> None:
        self._send(200, json.dumps(payload, indent=1).encode() + b"\n", "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        # Lets google-auth's cert fetch behave as against Google's endpoint.
        self.send_header("Cache-Control", "public, max-age=300")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by base class
        log.debug("http side: " + format, *args)


class SideServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, store: Store, signer: OidcSigner) -> None:
        self.store = store
        self.signer = signer
        super().__init__((host, port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])
