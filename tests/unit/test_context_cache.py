"""Context caching in spend: cached input tokens priced at the cached price, the saving each model call's
cached tokens made, summed per model in a run's metrics and shown by the usage report per group and in
total, and recorded on the model call's span. (The adapter and the emulator: tests/conformance/test_model.py
and tests/emulators/test_gemini_emulator.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agex.core.agent import Agent
from agex.core.errors import ConfigurationError
from agex.core.messages import ModelRequest, ModelResponse, TokenUsage
from agex.core.metrics import ModelUsage, RunMetrics
from agex.core.pricing import DEFAULT_CACHED_SHARE, DEFAULT_PRICES, Price, Pricing
from agex.core.run import RunStatus
from agex.engine import reports
from agex.engine.metrics import Recorder
from agex.obs import tracing
from agex.ports.auth import Caller
from agex.ports.model import Model
from agex.testing.harness import InMemoryRuntime
from agex.testing.models import FunctionModel

FLASH = "gemini-2.5-flash"


# --- prices ---------------------------------------------------------------------------------------------


def test_cached_tokens_are_billed_at_the_cached_price() -> None:
    pricing = Pricing()
    # 10,000 input of which 8,000 cached, 1,000 output, on 2.5 Flash (0.30 / 0.03 / 2.50 per million)
    cost = pricing.cost(FLASH, 10_000, 1_000, cached_input_tokens=8_000)
    assert cost == pytest.approx((2_000 * 0.30 + 8_000 * 0.03 + 1_000 * 2.50) / 1e6)
    assert pricing.saving(FLASH, 8_000) == pytest.approx(8_000 * (0.30 - 0.03) / 1e6)
    assert cost + pricing.saving(FLASH, 8_000) == pytest.approx(pricing.cost(FLASH, 10_000, 1_000))


def test_the_positional_signature_still_prices_everything_as_input() -> None:
    pricing = Pricing()
    assert pricing.cost(FLASH, 1_000_000, 1_000_000) == pytest.approx(0.30 + 2.50)
    assert pricing.cost(FLASH, 1_000, 0, cached_input_tokens=0) == pricing.cost(FLASH, 1_000, 0)


def test_a_price_without_a_cached_price_takes_the_documented_share() -> None:
    pricing = Pricing({"qwen3": Price(input_per_mtok=0.2, output_per_mtok=0.6)})
    assert Price(input_per_mtok=0.2, output_per_mtok=0.6).cached_input == pytest.approx(0.2 * DEFAULT_CACHED_SHARE)
    assert pricing.cost("qwen3", 1_000_000, 0, cached_input_tokens=1_000_000) == pytest.approx(0.2 * DEFAULT_CACHED_SHARE)
    assert pricing.saving("qwen3", 1_000_000) == pytest.approx(0.2 * (1 - DEFAULT_CACHED_SHARE))
    # a price table given as JSON (fleet file, AGEX_PRICES) may name the cached price
    given = Price.model_validate({"input_per_mtok": 1, "output_per_mtok": 2, "cached_input_per_mtok": 0.1})
    assert given.cached_input == 0.1
    free = Pricing({"llama3.2": Price(input_per_mtok=0, output_per_mtok=0)})
    assert free.saving("llama3.2", 5_000) == 0.0 and free.cost("llama3.2", 5_000, 10, cached_input_tokens=5_000) == 0.0


def test_cached_counts_never_bill_more_than_the_prompt_and_unknown_models_are_refused() -> None:
    pricing = Pricing()
    assert pricing.cost(FLASH, 100, 0, cached_input_tokens=500) == pytest.approx(100 * 0.03 / 1e6)
    assert pricing.cost(FLASH, 100, 0, cached_input_tokens=-5) == pricing.cost(FLASH, 100, 0)
    with pytest.raises(ConfigurationError, match="no price"):
        pricing.saving("mystery", 10)


def test_every_built_in_model_has_a_cached_price_below_its_input_price() -> None:
    for model, price in DEFAULT_PRICES.items():
        assert 0 < price.cached_input < price.input_per_mtok, model


# --- a run's metrics and the usage report ----------------------------------------------------------------


class CachingModel(Model):
    """A model whose provider served ``share`` of every prompt from its cache, as Gemini reports it."""

    def __init__(self, inner: Model, share: float) -> None:
        self.inner, self.share = inner, share

    def request(self, request: ModelRequest) -> ModelResponse:
        response = self.inner.request(request)
        usage = response.usage
        return response.model_copy(update={"usage": TokenUsage(
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            cached_input_tokens=int(usage.input_tokens * self.share))})


def answer(request: ModelRequest) -> str | list[tuple[str, dict[str, object]]]:
    return "done"


AGENT = Agent(name="notes", instructions="You keep notes. " * 50, model=FLASH)


@pytest.fixture
def runtime() -> InMemoryRuntime:
    return InMemoryRuntime([AGENT], CachingModel(FunctionModel(answer), share=0.75))


def test_a_runs_metrics_count_its_cached_tokens_and_their_saving(runtime: InMemoryRuntime) -> None:
    head = runtime.run("notes", "Note this down.")
    assert head.status == RunStatus.succeeded
    (record,) = runtime.metrics.query_run_metrics(ended_from=head.created_at,
                                                  ended_to=runtime.clock.now() + timedelta(seconds=1))
    usage = record.models[FLASH]
    assert usage.calls == 1 and usage.cached_input_tokens == int(usage.input_tokens * 0.75) > 0
    assert usage.saving_usd == pytest.approx(Pricing().saving(FLASH, usage.cached_input_tokens))


def test_a_recorder_prices_the_saving_with_its_own_table(runtime: InMemoryRuntime) -> None:
    head = runtime.run("notes", "Note this down.")
    own = Pricing({FLASH: Price(input_per_mtok=1.0, output_per_mtok=1.0, cached_input_per_mtok=0.5)})
    recorder = Recorder(store=runtime.store, metrics=runtime.metrics, agents=runtime.agents, clock=runtime.clock,
                        pricing=own)
    ended = runtime.store.get_run(head.tenant, head.run_id)
    assert ended is not None
    record = recorder.record(ended)
    assert record is not None
    assert record.models[FLASH].saving_usd == pytest.approx(record.models[FLASH].cached_input_tokens * 0.5 / 1e6)


def _record(run_id: str, models: dict[str, ModelUsage], principal: str = "ann@example.com") -> RunMetrics:
    at = datetime(2026, 11, 2, 12, tzinfo=UTC)
    return RunMetrics(run_id=run_id, tenant="dev", agent="notes", agent_version="1", principal=principal,
                      status="succeeded", models=models, cost_usd=sum(m.cost_usd for m in models.values()),
                      model_calls=sum(m.calls for m in models.values()),
                      input_tokens=sum(m.input_tokens for m in models.values()),
                      created_at=at, ended_at=at, recorded_at=at, expire_at=at + timedelta(days=400))


RUNS = [
    _record("run_1", {FLASH: ModelUsage(calls=2, input_tokens=4000, output_tokens=100, cost_usd=0.001,
                                        cached_input_tokens=3000, saving_usd=0.00081),
                      "gemini-2.5-pro": ModelUsage(calls=1, input_tokens=5000, output_tokens=10, cost_usd=0.006)}),
    _record("run_2", {FLASH: ModelUsage(calls=1, input_tokens=2000, output_tokens=50, cost_usd=0.0005,
                                        cached_input_tokens=1000, saving_usd=0.00027)}, principal="bob@example.com"),
]
START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)


def test_the_usage_report_shows_the_saving_per_model_and_in_total() -> None:
    by_model = reports.usage(RUNS, ["model"], START, END, truncated=False)
    groups = {g.key["model"]: g for g in by_model.groups}
    assert groups[FLASH].cached_input_tokens == 4000 and groups[FLASH].saving_usd == pytest.approx(0.00108)
    assert groups["gemini-2.5-pro"].cached_input_tokens == 0 and groups["gemini-2.5-pro"].saving_usd == 0.0
    assert by_model.total_saving_usd == pytest.approx(0.00108)
    assert by_model.total_cost_usd == pytest.approx(0.0075)  # unchanged: what was paid

    by_user = reports.usage(RUNS, ["user"], START, END, truncated=False)
    assert {g.key["user"]: g.saving_usd for g in by_user.groups} == pytest.approx(
        {"ann@example.com": 0.00081, "bob@example.com": 0.00027})
    assert {g.key["user"]: g.cached_input_tokens for g in by_user.groups} == {"ann@example.com": 3000,
                                                                            "bob@example.com": 1000}
    by_tool = reports.usage(RUNS, ["tool"], START, END, truncated=False)
    assert all(g.saving_usd is None and g.cached_input_tokens is None for g in by_tool.groups)
    assert by_tool.total_saving_usd == pytest.approx(0.00108)


def test_records_written_before_caching_read_as_no_saving() -> None:
    old = RunMetrics.model_validate({**_record("run_0", {}).model_dump(), "models": {
        FLASH: {"calls": 1, "input_tokens": 10, "output_tokens": 1, "cost_usd": 0.1}}})
    report = reports.usage([old], ["agent"], START, END, truncated=False)
    (group,) = report.groups
    assert group.saving_usd == 0.0 and group.cached_input_tokens == 0 and report.total_saving_usd == 0.0


def test_the_api_serves_the_saving(runtime: InMemoryRuntime) -> None:
    runtime.run("notes", "Note this down.")
    api = reports.Reports(metrics=lambda: runtime.metrics, agents=runtime.agents, clock=runtime.clock,
                          ids=runtime.runtime.ids)
    shown = api.usage(Caller("dev", "dev@example.com"), ["agent", "model"], start=None,
                      end=runtime.clock.now() + timedelta(seconds=1)).model_dump(mode="json", by_alias=True)
    (group,) = shown["groups"]
    assert group["cached_input_tokens"] > 0 and group["saving_usd"] > 0
    assert shown["total_saving_usd"] == group["saving_usd"]


# --- the model call's span -------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.use(exporter, batch=False)
    try:
        yield exporter
    finally:
        tracing.reset()


def test_the_span_carries_the_cached_tokens_by_their_genai_name(spans: InMemorySpanExporter) -> None:
    response = CachingModel(FunctionModel(answer), share=0.5).request(
        ModelRequest(model=FLASH, system="s" * 400, messages=[]))
    with tracing.model_call(FLASH, agent="notes") as call:
        call.record(response, 0.001)
    (span,) = spans.get_finished_spans()
    attributes = span.attributes or {}
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == response.usage.cached_input_tokens > 0
    assert attributes["gen_ai.usage.input_tokens"] == response.usage.input_tokens
