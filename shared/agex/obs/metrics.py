"""Runtime metrics through OpenTelemetry: step, model and tool latency, tokens and cost, per agent version.

Exported where ``AGEX_METRICS_EXPORTER`` says: ``none`` (default; recording costs nothing), ``console``,
or ``gcp`` (Cloud Monitoring, needs the ``opentelemetry-exporter-gcp-monitoring`` package), where an
instrument named ``agex.step.duration`` becomes the metric type ``workload.googleapis.com/agex.step.duration``.

Attributes are bounded by the deployment, never by the traffic: agent, agent_version, model, tool and an
outcome from a short list; no run, tenant or call ids (each would be a time series of its own).

Cloud Run throttles the CPU between requests, so the periodic export cannot be relied on: the handlers call
``flush()`` before they answer. Cloud Monitoring takes one point per time series every few seconds, so
exports to it are paced: a flush soon after the last export is skipped, and the cumulative totals go with
the next one.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from opentelemetry import metrics as otel_metrics

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.resources import Resource

STEP_DURATION = "agex.step.duration"
STEPS = "agex.steps"
MODEL_DURATION = "agex.model.duration"
TOOL_DURATION = "agex.tool.duration"
MODEL_CALLS = "agex.model.calls"
MODEL_TOKENS = "agex.model.tokens"
MODEL_COST = "agex.model.cost"
DEGRADATIONS = "agex.degradations"
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    STEP_DURATION: ("agent", "agent_version", "outcome"),
    STEPS: ("agent", "agent_version", "outcome"),
    MODEL_DURATION: ("agent", "agent_version", "model", "outcome"),
    MODEL_CALLS: ("agent", "agent_version", "model", "outcome"),
    MODEL_TOKENS: ("agent", "agent_version", "model", "type"),
    MODEL_COST: ("agent", "agent_version", "model"),
    TOOL_DURATION: ("agent", "agent_version", "tool", "outcome"),
    DEGRADATIONS: ("agent", "source", "event"),
}
"""Each instrument and the attributes of its points (the labels of its time series)."""
HISTOGRAMS = (STEP_DURATION, MODEL_DURATION, TOOL_DURATION)
METRIC_PREFIX = "workload.googleapis.com"
"""Where Cloud Monitoring files OpenTelemetry metrics: ``workload.googleapis.com/agex.step.duration``."""

# seconds: a tool call of a few milliseconds to a step cut off by the function's timeout
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
           600.0, 1800.0)
EXPORT_INTERVAL_S = 60.0
GCP_MIN_EXPORT_INTERVAL_S = 6.0
"""Cloud Monitoring refuses a point written less than 5 s after the previous one of its time series."""
FLUSH_TIMEOUT_S = 2.0
_MAX_ATTRIBUTE = 100
UNKNOWN = "unknown"


@dataclass(frozen=True)
class _Instruments:
    step: otel_metrics.Histogram
    steps: otel_metrics.Counter
    model: otel_metrics.Histogram
    tool: otel_metrics.Histogram
    calls: otel_metrics.Counter
    tokens: otel_metrics.Counter
    cost: otel_metrics.Counter
    degradations: otel_metrics.Counter


_provider: MeterProvider | None = None
_instruments: _Instruments | None = None
_configured = False
_lock = threading.Lock()


def resource() -> Resource:
    """This process as OpenTelemetry describes it, for spans and metrics alike. On Cloud Run the metrics land
    on a ``generic_task`` (location, namespace ``agex``, job = the service, task = this instance), so that two
    instances never write to the same time series."""
    from opentelemetry.sdk.resources import Resource

    service = os.environ.get("K_SERVICE") or "agex"
    attributes: dict[str, str] = {
        "service.name": service,
        "service.namespace": "agex",
        "service.instance.id": f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
    }
    if os.environ.get("K_REVISION"):
        attributes["service.version"] = os.environ["K_REVISION"]
    region = os.environ.get("AGEX_LOCATION") or os.environ.get("GOOGLE_CLOUD_REGION")
    if region:
        attributes["cloud.region"] = region
    return Resource.create(attributes)


def setup(project: str = "") -> None:
    """Export the runtime's metrics where ``AGEX_METRICS_EXPORTER`` says. Idempotent."""
    global _configured
    with _lock:
        if _configured:
            return
        _configured = True
    exporter = os.environ.get("AGEX_METRICS_EXPORTER", "none").strip().lower()
    if exporter in ("", "none"):
        return
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricExporter,
        PeriodicExportingMetricReader,
    )

    chosen: MetricExporter
    if exporter == "console":
        chosen = ConsoleMetricExporter()
    elif exporter == "gcp":
        chosen = cloud_monitoring_exporter(project)
    else:
        raise ValueError(f"AGEX_METRICS_EXPORTER must be none, console or gcp, not {exporter!r}")
    use(PeriodicExportingMetricReader(chosen, export_interval_millis=EXPORT_INTERVAL_S * 1000))


