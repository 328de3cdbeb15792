"""The emulator's plain-HTTP side port: health, stats, OIDC certificates, and the authenticated push relay.

The relay stands in for Pub/Sub's authenticated push, which the Pub/Sub emulator lacks (it keeps a
subscription's ``oidc_token`` setting but sends no token): point the emulator subscription's push endpoint
at ``/_emulator/push?endpoint=URL&email=SA&audience=AUD`` and each push reaches ``URL`` with the body
unchanged and an ``Authorization: Bearer`` ID token for ``SA`` and ``AUD``, signed by this emulator's key,
as Pub/Sub would send it. The endpoint's status is returned, so Pub/Sub's redelivery works as before.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
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

    def do_POST(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path != "/_emulator/push":
            self._send(404, b"not found\n", "text/plain; charset=utf-8")
            return
        params = urllib.parse.parse_qs(query)
        endpoint, email, audience = (params.get(k, [""])[0] for k in ("endpoint", "email", "audience"))
        if not endpoint or not email or urllib.parse.urlsplit(endpoint).hostname not in _LOOPBACK:
            # a relay that signs tokens must never become a way to reach anything but this machine's functions
            self._send(400, b"endpoint (a loopback URL) and email are required\n", "text/plain; charset=utf-8")
            return
        token = self.server.signer.id_token(email, audience or endpoint)
        request = urllib.request.Request(endpoint, data=body, method="POST", headers={
            "Content-Type": self.headers.get("Content-Type") or "application/json", "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback only
                status, answer, kind = response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, answer, kind = e.code, e.read(), e.headers.get("Content-Type", "")
        except OSError as e:
            status, answer, kind = 502, f"push endpoint unreachable: {e}\n".encode(), "text/plain; charset=utf-8"
        self._send(status, answer, kind or "application/octet-stream")

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


_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class SideServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, store: Store, signer: OidcSigner) -> None:
        self.store = store
        self.signer = signer
        super().__init__((host, port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])
