"""One trace per run: the API's span is the root, each step's span a child of the step that enqueued it. The
context travels as a W3C ``traceparent`` header on every Cloud Tasks hop.

Model and tool calls follow OpenTelemetry's GenAI conventions: a ``chat {model}`` client span with
``gen_ai.*`` attributes (provider, requested and answering model, token usage with its cached part, finish
reasons) and an ``execute_tool {name}`` span per tool call; both record their latency (and the model its
tokens and cost) as metrics (``agex.obs.metrics``). Spans carry names, counts and outcomes, never prompts,
arguments or outputs.

Spans are exported where ``AGEX_TRACE_EXPORTER`` says: ``none`` (default; ids still flow into logs),
``console``, or ``gcp`` (Cloud Trace, needs the ``opentelemetry-exporter-gcp-trace`` package), in batches
that the handlers ``flush()`` before they answer (Cloud Run throttles the CPU once they have).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agex.obs import metrics

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_configured = False
_lock = threading.Lock()

FLUSH_TIMEOUT_S = 2.0


def setup(project: str = "") -> None:
    """Export spans where ``AGEX_TRACE_EXPORTER`` says (to ``project``'s Cloud Trace for ``gcp``; default: the
    credentials' project). Idempotent."""
    global _configured
    with _lock:
        if _configured:
            return
        _configured = True
    exporter = os.environ.get("AGEX_TRACE_EXPORTER", "none").strip().lower()
    if exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        use(ConsoleSpanExporter(), batch=False)
    elif exporter == "gcp":
        use(cloud_trace_exporter(project))
    elif exporter in ("", "none"):
        use(None)
    else:
        raise ValueError(f"AGEX_TRACE_EXPORTER must be none, console or gcp, not {exporter!r}")
    assert _provider is not None
    trace.set_tracer_provider(_provider)


def use(exporter: SpanExporter | None, *, batch: bool = True, schedule_delay_s: float = 5.0) -> TracerProvider:
    """Trace into ``exporter`` from now on, in batches unless ``batch`` is False (``setup`` calls this; tests
    pass an ``InMemorySpanExporter``). The previous provider, if any, is shut down."""
    global _provider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=metrics.resource(), shutdown_on_exit=True)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay_s * 1000)
                                    if batch else SimpleSpanProcessor(exporter))
    with _lock:
        previous, _provider = _provider, provider
    if previous is not None:
        previous.shutdown()
    return provider


def reset() -> None:
    """Stop exporting (tests)."""
    global _provider, _configured
    with _lock:
        previous, _provider, _configured = _provider, None, False
    if previous is not None:
        previous.shutdown()


