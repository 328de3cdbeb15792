"""Structured logs in Cloud Logging's JSON format, labelled with run, agent, tenant and step.

Cloud Run ships each stdout line that is a JSON object as a structured entry: ``severity`` and
``message`` become the entry's, ``logging.googleapis.com/trace`` and ``.../spanId`` link it to Cloud
Trace, ``logging.googleapis.com/labels`` become filterable labels, ``.../sourceLocation`` names the line
of code that logged, and ``.../operation`` (``{"id": run id, "producer": "agex/run"}``) groups every entry
of a run, across its requests and steps. Other fields land in ``jsonPayload`` as they are.

Each request a handler serves inside ``request_context`` ends with one entry carrying ``httpRequest``
(method, URL, status, latency, user agent, remote IP) and the labels set while serving it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

from opentelemetry import trace

_labels: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("agex_log_labels", default={})  # noqa: B039

_SEVERITY = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "CRITICAL"}

TRACE = "logging.googleapis.com/trace"
SPAN_ID = "logging.googleapis.com/spanId"
TRACE_SAMPLED = "logging.googleapis.com/trace_sampled"
LABELS = "logging.googleapis.com/labels"
SOURCE_LOCATION = "logging.googleapis.com/sourceLocation"
OPERATION = "logging.googleapis.com/operation"
OPERATION_PRODUCER = "agex/run"
"""The producer of the entries' operation: a run, whose id is the operation's."""


@contextlib.contextmanager
def labels(**values: object) -> Iterator[None]:
    """Add labels to every log line written inside the block (run, agent, tenant, step...). The request
    being served (``request_context``) keeps them for its closing entry."""
    added = {k: str(v) for k, v in values.items() if v is not None}
    token = _labels.set({**_labels.get(), **added})
    served = _request.get()
    if served is not None:
        served.labels.update(added)
    try:
        yield
    finally:
        _labels.reset(token)


class CloudLoggingFormatter(logging.Formatter):
    def __init__(self, project: str) -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry[TRACE] = f"projects/{self.project}/traces/{span.trace_id:032x}"
            entry[SPAN_ID] = f"{span.span_id:016x}"
            entry[TRACE_SAMPLED] = bool(span.trace_flags.sampled)
        current = {**_labels.get(), **getattr(record, "labels", {})}
        if current:
            entry[LABELS] = current
        run = current.get("run") or (fields or {}).get("run")
        if run and OPERATION not in entry:
            entry[OPERATION] = {"id": str(run), "producer": OPERATION_PRODUCER}
        entry[SOURCE_LOCATION] = {"file": record.pathname, "line": str(record.lineno), "function": record.funcName}
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(project: str, level: str | None = None) -> None:
    """Route the ``agex`` loggers to stdout as Cloud Logging JSON. Idempotent."""
    root = logging.getLogger("agex")
    if any(isinstance(h.formatter, CloudLoggingFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(CloudLoggingFormatter(project))
    root.addHandler(handler)
    root.setLevel(level or os.environ.get("AGEX_LOG_LEVEL", "INFO"))
    root.propagate = False


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"agex.{name}")


def info(logger: logging.Logger, message: str, **fields: Any) -> None:
    # stacklevel: the entry's sourceLocation is the caller's line, not this one
    logger.info(message, extra={"fields": fields}, stacklevel=2)


# --- requests ---------------------------------------------------------------------------------------------

_requests = get("http")


class _Request(Protocol):
    """What is read of a werkzeug (or Flask) request."""

    @property
    def method(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def headers(self) -> Any: ...
    @property
    def remote_addr(self) -> str | None: ...
    @property
    def environ(self) -> Any: ...


class _Response(Protocol):
    @property
    def status_code(self) -> int: ...
    @property
    def content_length(self) -> int | None: ...


class ServedRequest:
    """A request being served: what its closing entry will say."""

    def __init__(self, request: _Request) -> None:
        self.started = time.perf_counter()
        self.labels: dict[str, str] = {}
        # the first hop as the client's proxies report it; Cloud Run's own request log has the peer it saw
        forwarded = request.headers.get("X-Forwarded-For", "")
        self.http: dict[str, Any] = {
            "requestMethod": request.method,
            "requestUrl": request.url,
            "userAgent": request.headers.get("User-Agent", ""),
            "remoteIp": forwarded.split(",")[0].strip() if forwarded else (request.remote_addr or ""),
            "protocol": request.environ.get("SERVER_PROTOCOL", ""),
        }
        if request.headers.get("Content-Length"):
            self.http["requestSize"] = str(request.headers["Content-Length"])
        self.done = False

    def respond(self, response: _Response, message: str | None = None) -> None:
        """Write the request's closing entry, with ``httpRequest`` (status, latency, sizes), the labels set
        while serving it, and the run it served as the operation; mark the current span with the status."""
        if self.done:
            return
        self.done = True
        status = response.status_code
        http = {**self.http, "status": status, "latency": f"{time.perf_counter() - self.started:.6f}s"}
        if response.content_length is not None:
            http["responseSize"] = str(response.content_length)
        trace.get_current_span().set_attribute("http.response.status_code", status)
        level = logging.WARNING if status >= 500 else logging.INFO
        _requests.log(level, message or f"{http['requestMethod']} {http['requestUrl']} {status}",
                      extra={"fields": {"httpRequest": http}, "labels": dict(self.labels)}, stacklevel=2)


_request: contextvars.ContextVar[ServedRequest | None] = contextvars.ContextVar("agex_request", default=None)


@contextlib.contextmanager
def request_context(request: _Request) -> Iterator[ServedRequest]:
    """Serve ``request`` inside the block; ``respond(response)`` writes its closing entry."""
    served = ServedRequest(request)
    token = _request.set(served)
    try:
        yield served
    finally:
        _request.reset(token)


def annotate_request(**values: object) -> None:
    """Label the closing entry of the request being served (``run=...`` makes the run its operation)."""
    served = _request.get()
    if served is not None:
        served.labels.update({k: str(v) for k, v in values.items() if v is not None})
