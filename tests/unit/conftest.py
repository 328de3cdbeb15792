"""Fixtures shared by the unit tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agex.dev.emulators.cloudtasks.oidc import OidcSigner

GOOGLE = OidcSigner()
"""Stands in for Google's token service: the tests sign ID tokens with it, and ``certs_url`` serves its keys."""


@pytest.fixture(scope="session")
def certs_url() -> Iterator[str]:
    """``GOOGLE``'s signing keys served over HTTP the way Google serves its own (oauth2/v1/certs)."""
    body = json.dumps(GOOGLE.certs_v1()).encode()

    class Certs(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Certs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/oauth2/v1/certs"
    server.shutdown()
