"""Request limits at the server: the ``api`` function's real entry point (functions/api/main.py) under
functions-framework's gunicorn, as ``agex dev`` and Cloud Run start it, spoken to over raw sockets. What only
the server layer does: refusing a declared length before the body, timing out slow requests without a
thread waiting on them, and answering malformed requests (a lower-case method, a line feed in the path, bad
or oversized headers) with the API's JSON error. One worker with two threads, so that any request holding a
thread would show.

The API here has no Firestore behind it (its emulator host points at a closed port): every request these
tests send is refused, or answered, before the API would touch storage."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from agex.dev.emulators.gcloud import EmulatorProcess, free_port, spawn_and_wait

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 3
FAST_S = 1.5
"""A request that no slow client holds up is answered well within this (in milliseconds, usually)."""
MAX_BODY = 1024 * 2 + 16 * 1024  # AGEX_MAX_INPUT_BYTES=1024
RUNS = "/v1/agents/ticker/runs"
AUTH = "Authorization: Bearer dev-token\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, EmulatorProcess]]:
    port, dead = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "WORKERS": "1", "THREADS": "2",
           "AGEX_AGENTS": "examples.ticker_agent:agent", "AGEX_FLEET_FILE": "", "AGEX_MAX_INPUT_BYTES": "1024",
           "AGEX_REQUEST_TIMEOUT_SECONDS": str(TIMEOUT_S), "AGEX_DEV_TOKENS": "dev-token=dev:dev@example.com",
           "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{dead}", "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{dead}",
           "AGEX_TASKS_EMULATOR_HOST": f"127.0.0.1:{dead}", "GOOGLE_CLOUD_PROJECT": "agex-test"}
    log = tmp_path_factory.mktemp("server") / "api.log"
    proc = spawn_and_wait(
        "api", [str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else "python", "-m",
                "functions_framework", "--target", "api", "--source", str(REPO / "functions" / "api" / "main.py"),
                "--host", "127.0.0.1", "--port", str(port)],
        port, str(log), 60, ready=lambda: _answers(port), env=env, cwd=str(REPO))
    try:
        yield port, proc
    finally:
        proc.stop(grace=3.0)


def _answers(port: int) -> bool:
    try:
        return exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1)[0] == 200
    except OSError:
        return False


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


_unread: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One response (after any ``100 Continue``): status, headers (lower-case names) and body. Bytes read past
    it (pipelined responses can arrive in one segment) are kept for the next call on the same socket."""
    sock.settimeout(timeout)
    buf = _unread.pop(sock, b"")
    while True:
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed before a response: {buf!r}")
            buf += data
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if status != 100:
            break
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(buf) < length:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    _unread[sock] = buf[length:]
    return status, headers, buf[:length]


