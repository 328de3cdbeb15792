"""Request limits and the framework's own errors (``agex.app.http.limits``), in-process: the functions-framework
Flask app with the limits installed in front of the API on the in-memory runtime, the WSGI middleware, and
the server's request scanner. ``test_server_limits`` runs the same against a real gunicorn."""

from __future__ import annotations

import io
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gunicorn.http import errors as g
from werkzeug.test import Client, TestResponse

from agex.app.http import limits
from agex.app.http.limits import BodyLimits, BufferingWorker, CappedInput, examine
from agex.app.http.public_api import PublicApi
from agex.core.errors import HeadersTooLarge, PayloadTooLarge, RequestError, RequestTimeout
from tests.api.conftest import MAX_BODY_BYTES
from tests.api.test_public_api import error_of

RUNS = "/v1/agents/support/runs"
AUTH = {"Authorization": "Bearer dev-token"}
TARGET = '''
import functions_framework
from agex.app.http import limits
from tests.api import test_limits


@functions_framework.http
def api(request):
    return test_limits.serve(request)


limits.install(max_body_bytes=test_limits.MAX_BODY_BYTES, read_timeout_s=0.3)
'''
_api: list[Any] = []


def serve(request: Any) -> Any:
    """The function the functions-framework app serves: the API under test, or whatever a test put there."""
    return _api[0](request)


@pytest.fixture
def app(api: PublicApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """functions-framework's Flask app for a function whose module installs the limits, as functions/api/main.py
    does; what installing changes beyond the app (the server class, the worker's settings) is undone after."""
    import functions_framework
    from functions_framework._http import gunicorn as ff

    monkeypatch.setattr(ff, "GunicornApplication", ff.GunicornApplication)
    monkeypatch.setattr(BufferingWorker, "max_body_bytes", BufferingWorker.max_body_bytes)
    monkeypatch.setattr(BufferingWorker, "read_timeout_s", BufferingWorker.read_timeout_s)
    monkeypatch.setattr(sys, "path", list(sys.path))
    source = tmp_path / "agex_limits_target.py"
    source.write_text(TARGET)
    _api[:] = [api]
    try:
        yield Client(functions_framework.create_app("api", str(source), "http"))
    finally:
        _api.clear()
        sys.modules.pop("agex_limits_target", None)


def json_error(response: TestResponse) -> tuple[int, str, str]:
    assert response.mimetype == "application/json", response.get_data(as_text=True)
    return error_of(response)


# --- the framework's own errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/runs/abc%0A", "/v1/agents%0A", "/%0A", "/robots.txt", "/favicon.ico",
                                  "/v1/runs/abc%0D%0Ax"])
def test_a_path_the_framework_does_not_route_is_a_json_404(app: Client, path: str) -> None:
    status, code, message = json_error(app.get(path, headers=AUTH))
    assert (status, code) == (404, "not_found") and "no route for GET" in message


def test_the_api_itself_still_answers(app: Client) -> None:
    response = app.post(RUNS, json={"input": "Refund order A-1042, please."}, headers=AUTH)
    assert response.status_code == 202 and response.get_json()["status"] == "queued"
    assert app.get("/v1/agents", headers=AUTH).get_json()["agents"][0]["name"] == "support"


def test_a_crash_outside_the_api_is_a_json_500(app: Client) -> None:
    def crash(request: Any) -> Any:
        raise RuntimeError("the runtime could not be built: secret details")

    _api[:] = [crash]
    response = app.get("/v1/agents", headers=AUTH)
    status, code, message = json_error(response)
    assert (status, code) == (500, "internal") and "secret details" not in message
    assert response.headers["X-Google-Status"] == "crash"  # functions-framework's crash marker, kept


def test_a_request_error_raised_outside_the_api_keeps_its_status(app: Client) -> None:
    def slow(request: Any) -> Any:
        raise RequestTimeout("the request body was not received within 0.3 s")

    _api[:] = [slow]
    assert json_error(app.get("/v1/agents", headers=AUTH))[:2] == (408, "request_timeout")


# --- WSGI: the declared length, the cap, the deadline -------------------------------------------------------