def flush(timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
    """Export the finished spans, waiting ``timeout_s`` at most: before a handler answers. False if the
    export did not finish in time (it goes on in the background, as far as the CPU allows)."""
    provider = _provider
    if provider is None:
        return True
    return metrics.bounded(lambda: provider.force_flush(timeout_millis=int(timeout_s * 1000)), timeout_s)


def cloud_trace_exporter(project: str = "", client: Any = None) -> SpanExporter:
    """A span exporter to Cloud Trace, built on its first export: importing it loads Google's client (some
    300 ms) and building it reads the credentials, neither of which a cold start should wait for.
    ``client``: a ``TraceServiceClient`` of one's own (another endpoint, other credentials)."""
    if not metrics.installed("opentelemetry.exporter.cloud_trace"):
        raise RuntimeError("AGEX_TRACE_EXPORTER=gcp needs the opentelemetry-exporter-gcp-trace package "
                           "(pip install opentelemetry-exporter-gcp-trace==1.15.0)")
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class CloudTrace(SpanExporter):
        def __init__(self) -> None:
            self._real: Any = None
            self._lock = threading.Lock()

        def _exporter(self) -> Any:
            with self._lock:
                if self._real is None:
                    from opentelemetry.exporter.cloud_trace import (  # type: ignore[import-not-found,import-untyped,unused-ignore]
                        CloudTraceSpanExporter,
                    )

                    with warnings.catch_warnings():
                        # deprecated upstream in favour of OTLP through a collector; a function has no collector
                        warnings.simplefilter("ignore", DeprecationWarning)
                        self._real = CloudTraceSpanExporter(project_id=project or None, client=client)
                return self._real

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            result: SpanExportResult = self._exporter().export(spans)
            return result

        def shutdown(self) -> None:
            if self._real is not None:
                self._real.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return CloudTrace()


def tracer() -> trace.Tracer:
    provider = _provider
    return provider.get_tracer("agex") if provider is not None else trace.get_tracer("agex")


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


def note_agent(name: str, version: str | None) -> None:
    """Name the agent of the current step: on its span, and on its ``agex.step.duration``."""
    span = trace.get_current_span()
    span.set_attribute("gen_ai.agent.name", name)
    if version:
        span.set_attribute("agex.agent.version", version)
    metrics.note_agent(name, version)


# --- GenAI: model and tool calls -----------------------------------------------------------------------------


def provider_of(model: str) -> str:
    """``gen_ai.provider.name`` of a model: Google's models are served by Vertex AI or the Gemini API,
    which the runtime does not tell apart here."""
    return "gcp.gen_ai" if model.startswith(("gemini", "gemma")) else "_OTHER"


class _Usage(Protocol):
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...


class _Response(Protocol):
    """What is read of a ``ModelResponse``."""

    @property
    def usage(self) -> _Usage: ...
    @property
    def model_version(self) -> str: ...
    @property
    def finish_reason(self) -> str: ...


class _Outcome(Protocol):
    """What is read of a ``ToolOutcome``."""

    @property
    def ok(self) -> bool: ...
    @property
    def retry_after_s(self) -> float | None: ...


T = TypeVar("T", bound=_Outcome)


class ModelCall:
    """The model call in progress: ``record`` its response (a call that ends without one failed)."""

    def __init__(self, span: trace.Span, model: str) -> None:
        self.span, self.model = span, model
        self.outcome: str | None = None
        self.input_tokens = self.output_tokens = 0
        self.cost_usd = 0.0
        self.ended: float | None = None
        """When the model answered (or failed): what the caller does next is not the call's latency."""

    def record(self, response: _Response, cost_usd: float | None = None) -> None:
        self.ended = time.perf_counter()
        self.outcome = "ok"
        self.input_tokens, self.output_tokens = response.usage.input_tokens, response.usage.output_tokens
        self.cost_usd = cost_usd or 0.0
        self.span.set_attributes({
            "gen_ai.response.model": response.model_version or self.model,
            "gen_ai.usage.input_tokens": self.input_tokens,
            "gen_ai.usage.output_tokens": self.output_tokens,
            # the GenAI conventions' name: a part of input_tokens, served from the provider's cache
            "gen_ai.usage.cache_read.input_tokens": int(getattr(response.usage, "cached_input_tokens", 0) or 0),
        })
        if response.finish_reason:
            self.span.set_attribute("gen_ai.response.finish_reasons", [response.finish_reason])
        if cost_usd is not None:
            self.span.set_attribute("agex.cost_usd", cost_usd)

    def failed(self, error: BaseException) -> None:
        """The call failed with ``error`` (caught by the caller, so the span cannot see it)."""
        self.ended = time.perf_counter()
        self.outcome = "error"
        self.span.set_attribute("error.type", _error_type(error))
        self.span.set_status(Status(StatusCode.ERROR, _error_type(error)))


@contextlib.contextmanager
def model_call(model: str, *, agent: str | None = None, agent_version: str | None = None,
               provider: str | None = None, run: str | None = None) -> Iterator[ModelCall]:
    """A ``chat {model}`` span, and the call's latency, tokens and cost as metrics when it ends."""
    name = provider or provider_of(model)
    attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": name,
                                  "gen_ai.system": name, "gen_ai.request.model": model}
    if agent:
        attributes["gen_ai.agent.name"] = agent
    if agent_version:
        attributes["agex.agent.version"] = agent_version
    if run:
        attributes["gen_ai.conversation.id"] = run
    start = time.perf_counter()
    with tracer().start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes) as span:
        call = ModelCall(span, model)
        try:
            yield call
        except BaseException as e:
            call.outcome = "error"
            span.set_attribute("error.type", _error_type(e))
            raise
        finally:
            metrics.record_model(agent=agent, agent_version=agent_version, model=model,
                                 outcome=call.outcome or "error", seconds=(call.ended or time.perf_counter()) - start,
                                 input_tokens=call.input_tokens, output_tokens=call.output_tokens,
                                 cost_usd=call.cost_usd)


class ToolCall:
    """The tool call in progress: ``record`` its outcome (a call that raises is an error)."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.outcome: str | None = None

    def record(self, outcome: T) -> T:
        """Note ``outcome`` (a ``ToolOutcome``) and hand it back: ``ok``, ``error``, or ``deferred`` when the
        tool (or its rate limit) asked to be called again later."""
        self.outcome = "deferred" if outcome.retry_after_s is not None else "ok" if outcome.ok else "error"
        self.span.set_attribute("agex.tool.outcome", self.outcome)
        if self.outcome == "error":
            self.span.set_attribute("error.type", "tool_error")
            self.span.set_status(Status(StatusCode.ERROR, "tool_error"))
        return outcome


@contextlib.contextmanager
def tool_call(name: str, *, call_id: str | None = None, agent: str | None = None,
              agent_version: str | None = None) -> Iterator[ToolCall]:
    """An ``execute_tool {name}`` span, and the call's latency as a metric when it ends. Only for a tool the
    agent declares: a name the model made up is no metric attribute."""
    attributes: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                                  "gen_ai.tool.type": "function", "agex.tool": name}
    if call_id:
        attributes["gen_ai.tool.call.id"] = call_id
    start = time.perf_counter()
    with tracer().start_as_current_span(f"execute_tool {name}", attributes=attributes) as span:
        call = ToolCall(span)
        try:
            yield call
        except BaseException as e:
            call.outcome = "error"
            span.set_attribute("error.type", _error_type(e))
            raise
        finally:
            metrics.record_tool(agent=agent, agent_version=agent_version, tool=name,
                                outcome=call.outcome or "error", seconds=time.perf_counter() - start)


def _error_type(error: BaseException) -> str:
    code = getattr(error, "code", None)
    return code if isinstance(code, str) and code else type(error).__name__
