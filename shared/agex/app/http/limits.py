"""Request limits in front of the API, at each layer a request crosses before the API reads it.

- **The server.** functions-framework serves the function with gunicorn, locally and on Cloud Run alike.
  ``BufferingWorker`` is gunicorn's threaded worker with one change: a request, head and body, is read in the
  worker's event loop, without blocking, before a thread is given to it. A thread only ever serves a complete
  request, so clients that send slowly (or declare a body they never send) hold a socket, not a thread, and only
  until the read deadline (``AGEX_REQUEST_TIMEOUT_SECONDS``, 10 s), when they get a ``408``. A declared
  ``Content-Length`` (or a chunked body) over the body limit gets a ``413`` as soon as it is known, before the
  body is read. Every error the server answers itself (a malformed request line or header, a lower-case method,
  an over-long header) is the API's JSON error, not gunicorn's HTML page.
- **WSGI** (``BodyLimits``): the same refusal of an oversized declared length before anything reads the body,
  a cap on what can be read, and a deadline on reading it, for any server (and functions-framework's own
  ``after_request`` hook, which reads whatever body the function left unread).
- **Flask** (functions-framework's app): every HTTP error the framework raises itself, an unroutable path such
  as one with ``%0A`` included, and every crash outside the API's own handler, is the API's JSON error.

``install`` puts all three in front of the function from its ``main.py``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from http import HTTPStatus
from typing import Any

from gunicorn import util as gunicorn_util
from gunicorn.http import errors as g
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import TConn, ThreadWorker
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from agex.app.http.responses import error_body, error_response, http_exception_response, internal_error
from agex.core.errors import (
    AgexError,
    HeadersTooLarge,
    NotImplementedByServer,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    UriTooLong,
)
from agex.obs import logging as log

DEFAULT_READ_TIMEOUT_S = 10.0
"""``Settings.request_timeout_seconds``' default, for a worker built before ``install`` configured it."""
"""How long a client has to send a whole request, head and body, once it has connected (or, on a kept-alive
connection, once it starts the next request)."""
MAX_HEAD_BYTES = 64 * 1024
"""The request line and headers together; over it is a ``431``."""
LIMIT_REQUEST_LINE = 8190
"""gunicorn's default, which functions-framework turns off; over it is a ``414``."""
LIMIT_REQUEST_FIELDS = 100
LIMIT_REQUEST_FIELD_SIZE = 8190
LINGER_S = 2.0
"""After an error that ends a connection, how long its unread input is drained (without a thread) so the
client can read the answer before the socket closes."""
_LINGER_BYTES = 256 * 1024

_log = log.get("http")


def body_limit(max_input_bytes: int) -> int:
    """The request body limit of the API: room for an ``input`` at its limit, JSON-escaped, and metadata."""
    return max_input_bytes * 2 + 16 * 1024


# --- errors as raw HTTP responses (the server layer, below WSGI) ---------------------------------------------


