"""Structured logs in Cloud Logging's JSON format, labelled with run, agent, tenant and step.

Cloud Run ships each stdout line that is a JSON object as a structured entry: ``severity`` and
``message`` become the entry's, ``logging.googleapis.com/trace`` and ``.../spanId`` link it to Cloud
Trace, ``logging.googleapis.com/labels`` become filterable labels.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

_labels: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("agex_log_labels", default={})  # noqa: B039

_SEVERITY = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "CRITICAL"}


@contextlib.contextmanager
def labels(**values: object) -> Iterator[None]:
    """Add labels to every log line written inside the block (run, agent, tenant, step...)."""
    token = _labels.set({**_labels.get(), **{k: str(v) for k, v in values.items() if v is not None}})
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
            entry["logging.googleapis.com/trace"] = f"projects/{self.project}/traces/{span.trace_id:032x}"
            entry["logging.googleapis.com/spanId"] = f"{span.span_id:016x}"
            entry["logging.googleapis.com/trace_sampled"] = bool(span.trace_flags.sampled)
        current = _labels.get()
        if current:
            entry["logging.googleapis.com/labels"] = current
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
    logger.info(message, extra={"fields": fields})