def test_a_declared_length_over_the_limit_is_refused_before_anything_reads_the_body(app: Client) -> None:
    reads: list[int] = []

    class Endless(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            reads.append(size)
            return b"x" * max(size, 1)

    response = app.post(RUNS, headers={**AUTH, "Content-Type": "application/json"},
                        environ_overrides={"wsgi.input": Endless(), "CONTENT_LENGTH": "1000000000"})
    status, code, message = json_error(response)
    assert (status, code) == (413, "payload_too_large") and "1000000000" in message
    assert reads == []


@pytest.mark.parametrize("path", [RUNS, "/v1/agents", "/v1/agents/nope/runs"])
def test_the_declared_length_is_checked_first_on_every_route(app: Client, path: str) -> None:
    response = app.post(path, environ_overrides={"CONTENT_LENGTH": str(MAX_BODY_BYTES + 1)})
    assert json_error(response)[:2] == (413, "payload_too_large")


def test_a_declared_length_at_the_limit_is_read(app: Client) -> None:
    body = json.dumps({"input": "hi", "metadata": {"pad": " " * 100}}).encode()
    body += b" " * (MAX_BODY_BYTES - len(body))
    assert app.post(RUNS, data=body, headers={**AUTH, "Content-Type": "application/json"}).status_code == 202


def _wsgi(environ: dict[str, Any]) -> tuple[str, bytes]:
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    out = BodyLimits(app, max_body_bytes=10, read_timeout_s=0.3)(
        environ, lambda status, headers, exc_info=None: seen.append(status))
    return seen[0], b"".join(out)


def test_what_can_be_read_is_capped_one_byte_past_the_limit() -> None:
    status, body = _wsgi({"REQUEST_METHOD": "POST", "wsgi.input": io.BytesIO(b"y" * 1000)})
    assert status == "200 OK" and body == b"y" * 11


@pytest.mark.parametrize("declared", ["abc", "-1", "1e3", "١٢"])
def test_a_content_length_that_is_not_a_number_is_a_400(declared: str) -> None:
    status, body = _wsgi({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": declared, "wsgi.input": io.BytesIO(b"")})
    assert status.startswith("400") and json.loads(body)["error"]["code"] == "invalid_argument"


def test_a_body_that_stalls_times_out_with_a_408() -> None:
    server, client = socket.socketpair()
    try:
        client.sendall(b'{"inp')
        stream = server.makefile("rb")
        capped = CappedInput(stream, 100, time.monotonic() + 0.3, server, 0.3)
        started = time.monotonic()
        assert capped.read(5) == b'{"inp'
        with pytest.raises(RequestTimeout):
            capped.read(50)
        assert 0.2 < time.monotonic() - started < 2
        with pytest.raises(RequestTimeout):  # and again, for whoever reads next (functions-framework's hook)
            capped.read(50)
        assert server.gettimeout() is None  # the socket is left as it was
    finally:
        server.close()
        client.close()


def test_a_stalled_body_through_the_api_is_a_json_408(api: PublicApi) -> None:
    server, client = socket.socketpair()
    try:
        client.sendall(b'{"input": "hi"')
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": RUNS, "CONTENT_TYPE": "application/json",
                   "CONTENT_LENGTH": "40", "HTTP_AUTHORIZATION": "Bearer dev-token", "SERVER_NAME": "x",
                   "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": server.makefile("rb"),
                   "gunicorn.socket": server}
        from werkzeug.wrappers import Request

        seen: list[str] = []
        body = b"".join(BodyLimits(Request.application(api), max_body_bytes=MAX_BODY_BYTES, read_timeout_s=0.3)(
            environ, lambda status, headers, exc_info=None: seen.append(status)))
        assert seen[0].startswith("408") and json.loads(body)["error"]["code"] == "request_timeout"
    finally:
        server.close()
        client.close()


# --- the server: what it answers itself, and how it reads a request before a thread serves it -------------


@pytest.mark.parametrize(("exc", "status", "code"), [
    (g.InvalidRequestMethod("get"), 400, "invalid_argument"),
    (g.InvalidRequestLine("GET /\n"), 400, "invalid_argument"),
    (g.InvalidHTTPVersion("HTTP/9"), 400, "invalid_argument"),
    (g.InvalidHeader("X-Key"), 400, "invalid_argument"),
    (g.InvalidHeaderName("Bad Name"), 400, "invalid_argument"),
    (g.LimitRequestLine(9000, 8190), 414, "uri_too_long"),
    (g.LimitRequestHeaders("limit request headers fields"), 431, "headers_too_large"),
    (g.UnsupportedTransferCoding("gzip"), 501, "not_implemented"),
    (g.InvalidChunkSize(b"zz"), 400, "invalid_argument"),
])
def test_what_gunicorn_refuses_is_the_apis_json_error(exc: Exception, status: int, code: str) -> None:
    error = limits.server_error(exc)
    assert error is not None and (error.status, error.code) == (status, code)
    raw = limits.error_bytes(error)
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Content-Type: application/json" in head and b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"error": {"code": code, "message": error.message}}


def test_a_bug_is_not_a_client_error() -> None:
    assert limits.server_error(ValueError("oops")) is None


HEAD = b"POST /v1/agents/support/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def scan(raw: bytes, max_body: int = 100, step: int = 0) -> Any:
    """``examine`` as the worker calls it: on everything received so far, ``step`` bytes at a time (0: at once)."""
    framing = limits._Framing()
    if not step:
        return examine(raw, framing, max_body)
    verdict: Any = None
    for end in range(step, len(raw) + step, step):
        verdict = examine(raw[:end], framing, max_body)
        if verdict not in ("wait", "continue") and end < len(raw):
            return verdict
    return verdict


CHUNKED = HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\n, w\r\n0\r\n\r\n"
REQUESTS = [
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "ready", id="get"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\n", "wait", id="head-incomplete"),
    pytest.param(HEAD + b"Content-Length: 5\r\n\r\nhello", "ready", id="length"),
    pytest.param(HEAD + b"Content-Length: 5\r\n\r\nhell", "wait", id="length-short"),
    pytest.param(HEAD + b"Content-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n", "ready", id="pipelined"),
    pytest.param(HEAD + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n", "continue", id="expect"),
    pytest.param(HEAD + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\nhe", "wait", id="expect-body-started"),
    pytest.param(CHUNKED, "ready", id="chunked"),
    pytest.param(CHUNKED[:-2], "wait", id="chunked-no-final-crlf"),
    pytest.param(CHUNKED.replace(b"0\r\n\r\n", b"0\r\nX-Trailer: 1\r\n\r\n"), "ready", id="chunked-trailers"),
    pytest.param(CHUNKED[:-10], "wait", id="chunked-incomplete"),
    pytest.param(b"GET / HTTP/1.1\nHost: x\n\n", "as-is", id="bare-lf"),
    pytest.param(HEAD + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "as-is", id="two-lengths"),
    pytest.param(HEAD + b"Content-Length: +5\r\n\r\nhello", "as-is", id="signed-length"),
    pytest.param(HEAD + b"Transfer-Encoding: gzip\r\n\r\n", "as-is", id="not-chunked"),
    pytest.param(HEAD + b"Transfer-Encoding: br, chunked\r\n\r\n", "as-is", id="unknown-coding"),
    pytest.param(HEAD + b"Transfer-Encoding: chunked, chunked\r\n\r\n", "as-is", id="chunked-twice"),
    pytest.param(HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "ready", id="coded-chunked"),
    pytest.param(HEAD + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", "wait",
                 id="coded-chunked-in-two-headers"),
    pytest.param(HEAD + b"Content-Length: 99999999999999999999999\r\n\r\n", PayloadTooLarge, id="huge-length"),
    pytest.param(HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "as-is", id="length-and-chunked"),
    pytest.param(HEAD + b"Bad Name : x\r\n\r\n", "as-is", id="space-before-colon"),
]


@pytest.mark.parametrize(("raw", "verdict"), REQUESTS)
@pytest.mark.parametrize("step", [0, 1, 7], ids=["whole", "byte-by-byte", "7-bytes"])
def test_the_server_reads_a_request_whole_before_a_thread_serves_it(raw: bytes, verdict: Any, step: int) -> None:
    got = scan(raw, step=step)
    assert isinstance(got, verdict) if isinstance(verdict, type) else got == verdict, got


@pytest.mark.parametrize(("raw", "error", "fragment"), [
    pytest.param(HEAD + b"Content-Length: 101\r\n\r\n", PayloadTooLarge, "101 bytes", id="declared"),
    pytest.param(HEAD + b"Content-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n", PayloadTooLarge, "limit",
                 id="declared-expecting-continue"),
    pytest.param(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"40\r\n" + b"x" * 64 + b"\r\n" + b"40\r\n",
                 PayloadTooLarge, "chunked", id="chunked"),
    pytest.param(HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", RequestError, "hexadecimal", id="chunk-size"),
    pytest.param(HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", RequestError, "CRLF", id="chunk-end"),
    pytest.param(b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * limits.MAX_HEAD_BYTES, HeadersTooLarge, "headers",
                 id="head-too-large"),
])
@pytest.mark.parametrize("step", [0, 1000], ids=["whole", "in-pieces"])
def test_the_server_refuses_what_it_reads_over_the_limits(raw: bytes, error: type, fragment: str,
                                                         step: int) -> None:
    verdict = scan(raw, step=step)
    assert isinstance(verdict, error) and fragment in verdict.message, verdict


def test_tiny_chunks_are_scanned_once() -> None:
    # every read resumes the scan where the last stopped: 10k one-byte chunks fed a chunk at a time stay fast
    body = b"1\r\nx\r\n" * 10_000 + b"0\r\n\r\n"
    raw = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body
    started = time.monotonic()
    assert scan(raw, max_body=20_000, step=6) == "ready"
    assert time.monotonic() - started < 5


def test_a_client_that_goes_away_mid_body_is_a_400_not_a_500(api: PublicApi) -> None:
    from werkzeug.wrappers import Request

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": RUNS, "CONTENT_TYPE": "application/json",
               "CONTENT_LENGTH": "40", "HTTP_AUTHORIZATION": "Bearer dev-token", "SERVER_NAME": "x",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b"")}
    seen: list[str] = []
    body = b"".join(Request.application(api)(environ, lambda status, headers, exc_info=None: seen.append(status)))
    assert seen[0].startswith("400") and json.loads(body)["error"]["code"] == "invalid_argument"