def exchange(port: int, raw: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    with connect(port) as sock:
        sock.sendall(raw)
        return read_response(sock, timeout)


def json_error(response: tuple[int, dict[str, str], bytes]) -> tuple[int, str, str]:
    status, headers, body = response
    assert headers.get("content-type", "").split(";")[0] == "application/json", (status, headers, body)
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message"} and error["message"]
    return status, error["code"], error["message"]


def post(path: str, body: bytes, headers: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{headers}\r\n").encode() + body


# --- what the server answers itself is the API's JSON error -------------------------------------------------


@pytest.mark.parametrize(("raw", "status", "code", "fragment"), [
    pytest.param(b"get /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_argument", "upper-case",
                 id="lower-case-method"),
    pytest.param(b"Get /v1/agents HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_argument", "method", id="mixed-case"),
    pytest.param(b"GET /v1/runs/abc%0A HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found", "no route",
                 id="percent-encoded-line-feed"),
    pytest.param(b"GET /v1/runs/abc%0D%0AX-Injected:%201 HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found",
                 "no route", id="percent-encoded-crlf"),
    pytest.param(b"GET /v1/runs/a\nb HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_argument", "request line",
                 id="raw-line-feed-in-path"),
    pytest.param(b"GET /%00 HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found", "no route", id="nul-in-path"),
    pytest.param(b"GET /robots.txt HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found", "no route", id="robots"),
    pytest.param(b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400, "invalid_argument", "", id="http-version"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nIdempotency-Key: a\x01b\r\n\r\n", 400, "invalid_argument",
                 "header", id="control-character-in-header"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nIdempotency-Key: a\x00b\r\n\r\n", 400, "invalid_argument",
                 "header", id="nul-in-header"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400, "invalid_argument", "header",
                 id="space-in-header-name"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo-Colon\r\n\r\n", 400, "invalid_argument", "header",
                 id="header-without-colon"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n", 400, "invalid_argument", "",
                 id="obsolete-line-folding"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nIdempotency-Key: " + b"k" * 9000 + b"\r\n\r\n", 431,
                 "headers_too_large", "limits", id="over-long-header"),
    pytest.param(b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n", 431,
                 "headers_too_large", "limits", id="too-many-headers"),
    pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long", "8190",
                 id="over-long-request-line"),
    pytest.param(b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * (70 * 1024) + b"\r\n\r\n", 431, "headers_too_large", "",
                 id="head-over-64-kib"),
    pytest.param(b"POST /v1/agents/ticker/runs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: br, chunked\r\n\r\n", 501,
                 "not_implemented", "transfer coding", id="unsupported-transfer-coding"),
    pytest.param(b"POST /v1/agents/ticker/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "invalid_argument", "", id="length-and-chunked"),
    pytest.param(b"POST /v1/agents/ticker/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n"
                 b"\r\nhello!", 400, "invalid_argument", "", id="two-lengths"),
    pytest.param(b"POST /v1/agents/ticker/runs HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400,
                 "invalid_argument", "", id="length-not-a-number"),
    pytest.param(post(RUNS, b'{"input": ""}', "Idempotency-Key: a\r\nIdempotency-Key: b\r\n"), 400,
                 "invalid_argument", "once", id="idempotency-key-twice"),
    pytest.param(post(RUNS, b'{"input": ""}', "Idempotency-Key: \r\n"), 400, "invalid_argument", "Idempotency-Key",
                 id="idempotency-key-empty"),
    pytest.param(post(RUNS, b'{"input": ""}', "Idempotency-Key: " + "k" * 256 + "\r\n"), 400, "invalid_argument",
                 "Idempotency-Key", id="idempotency-key-256"),
    pytest.param(post(RUNS, '{"input": "x"}'.encode("utf-16")), 400, "invalid_json", "UTF-8", id="utf-16-body"),
])
def test_a_malformed_request_gets_the_apis_json_error(server: tuple[int, EmulatorProcess], raw: bytes,
                                                      status: int, code: str, fragment: str) -> None:
    got = json_error(exchange(server[0], raw))
    assert got[:2] == (status, code), got
    assert fragment in got[2], got


# --- bodies: refused before they are read, and never waited on by a thread ------------------------------------


def test_a_declared_length_over_the_limit_is_refused_at_once(server: tuple[int, EmulatorProcess]) -> None:
    started = time.monotonic()
    with connect(server[0]) as sock:
        sock.sendall(post(RUNS, b"")[:-len(b"Content-Length: 0\r\n\r\n")] + b"Content-Length: 1000000000\r\n\r\n")
        got = json_error(read_response(sock))
        assert sock.recv(1) == b""  # and the connection is closed
    assert got[:2] == (413, "payload_too_large") and "1000000000" in got[2]
    assert time.monotonic() - started < FAST_S


def test_eight_requests_declaring_a_body_they_never_send_block_nothing(server: tuple[int, EmulatorProcess]) -> None:
    port = server[0]
    head = f"POST {RUNS} HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\nContent-Length: 900\r\n\r\n"
    stalled = [connect(port) for _ in range(8)]
    try:
        for sock in stalled:
            sock.sendall(head.encode() + b'{"input": "x')
        time.sleep(0.3)
        started = time.monotonic()
        assert exchange(port, b"GET /v1/agents HTTP/1.1\r\nHost: x\r\n" + AUTH.encode() + b"\r\n")[0] == 200
        assert time.monotonic() - started < FAST_S, "a request waited for the stalled ones"
        # and each stalled one is answered 408 at its deadline
        for sock in stalled:
            assert json_error(read_response(sock, TIMEOUT_S + 3))[:2] == (408, "request_timeout")
    finally:
        for sock in stalled:
            sock.close()


def test_slow_clients_hold_no_thread(server: tuple[int, EmulatorProcess]) -> None:
    """Twenty clients trickling a body a byte at a time, twenty sending their headers as slowly, and twenty
    connected without sending anything: a worker with two threads still answers at once."""
    port = server[0]
    stop = threading.Event()
    head = f"POST {RUNS} HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\nContent-Length: 900\r\n\r\n"
    socks = [connect(port) for _ in range(60)]

    def trickle(sock: socket.socket, data: bytes) -> None:
        for byte in data:
            if stop.wait(0.2):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    threads = [threading.Thread(target=trickle, args=(s, head.encode() + b"x" * 900 if i < 20 else head.encode()),
                                daemon=True) for i, s in enumerate(socks[:40])]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        for _ in range(5):
            started = time.monotonic()
            assert exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
            assert time.monotonic() - started < FAST_S
            time.sleep(0.1)
    finally:
        stop.set()
        for s in socks:
            s.close()
        for t in threads:
            t.join(2)


def test_a_large_body_is_refused_before_it_is_read(server: tuple[int, EmulatorProcess]) -> None:
    port, proc = server
    assert exchange(port, b"GET /v1/agents HTTP/1.1\r\nHost: x\r\n" + AUTH.encode() + b"\r\n")[0] == 200
    rss_before = _worker_rss(proc.pid)  # with the API loaded
    size = 256 * 1024 * 1024
    with connect(port) as sock:
        sock.sendall(f"POST {RUNS} HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\n"
                     f"Content-Length: {size}\r\n\r\n".encode())
        sent, chunk = 0, b"x" * 65536
        try:  # the server answers and closes long before this is sent
            while sent < size:
                sent += sock.send(chunk)
        except OSError:
            pass
        got = json_error(read_response(sock))
    assert got[:2] == (413, "payload_too_large")
    assert sent < size
    assert _worker_rss(proc.pid) - rss_before < 32 * 1024 * 1024  # it was 215 MiB more, reading it all


def test_a_chunked_body_over_the_limit_is_refused_while_it_arrives(server: tuple[int, EmulatorProcess]) -> None:
    with connect(server[0]) as sock:
        sock.sendall(f"POST {RUNS} HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        try:
            for _ in range(100):
                sock.sendall(b"1000\r\n" + b"x" * 4096 + b"\r\n")
        except OSError:
            pass
        assert json_error(read_response(sock))[:2] == (413, "payload_too_large")


def test_a_chunked_body_within_the_limit_is_read(server: tuple[int, EmulatorProcess]) -> None:
    body = b'{"input": ""}'
    raw = (f"POST {RUNS} HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\n"
           "Transfer-Encoding: chunked\r\n\r\n").encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    status, code, message = json_error(exchange(server[0], raw))
    assert (status, code) == (400, "invalid_argument") and "input" in message  # parsed, then refused by the API


def test_a_client_expecting_100_continue_gets_it_once(server: tuple[int, EmulatorProcess]) -> None:
    body = b'{"input": ""}'
    with connect(server[0]) as sock:
        sock.sendall(post(RUNS, b"", "Expect: 100-continue\r\n").replace(b"Content-Length: 0",
                                                                         f"Content-Length: {len(body)}".encode()))
        sock.settimeout(5)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, raw = read_response(sock)
        assert status == 400 and b"100 Continue" not in raw
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(100)  # nothing more: no second 100 Continue, and the connection is kept alive


def test_an_oversized_body_expecting_100_continue_is_refused_without_it(
        server: tuple[int, EmulatorProcess]) -> None:
    raw = post(RUNS, b"", "Expect: 100-continue\r\n").replace(b"Content-Length: 0", b"Content-Length: 99999999")
    with connect(server[0]) as sock:
        sock.sendall(raw)
        sock.settimeout(5)
        assert sock.recv(12) == b"HTTP/1.1 413"


def test_kept_alive_and_pipelined_requests_are_served_in_order(server: tuple[int, EmulatorProcess]) -> None:
    one = post(RUNS, b'{"input": ""}')
    two = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(server[0]) as sock:
        sock.sendall(one + two + one)
        assert read_response(sock)[0] == 400
        assert read_response(sock)[:1] == (200,)
        assert read_response(sock)[0] == 400
        time.sleep(0.2)
        sock.sendall(two)  # later, on the same connection
        assert read_response(sock)[0] == 200


def test_a_slow_request_line_times_out(server: tuple[int, EmulatorProcess]) -> None:
    with connect(server[0]) as sock:
        sock.sendall(b"GET /heal")
        started = time.monotonic()
        assert json_error(read_response(sock, TIMEOUT_S + 3))[:2] == (408, "request_timeout")
        assert TIMEOUT_S - 1 < time.monotonic() - started < TIMEOUT_S + 2


def _worker_rss(master: int) -> int:
    """Resident memory of the master's worker processes, in bytes."""
    total = 0
    for task in Path(f"/proc/{master}/task").iterdir():
        for child in (task / "children").read_text().split():
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total