def use(reader: MetricReader) -> MeterProvider:
    """Record into ``reader`` from now on (``setup`` calls this; tests pass an ``InMemoryMetricReader``).
    The previous provider, if any, is shut down."""
    global _provider, _instruments
    from opentelemetry.sdk.metrics import MeterProvider

    provider = MeterProvider(metric_readers=[reader], resource=resource(), shutdown_on_exit=True)
    meter = provider.get_meter("agex")
    instruments = _Instruments(
        step=meter.create_histogram(STEP_DURATION, "s", "One step of one run, from its delivery to its answer.",
                                    explicit_bucket_boundaries_advisory=BUCKETS),
        steps=meter.create_counter(STEPS, "{step}", "Steps, by outcome (committed, finished, waiting, stale...)."),
        model=meter.create_histogram(MODEL_DURATION, "s", "One model call.",
                                     explicit_bucket_boundaries_advisory=BUCKETS),
        tool=meter.create_histogram(TOOL_DURATION, "s", "One tool call.",
                                    explicit_bucket_boundaries_advisory=BUCKETS),
        calls=meter.create_counter(MODEL_CALLS, "{call}", "Model calls, by outcome (ok, error)."),
        tokens=meter.create_counter(MODEL_TOKENS, "{token}", "Tokens the model read (input) and wrote (output)."),
        cost=meter.create_counter(MODEL_COST, "{USD}", "Estimated cost of the model calls, in US dollars."),
        degradations=meter.create_counter(DEGRADATIONS, "{transition}",
                                          "An agent's steps began (entered) or stopped (recovered) being degraded."),
    )
    with _lock:
        previous, _provider, _instruments = _provider, provider, instruments
    if previous is not None:
        previous.shutdown(timeout_millis=FLUSH_TIMEOUT_S * 1000)
    return provider


def reset() -> None:
    """Stop recording (tests)."""
    global _provider, _instruments, _configured
    with _lock:
        previous, _provider, _instruments, _configured = _provider, None, None, False
    if previous is not None:
        previous.shutdown(timeout_millis=FLUSH_TIMEOUT_S * 1000)


