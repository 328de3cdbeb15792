"""One trace per run: the API's span is the root, each step's span a child of the step that enqueued
it. The context travels as a W3C ``traceparent`` header on every Cloud Tasks hop.

Spans are exported where ``AGEX_TRACE_EXPORTER`` says: ``none`` (default; ids still flow into logs),
``console``, or ``gcp`` (Cloud Trace, needs the ``opentelemetry-exporter-gcp-trace`` package).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
_configured = False


def setup() -> None:
    global _configured
    if _configured:
        return
    _configured = True
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    exporter = os.environ.get("AGEX_TRACE_EXPORTER", "none")
    if exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "gcp":
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter  # type: ignore[import-not-found]
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(CloudTraceSpanExporter()))
    trace.set_tracer_provider(provider)


def tracer() -> trace.Tracer:
    return trace.get_tracer("agex")


def extract(headers: Mapping[str, str]) -> context.Context:
    """The trace context a request carries (``traceparent``), or an empty one."""
    carrier = {k.lower(): v for k, v in headers.items()}
    return _propagator.extract(carrier)


def current_traceparent() -> str:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", "")


def trace_id_of(traceparent: str) -> str:
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else ""


def annotate_guard(channel: str, action: str, guards: list[str]) -> None:
    """Mark the current span with a guardrail verdict: what was decided and by whom, never the content."""
    span = trace.get_current_span()
    span.set_attribute(f"agex.guard.{channel}", action)
    span.add_event("agex.guard_verdict", {"agex.guard.channel": channel, "agex.guard.action": action,
                                          "agex.guard.guards": guards})
