"""Cloud conventions of the runtime's telemetry: each request ends with a Cloud Logging entry carrying
``httpRequest``, ``sourceLocation`` and the run as its ``operation``; model and tool calls are spans with
OpenTelemetry's GenAI attributes, exported before the handler answers (Cloud Run throttles the CPU after);
step, model and tool latency, tokens and cost are metrics with bounded attributes.

Requests go through the real handlers (the step endpoint behind its OIDC check, the public API) on the
in-memory runtime; spans go to an in-memory exporter behind a batch processor that would wait an hour, so
only the handler's flush can have exported them; metrics to an in-memory reader."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel
from werkzeug.test import Client
from werkzeug.wrappers import Request

from agex.adapters.gcp.oidc import GoogleIdTokens, OidcVerifier
from agex.app.http.step_endpoint import StepEndpoint
from agex.app.runtime import Runtime
from agex.core.agent import Agent
from agex.core.errors import LeaseHeld, ModelError
from agex.core.run import RunStatus
from agex.core.tool import ToolOutcome
from agex.obs import logging as log
from agex.obs import metrics, tracing
from agex.testing.harness import InMemoryRuntime
from agex.testing.models import scripted
from agex.tools import ToolContext, tool

from .conftest import GOOGLE

STEP = "agex-step@p.iam.gserviceaccount.com"
AUDIENCE = "https://agex-step.example.run.app/"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Order(BaseModel):
    order_id: str


@tool
def lookup_order(args: Order, ctx: ToolContext) -> dict[str, Any]:
    """Look an order up."""
    return {"order_id": args.order_id, "amount_usd": 89.0}


AGENT = Agent(name="shop", version="7", instructions="help", tools=(lookup_order,))


@pytest.fixture
def telemetry() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracing.use(spans, schedule_delay_s=3600)  # nothing leaves the batch but by a flush
    metrics.use(reader)
    try:
        yield spans, reader
    finally:
        tracing.reset()
        metrics.reset()


class Logged:
    """Every entry the ``agex`` loggers write, as Cloud Run would ship it (one JSON object a line)."""

    def __init__(self) -> None:
        self.out = io.StringIO()

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]


@pytest.fixture
def logged() -> Iterator[Logged]:
    captured = Logged()
    handler = logging.StreamHandler(captured.out)
    handler.setFormatter(log.CloudLoggingFormatter("agex-test"))
    root = logging.getLogger("agex")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield captured
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    data = reader.get_metrics_data()
    found = []
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    found += [(dict(p.attributes or {}), p) for p in m.data.data_points]
    return found


def step_client(rt: InMemoryRuntime, certs_url: str) -> Client:
    verify = OidcVerifier(GoogleIdTokens(audience=AUDIENCE, certs_url=certs_url), STEP)
    endpoint = StepEndpoint(runner=rt.runner, service=rt.service, approvals=rt.applier, verify=verify,
                            instance="test")
    return Client(Request.application(endpoint))  # type: ignore[arg-type]


def deliver_all(rt: InMemoryRuntime, client: Client, seen: list[Sequence[ReadableSpan]],
                spans: InMemorySpanExporter) -> list[int]:
    """Deliver every due task through the step endpoint, as Cloud Tasks would; note after each answer
    which spans had been exported by then."""
    statuses: list[int] = []

    def handle(task: Any, attempt: int) -> bool:
        response = client.post("/", json={"tenant": task.tenant, "run_id": task.run_id, "step": task.step},
                               headers={"Authorization": f"Bearer {GOOGLE.id_token(STEP, AUDIENCE)}",
                                        "traceparent": TRACEPARENT, "User-Agent": "Google-Cloud-Tasks",
                                        "X-Forwarded-For": "203.0.113.9, 10.0.0.1",
                                        "X-CloudTasks-TaskName": task.name})
        seen.append(spans.get_finished_spans())
        statuses.append(response.status_code)
        return response.status_code < 300

    while rt.queue.deliver_due(rt.clock.now(), handle):
        pass
    return statuses


# --- a run through the step endpoint ----------------------------------------------------------------------


@pytest.fixture
def served_run(telemetry: tuple[InMemorySpanExporter, InMemoryMetricReader], logged: Logged,
               certs_url: str) -> dict[str, Any]:
    spans, reader = telemetry
    rt = InMemoryRuntime([AGENT], scripted([("lookup_order", {"order_id": "A-1"})], "Your order is A-1."))
    run = rt.start("shop", "where is my order?")
    seen: list[Sequence[ReadableSpan]] = []
    statuses = deliver_all(rt, step_client(rt, certs_url), seen, spans)
    head = rt.store.get_run("dev", run.run_id)
    assert head is not None and head.status == RunStatus.succeeded, head
    return {"run": run.run_id, "statuses": statuses, "seen": seen, "spans": spans.get_finished_spans(),
            "entries": logged.entries(), "reader": reader}


def test_each_step_request_ends_with_an_entry_carrying_http_request_and_the_run_as_operation(
        served_run: dict[str, Any]) -> None:
    closing = [e for e in served_run["entries"] if "httpRequest" in e]
    assert [e["httpRequest"]["status"] for e in closing] == served_run["statuses"] == [200, 200]
    for entry in closing:
        http = entry["httpRequest"]
        assert http["requestMethod"] == "POST" and http["requestUrl"] == "http://localhost/"
        assert re.fullmatch(r"\d+\.\d{6}s", http["latency"]), http
        assert http["userAgent"] == "Google-Cloud-Tasks" and http["remoteIp"] == "203.0.113.9"
        assert int(http["responseSize"]) > 0
        assert entry["logging.googleapis.com/operation"] == {"id": served_run["run"], "producer": "agex/run"}
        # the labels set while serving: the task's, and the agent the runner found
        assert entry["logging.googleapis.com/labels"] == {
            "run": served_run["run"], "tenant": "dev", "step": entry["logging.googleapis.com/labels"]["step"],
            "agent": "shop"}
        assert entry["logging.googleapis.com/sourceLocation"]["file"].endswith("responses.py")
        assert entry["logging.googleapis.com/sourceLocation"]["function"] == "served"
        # the task's trace: the closing entry joins it
        assert entry["logging.googleapis.com/trace"] == "projects/agex-test/traces/4bf92f3577b34da6a3ce929d0e0e4736"
        # never an outcome: the log-based metric agex_runs_finished counts outcome="finished" entries
        assert "outcome" not in entry


def test_entries_name_the_line_that_logged_and_keep_their_fields(served_run: dict[str, Any]) -> None:
    started = [e for e in served_run["entries"] if e["message"].startswith("step 1 started")]
    assert len(started) == 1
    entry = started[0]
    where = entry["logging.googleapis.com/sourceLocation"]
    assert where["file"].endswith("stepper.py") and where["function"] == "_work" and int(where["line"]) > 0
    assert entry["logging.googleapis.com/operation"] == {"id": served_run["run"], "producer": "agex/run"}
    assert entry["attempt"] == 0 and entry["severity"] == "INFO" and entry["logger"] == "agex.step"
    finished = [e for e in served_run["entries"] if e.get("outcome") == "finished"]
    assert len(finished) == 1 and finished[0]["status"] == "succeeded"


def test_model_and_tool_spans_follow_the_genai_conventions(served_run: dict[str, Any]) -> None:
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in served_run["spans"]:
        by_name.setdefault(span.name, []).append(span)
    assert set(by_name) >= {"step 1", "step 2", "chat gemini-2.5-flash", "execute_tool lookup_order"}
    chat = by_name["chat gemini-2.5-flash"]
    assert len(chat) == 2
    for span in chat:
        a = span.attributes or {}
        assert span.kind == SpanKind.CLIENT
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "gemini-2.5-flash"
        assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "gcp.gen_ai"
        assert a["gen_ai.response.model"] == "gemini-2.5-flash"
        assert a["gen_ai.response.finish_reasons"] == ("STOP",)
        assert int(str(a["gen_ai.usage.input_tokens"])) > 0 and int(str(a["gen_ai.usage.output_tokens"])) > 0
        assert a["gen_ai.agent.name"] == "shop" and a["gen_ai.conversation.id"] == served_run["run"]
        assert float(str(a["agex.cost_usd"])) > 0
    (execute,) = by_name["execute_tool lookup_order"]
    a = execute.attributes or {}
    assert a["gen_ai.operation.name"] == "execute_tool" and a["gen_ai.tool.name"] == "lookup_order"
    assert a["gen_ai.tool.call.id"] == "call-0" and a["agex.tool.outcome"] == "ok"
    # one trace, continued from the task's traceparent: the model and tool spans are children of the step's
    step1 = by_name["step 1"][0]
    assert {s.context.trace_id for s in served_run["spans"]} == {0x4bf92f3577b34da6a3ce929d0e0e4736}
    assert execute.parent is not None and execute.parent.span_id == step1.context.span_id
    assert (step1.attributes or {})["gen_ai.agent.name"] == "shop"


def test_spans_are_exported_before_the_step_answers(served_run: dict[str, Any]) -> None:
    first, second = served_run["seen"]
    assert {s.name for s in first} == {"step 1", "chat gemini-2.5-flash", "execute_tool lookup_order"}
    assert {s.name for s in second} - {s.name for s in first} == {"step 2"}


def test_latency_tokens_and_cost_are_metrics_per_agent_version(served_run: dict[str, Any]) -> None:
    reader = served_run["reader"]
    steps = points(reader, metrics.STEP_DURATION)
    assert sorted((a["outcome"], p.count) for a, p in steps) == [("committed", 1), ("finished", 1)]
    assert all(a["agent"] == "shop" and a["agent_version"] == "7" for a, _ in steps)
    (model_attributes, model), = points(reader, metrics.MODEL_DURATION)
    assert model_attributes == {"agent": "shop", "agent_version": "7", "model": "gemini-2.5-flash", "outcome": "ok"}
    assert model.count == 2 and model.sum > 0
    assert [(a["tool"], a["outcome"], p.count) for a, p in points(reader, metrics.TOOL_DURATION)] == [
        ("lookup_order", "ok", 1)]
    tokens = {a["type"]: p.value for a, p in points(reader, metrics.MODEL_TOKENS)}
    spans = [s for s in served_run["spans"] if s.name.startswith("chat ")]
    assert tokens == {"input": sum(int(str((s.attributes or {})["gen_ai.usage.input_tokens"])) for s in spans),
                      "output": sum(int(str((s.attributes or {})["gen_ai.usage.output_tokens"])) for s in spans)}
    ((_, cost),) = points(reader, metrics.MODEL_COST)
    assert cost.value == pytest.approx(sum(float(str((s.attributes or {})["agex.cost_usd"])) for s in spans))
    assert sorted((a["outcome"], p.value) for a, p in points(reader, metrics.STEPS)) == [
        ("committed", 1), ("finished", 1)]
    # the declared attributes only (the dashboards and alert policies filter on them); a run id would make
    # a time series per run
    for name, declared in metrics.ATTRIBUTES.items():
        if name == metrics.DEGRADATIONS:  # recorded by the drift function's SLO evaluation, not by steps
            continue
        recorded = points(reader, name)
        assert recorded, name
        for attributes, _ in recorded:
            assert set(attributes) == set(declared) and served_run["run"] not in attributes.values()


# --- the public API ---------------------------------------------------------------------------------------


def test_an_api_request_ends_with_its_entry_and_its_span_exported(
        telemetry: tuple[InMemorySpanExporter, InMemoryMetricReader], logged: Logged) -> None:
    spans, _ = telemetry
    rt = InMemoryRuntime([AGENT], scripted("hello"))
    api = Runtime(rt.runtime.settings.model_copy(update={"dev_tokens": "tok=dev:dev@example.com"}),
                  rt.runtime.backends, agents=rt.agents).public_api
    client = Client(Request.application(api))  # type: ignore[arg-type]
    response = client.post("/v1/agents/shop/runs", json={"input": "hi"},
                           headers={"Authorization": "Bearer tok", "User-Agent": "curl/8"})
    assert response.status_code == 202 and response.json is not None
    run_id = response.json["run_id"]
    (span,) = spans.get_finished_spans()
    assert span.kind == SpanKind.SERVER and (span.attributes or {})["http.response.status_code"] == 202
    entries = logged.entries()
    (closing,) = [e for e in entries if "httpRequest" in e]
    assert closing["httpRequest"]["requestMethod"] == "POST" and closing["httpRequest"]["status"] == 202
    assert closing["httpRequest"]["requestUrl"] == "http://localhost/v1/agents/shop/runs"
    assert closing["logging.googleapis.com/operation"] == {"id": run_id, "producer": "agex/run"}
    assert closing["logging.googleapis.com/labels"]["tenant"] == "dev"
    assert closing["logging.googleapis.com/spanId"] == f"{span.context.span_id:016x}"
    started = [e for e in entries if e["message"] == "run started"]
    assert started[0]["logging.googleapis.com/operation"]["id"] == run_id
    assert started[0]["logging.googleapis.com/sourceLocation"]["function"] == "_started"


# --- the helpers, one behaviour at a time ----------------------------------------------------------------------


def test_a_model_call_that_fails_is_an_error_span_and_metric(
        telemetry: tuple[InMemorySpanExporter, InMemoryMetricReader]) -> None:
    spans, reader = telemetry
    with tracing.model_call("gemini-2.5-pro", agent="shop", agent_version="7") as call:
        call.failed(ModelError("quota exhausted"))
    with pytest.raises(RuntimeError), tracing.model_call("gemini-2.5-pro", agent="shop", agent_version="7"):
        raise RuntimeError("dropped connection")
    assert tracing.flush()
    caught, raised = spans.get_finished_spans()
    assert (caught.attributes or {})["error.type"] == "model_error" and caught.status.status_code == StatusCode.ERROR
    assert (raised.attributes or {})["error.type"] == "RuntimeError" and raised.status.status_code == StatusCode.ERROR
    calls = {a["outcome"]: p.value for a, p in points(reader, metrics.MODEL_CALLS)}
    assert calls == {"error": 2}
    assert points(reader, metrics.MODEL_TOKENS) == [] and points(reader, metrics.MODEL_COST) == []


@pytest.mark.parametrize(("outcome", "expected"), [
    (ToolOutcome(True, {}), "ok"), (ToolOutcome(False, {"error": "no such order"}), "error"),
    (ToolOutcome(False, {"error": "rate limited"}, retry_after_s=30.0), "deferred")])
def test_a_tool_call_records_its_outcome(telemetry: tuple[InMemorySpanExporter, InMemoryMetricReader],
                                         outcome: ToolOutcome, expected: str) -> None:
    spans, reader = telemetry
    with tracing.tool_call("lookup_order", call_id="c1", agent="shop", agent_version="7") as call:
        assert call.record(outcome) is outcome
    tracing.flush()
    (span,) = spans.get_finished_spans()
    assert (span.attributes or {})["agex.tool.outcome"] == expected
    assert (span.status.status_code == StatusCode.ERROR) == (expected == "error")
    assert [(a["outcome"], p.count) for a, p in points(reader, metrics.TOOL_DURATION)] == [(expected, 1)]


def test_a_step_that_raises_has_the_errors_code_as_outcome(
        telemetry: tuple[InMemorySpanExporter, InMemoryMetricReader]) -> None:
    _, reader = telemetry
    with pytest.raises(LeaseHeld), metrics.step():
        metrics.note_agent("shop", "7")
        raise LeaseHeld("held by another attempt")
    with pytest.raises(ZeroDivisionError), metrics.step():
        _ = 1 / 0
    outcomes = {(a["agent"], a["outcome"]) for a, _ in points(reader, metrics.STEP_DURATION)}
    assert outcomes == {("shop", "lease_held"), ("unknown", "error")}


def test_attribute_values_are_bounded(telemetry: tuple[InMemorySpanExporter, InMemoryMetricReader]) -> None:
    _, reader = telemetry
    metrics.record_tool(agent="shop", agent_version=None, tool="t" * 500, outcome="ok", seconds=0.1)
    ((attributes, _),) = points(reader, metrics.TOOL_DURATION)
    assert len(attributes["tool"]) == 100 and attributes["agent_version"] == "unknown"


class _Slow(SpanExporter):
    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10)
        return SpanExportResult.SUCCESS


def test_a_flush_waits_a_bounded_time_for_a_slow_exporter() -> None:
    slow = _Slow()
    tracing.use(slow, schedule_delay_s=3600)
    try:
        with tracing.tracer().start_as_current_span("work"):
            pass
        started = time.perf_counter()
        assert tracing.flush(timeout_s=0.2) is False
        assert time.perf_counter() - started < 1.0
    finally:
        slow.release.set()
        tracing.reset()


def test_a_plain_entry_keeps_its_shape(logged: Logged) -> None:
    logger = log.get("test")
    with log.labels(tenant="acme"):
        log.info(logger, "refused", security_event="push_unauthenticated", outcome="refused")
    (entry,) = logged.entries()
    assert entry["security_event"] == "push_unauthenticated" and entry["outcome"] == "refused"
    assert entry["logging.googleapis.com/labels"] == {"tenant": "acme"}
    assert "logging.googleapis.com/operation" not in entry and "httpRequest" not in entry
    assert entry["logging.googleapis.com/sourceLocation"]["function"] == "test_a_plain_entry_keeps_its_shape"


# --- exporters --------------------------------------------------------------------------------------------


def test_the_metrics_exporter_is_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics.reset()
    monkeypatch.setenv("AGEX_METRICS_EXPORTER", "prometheus")
    with pytest.raises(ValueError, match="none, console or gcp"):
        metrics.setup("p")
    metrics.reset()
    monkeypatch.setenv("AGEX_METRICS_EXPORTER", "none")
    metrics.setup("p")
    metrics.record_step(agent="shop", agent_version="7", outcome="committed", seconds=0.1)  # a no-op
    assert metrics.flush() is True
    metrics.reset()


def test_without_its_package_the_gcp_exporter_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.cloud_monitoring", None)
    with pytest.raises(RuntimeError, match="opentelemetry-exporter-gcp-monitoring"):
        metrics.cloud_monitoring_exporter("p")


@contextlib.contextmanager
def google_service(service: str, methods: dict[str, tuple[Any, Any]]) -> Iterator[Any]:
    """``service`` served over gRPC on localhost, each method answering with ``handle(request)``; yields a
    channel to it (Google's clients take one in place of Google's endpoint and credentials)."""
    from concurrent import futures

    import grpc

    handlers = {name: grpc.unary_unary_rpc_method_handler(
        lambda request, context, handle=handle: handle(request), request_deserializer=request_type.deserialize,
        response_serializer=lambda m: m.SerializeToString()) for name, (request_type, handle) in methods.items()}
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield grpc.insecure_channel(f"127.0.0.1:{port}")
    finally:
        server.stop(0)


def test_the_gcp_metrics_exporter_writes_workload_metrics_paced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Against Cloud Monitoring's MetricService on localhost: the requests as Cloud Monitoring gets them
    (metric types, labels, the generic_task resource), a flush within the pace skipped, the totals sent
    at shutdown."""
    # the exporter is a dev dependency (requirements.lock): a missing one is a failed set-up, not a skip
    assert metrics.installed("opentelemetry.exporter.cloud_monitoring")
    from google.cloud.monitoring_v3 import (
        CreateMetricDescriptorRequest,
        CreateTimeSeriesRequest,
        MetricServiceClient,
    )
    from google.cloud.monitoring_v3.services.metric_service.transports.grpc import MetricServiceGrpcTransport
    from google.protobuf import empty_pb2
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    series: list[Any] = []
    descriptors: list[str] = []

    def create_time_series(request: Any) -> Any:
        series.extend(request.time_series)
        return empty_pb2.Empty()

    def create_metric_descriptor(request: Any) -> Any:
        descriptors.append(request.metric_descriptor.type)
        return request.metric_descriptor

    monkeypatch.setenv("K_SERVICE", "agex-step")
    monkeypatch.setenv("AGEX_LOCATION", "europe-west1")
    with google_service("google.monitoring.v3.MetricService", {
            "CreateTimeSeries": (CreateTimeSeriesRequest, create_time_series),
            "CreateMetricDescriptor": (CreateMetricDescriptorRequest, create_metric_descriptor)}) as channel:
        client = MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))
        metrics.use(PeriodicExportingMetricReader(metrics.cloud_monitoring_exporter("agex-test", client=client),
                                                  export_interval_millis=3_600_000))
        try:
            metrics.record_step(agent="shop", agent_version="7", outcome="committed", seconds=0.4)
            assert metrics.flush()
            written = len(series)
            metrics.record_step(agent="shop", agent_version="7", outcome="committed", seconds=0.4)
            assert metrics.flush() and len(series) == written  # within the pace: left for the next export
        finally:
            metrics.reset()
    assert "workload.googleapis.com/agex.step.duration" in descriptors
    step = [s for s in series if s.metric.type == "workload.googleapis.com/agex.step.duration"]
    assert dict(step[0].metric.labels) == {"agent": "shop", "agent_version": "7", "outcome": "committed"}
    assert step[0].resource.type == "generic_task"
    resource = dict(step[0].resource.labels)
    assert resource["job"] == "agex-step" and resource["location"] == "europe-west1" and resource["task_id"]
    assert step[-1].points[0].value.distribution_value.count == 2  # the shutdown sent the last totals


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the exporter's own, upstream
def test_the_gcp_trace_exporter_loads_on_its_first_export() -> None:
    """Against Cloud Trace's TraceService on localhost: building the exporter loads nothing (Google's client
    takes some 300 ms to import); the flush writes the spans, GenAI attributes included."""
    assert metrics.installed("opentelemetry.exporter.cloud_trace")  # a dev dependency: never a skip
    tracing.cloud_trace_exporter("agex-test")
    assert "opentelemetry.exporter.cloud_trace" not in sys.modules
    from google.cloud.trace_v2 import BatchWriteSpansRequest, TraceServiceClient
    from google.cloud.trace_v2.services.trace_service.transports import TraceServiceGrpcTransport
    from google.protobuf import empty_pb2

    written: list[Any] = []

    def batch_write_spans(request: Any) -> Any:
        written.extend(request.spans)
        return empty_pb2.Empty()

    with google_service("google.devtools.cloudtrace.v2.TraceService",
                        {"BatchWriteSpans": (BatchWriteSpansRequest, batch_write_spans)}) as channel:
        client = TraceServiceClient(transport=TraceServiceGrpcTransport(channel=channel))
        tracing.use(tracing.cloud_trace_exporter("agex-test", client=client), schedule_delay_s=3600)
        try:
            with tracing.model_call("gemini-2.5-flash", agent="shop") as call:
                call.failed(ModelError("quota"))
            assert tracing.flush()
        finally:
            tracing.reset()
    (span,) = written
    assert span.display_name.value == "chat gemini-2.5-flash"
    assert span.name.startswith("projects/agex-test/traces/")
    labels = {k: v.string_value.value for k, v in span.attributes.attribute_map.items()}
    assert labels["gen_ai.operation.name"] == "chat" and labels["error.type"] == "model_error"