def flush(timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
    """Export what was recorded, waiting ``timeout_s`` at most: before a handler answers, since Cloud Run
    throttles the CPU once it has. False if it did not finish in time (it goes on in the background)."""
    provider = _provider
    if provider is None:
        return True
    return bounded(lambda: provider.force_flush(timeout_millis=timeout_s * 1000), timeout_s)


def bounded(work: Callable[[], object], timeout_s: float) -> bool:
    """Run ``work`` for ``timeout_s`` at most (exporters' own deadlines are long, and retried)."""
    done = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except Exception as e:  # an exporter's failure must never fail the request it follows
            failed.append(e)
        finally:
            done.set()

    threading.Thread(target=run, name="agex-flush", daemon=True).start()
    return done.wait(timeout_s) and not failed


# --- recording -------------------------------------------------------------------------------------------


def _value(value: object) -> str:
    text = str(value) if value not in (None, "") else UNKNOWN
    return text[:_MAX_ATTRIBUTE]


def _attributes(**values: object) -> dict[str, str]:
    return {k: _value(v) for k, v in values.items()}


def record_step(*, agent: str | None, agent_version: str | None, outcome: str, seconds: float) -> None:
    found = _instruments
    if found is not None:
        attributes = _attributes(agent=agent, agent_version=agent_version, outcome=outcome)
        found.step.record(seconds, attributes)
        found.steps.add(1, attributes)


def record_model(*, agent: str | None, agent_version: str | None, model: str, outcome: str, seconds: float,
                 input_tokens: int = 0, output_tokens: int = 0, cost_usd: float = 0.0) -> None:
    found = _instruments
    if found is None:
        return
    attributes = _attributes(agent=agent, agent_version=agent_version, model=model)
    found.model.record(seconds, {**attributes, "outcome": _value(outcome)})
    found.calls.add(1, {**attributes, "outcome": _value(outcome)})
    if input_tokens:
        found.tokens.add(input_tokens, {**attributes, "type": "input"})
    if output_tokens:
        found.tokens.add(output_tokens, {**attributes, "type": "output"})
    if cost_usd:
        found.cost.add(cost_usd, attributes)


def record_tool(*, agent: str | None, agent_version: str | None, tool: str, outcome: str, seconds: float) -> None:
    found = _instruments
    if found is not None:
        found.tool.record(seconds, _attributes(agent=agent, agent_version=agent_version, tool=tool, outcome=outcome))


def record_degradation(*, agent: str, source: str, event: str) -> None:
    """An agent entered or recovered from a degradation (``event``: entered, recovered)."""
    found = _instruments
    if found is not None:
        found.degradations.add(1, _attributes(agent=agent, source=source, event=event))


class _HasOutcome(Protocol):
    @property
    def outcome(self) -> object: ...


R = TypeVar("R", bound=_HasOutcome)


class StepMeter:
    """The step being timed: its agent once known (``note_agent``), its outcome once it ends."""

    def __init__(self) -> None:
        self.agent: str | None = None
        self.agent_version: str | None = None
        self.outcome: str | None = None

    def ended(self, result: R) -> R:
        """Take the step's outcome from its result (``StepResult``), and hand the result back."""
        self.outcome = str(getattr(result.outcome, "value", result.outcome))
        return result


_step: contextvars.ContextVar[StepMeter | None] = contextvars.ContextVar("agex_step_meter", default=None)


@contextlib.contextmanager
def step() -> Iterator[StepMeter]:
    """Time one step: ``agex.step.duration`` with its agent, version and outcome. A step that raises has
    the error's code as its outcome (``lease_held``, ``unavailable``...), or ``error``."""
    meter = StepMeter()
    token = _step.set(meter)
    start = time.perf_counter()
    try:
        yield meter
    except BaseException as e:
        meter.outcome = meter.outcome or _code(e)
        raise
    finally:
        _step.reset(token)
        record_step(agent=meter.agent, agent_version=meter.agent_version, outcome=meter.outcome or UNKNOWN,
                    seconds=time.perf_counter() - start)


def note_agent(name: str, version: str | None) -> None:
    """Name the agent of the step being timed, once the step knows it."""
    meter = _step.get()
    if meter is not None:
        meter.agent, meter.agent_version = name, version


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (the exporter loads Google's client)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package; a module set to None in sys.modules
        return False


def _code(error: BaseException) -> str:
    code = getattr(error, "code", None)
    return code if isinstance(code, str) and code else "error"


# --- Cloud Monitoring ---------------------------------------------------------------------------------------


def cloud_monitoring_exporter(project: str = "", min_interval_s: float = GCP_MIN_EXPORT_INTERVAL_S,
                              client: Any = None) -> Any:
    """A metric exporter to Cloud Monitoring, built on its first export (its client dials Google and reads
    the credentials: not at cold start). Fails here, clearly, when the exporter package is missing.
    ``client``: a ``MetricServiceClient`` of one's own (another endpoint, other credentials)."""
    if not installed("opentelemetry.exporter.cloud_monitoring"):
        raise RuntimeError("AGEX_METRICS_EXPORTER=gcp needs the opentelemetry-exporter-gcp-monitoring package "
                           "(pip install opentelemetry-exporter-gcp-monitoring==1.15.0a0)")
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

    class CloudMonitoring(MetricExporter):
        def __init__(self) -> None:
            super().__init__()
            self._real: Any = None
            self._last = float("-inf")
            self._pending: MetricsData | None = None
            self._lock = threading.Lock()

        def _exporter(self) -> Any:
            if self._real is None:
                from opentelemetry.exporter.cloud_monitoring import (  # type: ignore[import-not-found,import-untyped,unused-ignore]
                    CloudMonitoringMetricsExporter,
                )

                with warnings.catch_warnings():
                    # deprecated upstream in favour of OTLP through a collector; a function has no collector
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._real = CloudMonitoringMetricsExporter(project_id=project or None, client=client,
                                                                prefix=METRIC_PREFIX)
            return self._real

        def _send(self, data: MetricsData, timeout_millis: float) -> MetricExportResult:
            result: MetricExportResult = self._exporter().export(data, timeout_millis=timeout_millis)
            if result == MetricExportResult.SUCCESS:
                self._last, self._pending = time.monotonic(), None
            return result

        def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
            with self._lock:
                if time.monotonic() - self._last < min_interval_s:
                    # cumulative: the next export carries these points, or shutdown sends them
                    self._pending = metrics_data
                    return MetricExportResult.SUCCESS
                return self._send(metrics_data, timeout_millis)

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            # the instance is going away (Cloud Run leaves it 10 s after SIGTERM): wait out the pace, then
            # send the last totals
            budget_s = min(float(kwargs.get("timeout", timeout_millis)) / 1000, 8.0)
            with self._lock:
                if self._pending is not None:
                    wait = min_interval_s - (time.monotonic() - self._last)
                    time.sleep(max(0.0, min(wait, budget_s - 2.0)))
                    with contextlib.suppress(Exception):  # logged by the exporter; the process is exiting
                        self._send(self._pending, 2000.0)
            if self._real is not None:
                self._real.shutdown()

    return CloudMonitoring()