def error_bytes(error: AgexError) -> bytes:
    """A whole HTTP/1.1 response carrying the API's JSON error; the connection closes after it."""
    body = json.dumps(error_body(error)).encode()
    try:
        phrase = HTTPStatus(error.status).phrase
    except ValueError:
        phrase = "Error"
    head = (f"HTTP/1.1 {error.status} {phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body


def server_error(exc: BaseException) -> AgexError | None:
    """The API's error for what gunicorn refuses while parsing a request; None for anything else (a bug)."""
    detail = str(exc)[:200]
    if isinstance(exc, g.LimitRequestLine):
        return UriTooLong(f"the request line is over {LIMIT_REQUEST_LINE} bytes")
    if isinstance(exc, g.LimitRequestHeaders):
        return HeadersTooLarge(f"request headers are over their limits ({LIMIT_REQUEST_FIELDS} fields of at most "
                               f"{LIMIT_REQUEST_FIELD_SIZE} bytes, {MAX_HEAD_BYTES} bytes in all): {detail}")
    if isinstance(exc, g.InvalidRequestMethod):
        method = str(getattr(exc, "method", ""))[:40]
        return RequestError(f"invalid method {method!r}: methods are case-sensitive, upper-case tokens such as GET "
                            "and POST")
    if isinstance(exc, g.UnsupportedTransferCoding):
        return NotImplementedByServer(f"unsupported transfer coding {detail!r}; send a Content-Length, or "
                                      "'Transfer-Encoding: chunked'")
    if isinstance(exc, (g.InvalidHeader, g.InvalidHeaderName, g.ObsoleteFolding)):
        return RequestError(f"malformed header: {detail}")
    if isinstance(exc, (g.InvalidRequestLine, g.InvalidHTTPVersion)):
        return RequestError(f"malformed request line: {detail}")
    if isinstance(exc, (g.InvalidChunkSize, g.ChunkMissingTerminator, g.InvalidChunkExtension)):
        return RequestError(f"malformed chunked body: {detail}")
    if isinstance(exc, g.ParseException):
        return RequestError(f"malformed request: {detail}")
    return None


# --- the server: gunicorn's threaded worker, reading requests before threads serve them ----------------------

_WAIT, _READY, _CONTINUE, _AS_IS = "wait", "ready", "continue", "as-is"


class _Framing:
    """Where a request being read stands: its head, its body's framing, and how much of a chunked body has
    been checked (so each read resumes the scan instead of starting over)."""

    __slots__ = ("body_start", "chunk_pos", "chunked", "decoded", "expect_continue", "head_scanned", "length")

    def __init__(self) -> None:
        self.head_scanned = 0
        self.body_start = -1
        self.length = 0
        self.chunked = False
        self.expect_continue = False
        self.chunk_pos = 0
        self.decoded = 0


def examine(buf: bytes | bytearray, framing: _Framing, max_body: int) -> str | AgexError:
    """How far along the request in ``buf`` is: ``_WAIT`` for more bytes, ``_CONTINUE`` to send
    ``100 Continue`` and wait, ``_READY`` when it is complete, ``_AS_IS`` to hand it over as it is (gunicorn
    then answers its own error for what this does not parse), or the error to answer."""
    if framing.body_start < 0:
        end = buf.find(b"\r\n\r\n", max(0, framing.head_scanned - 3))
        if end < 0:
            framing.head_scanned = len(buf)
            if len(buf) > MAX_HEAD_BYTES:
                return HeadersTooLarge(f"the request line and headers are over {MAX_HEAD_BYTES} bytes")
            # a line ended by a bare LF: gunicorn refuses it as soon as it reads it
            return _AS_IS if buf.count(b"\n") != buf.count(b"\r\n") else _WAIT
        if end + 4 > MAX_HEAD_BYTES:
            return HeadersTooLarge(f"the request line and headers are over {MAX_HEAD_BYTES} bytes")
        framing.body_start = framing.chunk_pos = end + 4
        odd = _framing(bytes(buf[:end]), framing)
        if odd is not None:
            return odd
        if framing.length > max_body:
            return PayloadTooLarge(f"request body is {framing.length} bytes; the limit is {max_body}")
    received = len(buf) - framing.body_start
    if framing.chunked:
        verdict = _chunks(buf, framing, max_body)
        if verdict != _WAIT:
            return verdict
        if received > 4 * max_body + MAX_HEAD_BYTES:
            return PayloadTooLarge(f"chunked request body is over the limit of {max_body} bytes")
    elif received >= framing.length:
        return _READY
    return _CONTINUE if framing.expect_continue and received == 0 else _WAIT


def _framing(head: bytes, framing: _Framing) -> str | None:
    """Read the body's framing from the head; ``_AS_IS`` for a head gunicorn is to judge."""
    length: int | None = None
    codings: list[bytes] = []
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon or name != name.strip():
            return _AS_IS
        name, value = name.lower(), value.strip(b" \t")
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return _AS_IS
            length = int(value)
        elif name == b"transfer-encoding":
            codings += [c.strip(b" \t").lower() for c in value.split(b",")]
        elif name == b"expect":
            framing.expect_continue = value.lower() == b"100-continue"
    if codings:
        # chunked last, and once (a content coding before it is the application's to refuse): else gunicorn
        # refuses the head before it reads any body
        if (codings[-1] != b"chunked" or codings.count(b"chunked") > 1 or length is not None
                or not set(codings) <= {b"chunked", b"gzip", b"deflate", b"compress", b"identity"}):
            return _AS_IS
        framing.chunked = True
    framing.length = length or 0
    return None


def _chunks(buf: bytes | bytearray, framing: _Framing, max_body: int) -> str | AgexError:
    pos = framing.chunk_pos
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > LIMIT_REQUEST_FIELD_SIZE:
                return RequestError("malformed chunked body: a chunk size line is too long")
            return _WAIT
        size_field = bytes(buf[pos:eol]).split(b";", 1)[0].strip(b" \t")
        if not size_field or len(size_field) > 16 or size_field.strip(b"0123456789abcdefABCDEF"):
            return RequestError(f"malformed chunked body: chunk size {size_field[:20]!r} is not hexadecimal")
        size = int(size_field, 16)
        data = eol + 2
        if size == 0:
            if buf[data:data + 2] == b"\r\n" or buf.find(b"\r\n\r\n", data) >= 0:
                return _READY
            if len(buf) - data > MAX_HEAD_BYTES:
                return HeadersTooLarge(f"the trailers of the chunked body are over {MAX_HEAD_BYTES} bytes")
            return _WAIT
        if framing.decoded + size > max_body:
            return PayloadTooLarge(f"chunked request body is over the limit of {max_body} bytes")
        if len(buf) < data + size + 2:
            return _WAIT
        if buf[data + size:data + size + 2] != b"\r\n":
            return RequestError("malformed chunked body: a chunk does not end with CRLF where its size says")
        framing.decoded += size
        pos = framing.chunk_pos = data + size + 2


class _Conn(TConn):  # type: ignore[misc]
    """gunicorn's connection, closed "gracefully" without blocking the event loop: gunicorn drains a
    connection it closes for up to 2 s, in the event loop, holding up every other connection of the worker."""

    def __init__(self, worker: BufferingWorker, *args: Any) -> None:
        super().__init__(*args)
        self.agex_worker = worker
        self.agex_pending: _Pending | None = None
        self.agex_request: bytes | None = None
        self.agex_complete = True
        self.agex_continued = False
        self.agex_linger_until = 0.0
        self.agex_linger_left = 0

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self.agex_worker.linger(self)
        else:
            super().close()


class _Pending:
    __slots__ = ("buf", "continued", "deadline", "framing", "registered")

    def __init__(self, buf: bytes, deadline: float) -> None:
        self.buf = bytearray(buf)
        self.deadline = deadline
        self.framing = _Framing()
        self.registered = False
        self.continued = False


class BufferingWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's ``gthread`` worker that reads each request whole, in its event loop, before a thread serves
    it; see the module's docstring. TLS and HTTP/2 connections (not used behind Cloud Run) go the usual way."""

    max_body_bytes = 80 * 1024
    read_timeout_s = DEFAULT_READ_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffering: deque[Any] = deque()
        self.lingering: deque[Any] = deque()

    # --- connections come in: read them before they get a thread ---

    def accept(self, listener: socket.socket) -> None:
        try:
            client, address = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client.setblocking(True)
        self.enqueue_req(_Conn(self, self.cfg, client, address, listener.getsockname()))

    def enqueue_req(self, conn: Any) -> None:
        if not isinstance(conn, _Conn) or conn.agex_request is not None or not self._bufferable(conn):
            super().enqueue_req(conn)
        else:
            self._buffer(conn)

    def _bufferable(self, conn: Any) -> bool:
        return not (self.cfg.is_ssl or conn.is_http2 or negotiation.prior_knowledge_allowed(self.cfg, conn.client))

    def _buffer(self, conn: _Conn) -> None:
        # a kept-alive connection's parser may hold the start of the next request already (pipelining)
        held = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.sock.setblocking(False)
        conn.agex_pending = _Pending(held, time.monotonic() + self.read_timeout_s)
        self.buffering.append(conn)
        self._advance(conn)

    def _on_readable(self, conn: _Conn, _sock: object) -> None:
        data = _recv(conn.sock)
        if data is None:
            return
        if not data:  # the client went away
            self._leave(conn)
            self._close(conn)
            return
        assert conn.agex_pending is not None
        conn.agex_pending.buf += data
        self._advance(conn)

    def _advance(self, conn: _Conn) -> None:
        pending = conn.agex_pending
        assert pending is not None
        verdict = examine(pending.buf, pending.framing, self.max_body_bytes)
        if verdict == _CONTINUE and not pending.continued:
            pending.continued = True
            with contextlib.suppress(OSError):
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if verdict in (_WAIT, _CONTINUE):
            if not pending.registered:
                pending.registered = True
                self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
            return
        self._leave(conn)
        if isinstance(verdict, AgexError):
            self._refuse(conn, verdict)
            return
        conn.agex_request = bytes(pending.buf)
        conn.agex_complete = verdict == _READY
        conn.agex_continued = pending.continued
        conn.agex_pending = None
        super().enqueue_req(conn)

    def _leave(self, conn: _Conn) -> None:
        """Take a connection out of the reading stage."""
        pending = conn.agex_pending
        if pending is not None and pending.registered:
            pending.registered = False
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.poller.unregister(conn.sock)
        with contextlib.suppress(ValueError):
            self.buffering.remove(conn)

    def _refuse(self, conn: _Conn, error: AgexError) -> None:
        self.log.warning("Refused request from ip=%s: %s %s", conn.client[0] if conn.client else "", error.status,
                         error.message)
        with contextlib.suppress(OSError):
            conn.sock.send(error_bytes(error))
        self.nr_conns -= 1
        self.linger(conn)

    def _close(self, conn: _Conn) -> None:
        self.nr_conns -= 1
        conn.close()

    # --- deadlines, checked by the event loop about once a second ---

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self.buffering and (self.buffering[0].agex_pending.deadline <= now or not self.alive):
            conn = self.buffering[0]
            pending = conn.agex_pending
            self._leave(conn)
            if pending is not None and pending.buf.strip():
                self._refuse(conn, RequestTimeout(f"the request was not received within {self.read_timeout_s:g} s"))
            else:  # an idle connection: nothing to answer
                self._close(conn)
        while self.lingering and self.lingering[0].agex_linger_until <= now:
            self._end_linger(self.lingering[0])

    # --- closing without blocking the event loop ---

    def linger(self, conn: _Conn) -> None:
        """Close after an answer the client may still be sending a body to: half-close, then drain its input
        for a moment in the event loop, so the answer is read instead of lost to a reset."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
        except OSError:
            conn.close()
            return
        conn.agex_linger_until = time.monotonic() + LINGER_S
        conn.agex_linger_left = _LINGER_BYTES
        self.lingering.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger_readable, conn))

    def _on_linger_readable(self, conn: _Conn, _sock: object) -> None:
        data = _recv(conn.sock)
        if data is None:
            return
        conn.agex_linger_left -= len(data)
        if not data or conn.agex_linger_left <= 0:
            self._end_linger(conn)

    def _end_linger(self, conn: _Conn) -> None:
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(conn.sock)
        with contextlib.suppress(ValueError):
            self.lingering.remove(conn)
        conn.close()

    # --- a thread serves a request read whole ---

    def handle(self, conn: Any) -> Any:
        request = conn.agex_request if isinstance(conn, _Conn) else None
        if request is not None:
            conn.agex_request = None
            conn.data_ready = True
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(request)
        return super().handle(conn)

    def handle_request(self, req: Any, conn: Any) -> Any:
        if isinstance(conn, _Conn) and conn.agex_continued:
            req._expected_100_continue = False  # sent already, while the body was read
            conn.agex_continued = False
        return super().handle_request(req, conn)

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        # a request handed over before it was complete leaves its end on the socket: never read it in a thread
        if isinstance(conn, _Conn) and not conn.agex_complete:
            conn.agex_complete = True
            return False
        return bool(super()._keepalive_after(conn, keepalive))

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        error = server_error(exc)
        if error is None:
            self.log.exception("Error handling request")
            error = internal_error()
        else:
            self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        with contextlib.suppress(Exception):
            gunicorn_util.write_nonblock(client, error_bytes(error))


class TimeoutBufferingWorker(BufferingWorker):
    """``BufferingWorker`` with functions-framework's request timeout (``THREADED_TIMEOUT_ENABLED``)."""

    def handle_request(self, req: Any, conn: Any) -> Any:
        from functions_framework._http import gunicorn as ff
        from functions_framework.request_timeout import ThreadingTimeout

        with ThreadingTimeout(ff.TIMEOUT_SECONDS):
            return super().handle_request(req, conn)


def _recv(sock: socket.socket) -> bytes | None:
    """What a readable non-blocking socket has: None when nothing after all, ``b""`` when the client went away
    (or the connection broke)."""
    try:
        return sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


def _use_buffering_worker(max_body_bytes: int, read_timeout_s: float) -> None:
    """Make functions-framework start gunicorn with ``BufferingWorker`` and the request limits. Its command
    line (which Cloud Run runs too) takes no gunicorn settings, so its application class is replaced, before it
    is used, by one that adds them."""
    from functions_framework._http import gunicorn as ff

    BufferingWorker.max_body_bytes = max_body_bytes
    BufferingWorker.read_timeout_s = read_timeout_s
    if getattr(ff.GunicornApplication, "agex_limits", False):
        return
    base = ff.GunicornApplication

    class LimitedApplication(base):  # type: ignore[misc, valid-type]
        agex_limits = True

        def load_config(self) -> None:
            super().load_config()
            timeout = self.options.get("worker_class", "").endswith("GThreadWorkerWithTimeoutSupport")
            self.cfg.set("worker_class", TimeoutBufferingWorker if timeout else BufferingWorker)
            self.cfg.set("limit_request_line", LIMIT_REQUEST_LINE)
            self.cfg.set("limit_request_fields", LIMIT_REQUEST_FIELDS)
            self.cfg.set("limit_request_field_size", LIMIT_REQUEST_FIELD_SIZE)

    ff.GunicornApplication = LimitedApplication  # type: ignore[misc]


# --- WSGI: the declared length, a cap and a deadline on reading, for any server ----------------------------


class CappedInput:
    """``wsgi.input`` that yields at most ``limit`` bytes, and raises ``RequestTimeout`` when the body has not
    arrived by ``deadline`` (each read waits on the socket at most until then)."""

    def __init__(self, stream: Any, limit: int, deadline: float, sock: socket.socket | None,
                 timeout_s: float) -> None:
        self.stream, self.left, self.deadline, self.sock, self.timeout_s = stream, limit, deadline, sock, timeout_s
        self.expired = False

    def read(self, size: int | None = -1) -> bytes:
        return self._read(self.stream.read, size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._read(self.stream.readline, size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def _read(self, reader: Callable[[int], bytes], size: int | None) -> bytes:
        want = self.left if size is None or size < 0 else min(size, self.left)
        if want <= 0:
            return b""
        remaining = self.deadline - time.monotonic()
        if self.expired or remaining <= 0:
            self._expire()
        prior = self.sock.gettimeout() if self.sock is not None else None
        try:
            if self.sock is not None:
                self.sock.settimeout(remaining)
            data = reader(want)
        except TimeoutError:
            self._expire()
        finally:
            if self.sock is not None:
                with contextlib.suppress(OSError):
                    self.sock.settimeout(prior)
        self.left -= len(data)
        return data

    def _expire(self) -> None:
        self.expired = True
        raise RequestTimeout(f"the request body was not received within {self.timeout_s:g} s")


class BodyLimits:
    """WSGI middleware: a declared ``Content-Length`` over the limit is a ``413`` before anything reads the
    body; otherwise ``wsgi.input`` is a ``CappedInput`` (one byte past the limit, so the API can tell a body
    that is over it, and the read deadline)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], *, max_body_bytes: int, read_timeout_s: float) -> None:
        self.app, self.max_body_bytes, self.read_timeout_s = app, max_body_bytes, read_timeout_s

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        declared = environ.get("CONTENT_LENGTH") or ""
        error: AgexError | None = None
        if declared and not (declared.isdigit() and declared.isascii()):
            error = RequestError(f"Content-Length must be a number of bytes, not {declared[:40]!r}")
        elif declared and int(declared) > self.max_body_bytes:
            error = PayloadTooLarge(f"request body is {declared} bytes; the limit is {self.max_body_bytes}")
        if error is not None:
            response: Response = error_response(error)
            return response(environ, start_response)  # type: ignore[no-any-return]
        if environ.get("wsgi.input") is not None:
            environ["wsgi.input"] = CappedInput(environ["wsgi.input"], self.max_body_bytes + 1,
                                                time.monotonic() + self.read_timeout_s, environ.get("gunicorn.socket"),
                                                self.read_timeout_s)
        return self.app(environ, start_response)


# --- Flask: the framework's own errors as the API's -----------------------------------------------------------


def json_errors(app: Any) -> None:
    """Make every error of a Flask app (functions-framework's) the API's JSON error: the HTTP errors of its
    routing (a path no rule matches, such as one with a line feed) and crashes outside the API's handler,
    replacing functions-framework's plain-text crash page (its ``X-Google-Status: crash`` header is kept)."""
    import flask

    def on_http_error(e: HTTPException) -> Any:
        if e.code is not None and e.code < 400:  # a redirect, not an error
            return e.get_response()
        return http_exception_response(e, flask.request.method, flask.request.path)

    def on_crash(e: HTTPException) -> Response:
        original = getattr(e, "original_exception", None) or e
        if isinstance(original, AgexError) and original.status < 500:  # from a hook after the handler
            return error_response(original)
        if isinstance(original, HTTPException) and (original.code or 500) < 500:
            return http_exception_response(original, flask.request.method, flask.request.path)
        _log.error("request crashed outside the API", exc_info=original)
        response = error_response(internal_error())
        response.headers["X-Google-Status"] = "crash"
        return response

    app.register_error_handler(HTTPException, on_http_error)
    app.register_error_handler(500, on_crash)


def install(*, max_body_bytes: int, read_timeout_s: float) -> None:
    """Put the request limits in front of the function functions-framework is loading. Call it from the
    function's ``main.py``: functions-framework runs that module inside its Flask app's context, before it
    starts the server. Imported any other way (a test importing ``main.py``), it does nothing."""
    import flask

    try:
        app = flask.current_app._get_current_object()  # type: ignore[attr-defined]
    except RuntimeError:
        return
    json_errors(app)
    app.wsgi_app = BodyLimits(app.wsgi_app, max_body_bytes=max_body_bytes, read_timeout_s=read_timeout_s)
    _use_buffering_worker(max_body_bytes, read_timeout_s)
