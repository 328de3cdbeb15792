"""SLO burn rates, the degrade/recover decision, and the evaluator end to end over the in-memory adapters."""

from __future__ import annotations

import io
import itertools
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from agex.adapters.inmemory.degradations import InMemoryDegradations
from agex.adapters.inmemory.event_bus import InMemoryEventBus
from agex.adapters.inmemory.metrics_store import InMemoryMetricsStore
from agex.core.agent import Agent, AgentRegistry
from agex.core.clock import ManualClock
from agex.core.errors import TransientError
from agex.core.metrics import DRIFT_ALERTS_TOPIC, RunMetrics
from agex.core.spend import SLO, Degrade
from agex.engine.slo import Burn, SloEvent, SloService, burn, decide, reader
from agex.obs import logging as log
from agex.obs import metrics
from agex.ports.degradations import Degradation
from agex.ports.event_bus import EventBus

T0 = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
LITE = Degrade(model="gemini-2.5-flash-lite", skip_optional_tools=True)
ERRORS = SLO(max_error_rate=0.05, degrade=LITE)
LATENCY = SLO(latency_s=30, latency_target=0.9, degrade=LITE)
_ids = itertools.count()


def run(i: int, status: str = "succeeded", *, active_s: float = 5.0, ended: datetime = T0,
        evaluation: bool = False, agent: str = "support", version: str = "1") -> RunMetrics:
    return RunMetrics(run_id=f"run{i}-{next(_ids)}", tenant="acme", agent=agent, agent_version=version,
                      principal="u", status=status, active_s=active_s, latency_s=active_s,
                      created_at=ended - timedelta(seconds=active_s), ended_at=ended, recorded_at=ended,
                      expire_at=ended + timedelta(days=400), evaluation=evaluation)


def runs(ok: int, failed: int = 0, **kw: Any) -> list[RunMetrics]:
    return [run(i, **kw) for i in range(ok)] + [run(ok + i, "failed", **kw) for i in range(failed)]


# --- burn rates and the decision ---------------------------------------------------------------------------


def test_error_burn_is_the_failed_share_over_the_allowed_share() -> None:
    b = burn(ERRORS, runs(18, 2))  # 10% failed, 5% allowed
    assert (b.runs, b.failed, b.error, b.latency) == (20, 2, pytest.approx(2.0), None)
    assert b.rates == {"error": pytest.approx(2.0)}


def test_expired_runs_are_errors_and_cancelled_runs_are_left_out() -> None:
    b = burn(ERRORS, [*runs(8), run(8, "expired"), run(9, "failed"), run(10, "cancelled")])
    assert (b.runs, b.failed) == (10, 2)
    assert b.error == pytest.approx(4.0)


def test_latency_burn_is_the_slow_share_over_one_minus_the_target() -> None:
    slow = [run(100 + i, active_s=45) for i in range(3)]
    b = burn(LATENCY, [*runs(17), *slow])  # 15% slower than 30 s, 10% allowed
    assert (b.slow, b.latency, b.error) == (3, pytest.approx(1.5), None)
    both = burn(SLO(max_error_rate=0.1, latency_s=30, latency_target=0.9, degrade=LITE), [*runs(16, 1), *slow])
    assert both.rates == {"error": pytest.approx(0.5), "latency": pytest.approx(1.5)}
    assert both.worst == pytest.approx(1.5)


def test_evaluation_runs_are_left_out() -> None:
    b = burn(ERRORS, [*runs(10), *[run(50 + i, "failed", evaluation=True) for i in range(10)]])
    assert (b.runs, b.failed, b.error) == (10, 0, 0.0)
    assert decide(ERRORS, b) == "recover"


def test_fewer_than_min_runs_decide_nothing() -> None:
    assert decide(ERRORS, burn(ERRORS, runs(0, 9))) is None  # 9 failures, min_runs 10
    assert decide(ERRORS, burn(ERRORS, runs(1, 9))) == "enter"
    assert decide(ERRORS, burn(ERRORS, [])) is None


def test_hysteresis_between_recover_below_and_burn_rate() -> None:
    slo = SLO(max_error_rate=0.1, burn_rate=2.0, recover_below=1.0, min_runs=10, degrade=LITE)
    assert decide(slo, Burn(runs=10, error=2.0)) == "enter"
    assert decide(slo, Burn(runs=10, error=1.5)) is None
    assert decide(slo, Burn(runs=10, error=1.0)) is None
    assert decide(slo, Burn(runs=10, error=0.99)) == "recover"
    # every declared objective must be below recover_below to recover; any one at burn_rate degrades
    assert decide(slo, Burn(runs=10, error=0.1, latency=1.2)) is None
    assert decide(slo, Burn(runs=10, error=0.1, latency=2.5)) == "enter"


# --- the evaluator -----------------------------------------------------------------------------------------


class Stack:
    def __init__(self, *agents: Agent, bus: EventBus | None = None) -> None:
        self.clock = ManualClock(T0)
        self.store, self.metrics, self.bus = InMemoryDegradations(), InMemoryMetricsStore(), InMemoryEventBus()
        self.agents = AgentRegistry(agents or [Agent(name="support", instructions="help", slo=ERRORS)])
        self.service = self.make(bus)

    def make(self, bus: EventBus | None = None) -> SloService:
        return SloService(self.store, self.metrics, self.agents, self.clock, bus or self.bus)

    def ended(self, ok: int, failed: int = 0, **kw: Any) -> None:
        now = self.clock.now() - timedelta(seconds=1)
        for r in [run(i, ended=now, **kw) for i in range(ok)] + [run(ok + i, "failed", ended=now, **kw)
                                                                    for i in range(failed)]:
            self.metrics.put_run_metrics(r)

    def messages(self) -> list[dict[str, Any]]:
        return [m.message for m in self.bus.on(DRIFT_ALERTS_TOPIC)]


@pytest.fixture
def telemetry() -> Iterator[tuple[InMemoryMetricReader, io.StringIO]]:
    reader, out = InMemoryMetricReader(), io.StringIO()
    metrics.use(reader)
    handler = logging.StreamHandler(out)
    handler.setFormatter(log.CloudLoggingFormatter("agex-test"))
    root = logging.getLogger("agex")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield reader, out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        metrics.reset()


def degradation_counts(reader: InMemoryMetricReader) -> dict[tuple[str, str, str], int]:
    data = reader.get_metrics_data()
    found: dict[tuple[str, str, str], int] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == metrics.DEGRADATIONS:
                    for p in m.data.data_points:
                        assert isinstance(p, NumberDataPoint)
                        a = dict(p.attributes or {})
                        found[(str(a["agent"]), str(a["source"]), str(a["event"]))] = int(p.value)
    return found


def test_degrades_when_failures_pile_up_and_recovers_when_they_stop(
        telemetry: tuple[InMemoryMetricReader, io.StringIO]) -> None:
    readings, out = telemetry
    s = Stack()
    s.ended(10, failed=0)
    assert s.service.evaluate().transitions == []
    assert reader(s.store)("support", s.clock.now()) is None

    s.clock.advance(300)
    s.ended(8, failed=2)  # 2 of 20 failed: 10%, twice the 5% allowed
    report = s.service.evaluate()
    assert [(t.degradation.agent, t.event) for t in report.transitions] == [("support", "entered")]
    assert report.burn_rates["support"] == {"runs": 20, "burn_rates": {"error": pytest.approx(2.0)},
                                            "decision": "enter"}
    assert reader(s.store)("support", s.clock.now()) == LITE
    (degraded,) = s.messages()
    assert degraded["type"] == "slo.degraded" and degraded["schema"] == 1
    assert degraded["agent"] == "support" and degraded["source"] == "slo"
    assert degraded["burn_rates"] == {"error": pytest.approx(2.0)} and degraded["runs"] == 20
    assert degraded["degrade"] == {"model": "gemini-2.5-flash-lite", "context_window_steps": None,
                                   "skip_optional_tools": True}
    assert "2 of 20 runs failed, 5% allowed" in degraded["reason"]
    assert s.bus.on(DRIFT_ALERTS_TOPIC)[0].attributes == {
        "type": "slo.degraded", "schema": "1", "event_id": degraded["event_id"], "agent": "support", "source": "slo"}
    assert SloEvent.model_validate(degraded).at == s.clock.now()

    # still burning, then in the band between recover_below and burn_rate: stays degraded, says nothing
    s.clock.advance(300)
    s.ended(30, failed=1)  # 3 of 51 failed: burn 1.18, between recover_below (1) and burn_rate (2)
    report = s.service.evaluate()
    assert report.transitions == [] and report.burn_rates["support"]["decision"] is None
    assert reader(s.store)("support", s.clock.now()) == LITE

    # an hour on, the failures have left the window
    s.clock.advance(3600)
    s.ended(12)
    report = s.service.evaluate()
    assert [t.event for t in report.transitions] == ["recovered"]
    assert reader(s.store)("support", s.clock.now()) is None
    recovered = s.messages()[1]
    assert recovered["type"] == "slo.recovered" and recovered["burn_rates"] == {"error": 0.0}
    assert recovered["since"] == degraded["since"] and recovered["event_id"] != degraded["event_id"]
    assert recovered["reason"].startswith("burn rates below 1:")
    assert s.service.evaluate().transitions == [] and len(s.messages()) == 2

    assert degradation_counts(readings) == {("support", "slo", "entered"): 1, ("support", "slo", "recovered"): 1}
    entries = [json.loads(line) for line in out.getvalue().splitlines()]
    events = [e for e in entries if "degradation_event" in e]
    assert [(e["degradation_event"], e["severity"], e["agent"]) for e in events] == [
        ("entered", "WARNING", "support"), ("recovered", "INFO", "support")]
    assert events[0]["error_burn_rate"] == pytest.approx(2.0) and events[0]["latency_burn_rate"] is None
    assert events[0]["reason"] == degraded["reason"] and events[0]["event_id"] == degraded["event_id"]


def test_each_transition_is_published_once_however_many_evaluations_run() -> None:
    s = Stack()
    s.ended(0, failed=12)
    others = [s.make() for _ in range(4)]
    start = threading.Barrier(len(others))
    made: list[int] = []

    def evaluate(service: SloService) -> None:
        start.wait()
        made.append(len(service.evaluate().transitions))

    threads = [threading.Thread(target=evaluate, args=(o,)) for o in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s.service.evaluate()  # and once more afterwards
    assert sorted(made) == [0, 0, 0, 1]
    assert [m["type"] for m in s.messages()] == ["slo.degraded"]


def test_only_the_current_version_counts() -> None:
    s = Stack(Agent(name="support", version="2", instructions="help", slo=ERRORS))
    s.ended(0, failed=20, version="1")  # the previous version's failures
    s.ended(10, version="2")
    report = s.service.evaluate()
    assert report.burn_rates["support"]["runs"] == 10 and report.transitions == []


class Down(EventBus):
    def publish(self, topic: str, message: dict[str, Any], attributes: dict[str, str] | None = None) -> str:
        raise TransientError("pub/sub is unavailable")


def test_a_transition_whose_message_failed_is_published_by_a_later_evaluation() -> None:
    s = Stack()
    s.ended(0, failed=12)
    report = s.make(bus=Down()).evaluate()
    assert [t.event for t in report.transitions] == ["entered"] and s.messages() == []
    assert reader(s.store)("support", s.clock.now()) == LITE  # degraded all the same

    s.clock.advance(30)
    assert s.service.evaluate().late == [] and s.messages() == []  # its announcer may still be at it
    s.clock.advance(31)
    report = s.service.evaluate()
    (late,) = s.messages()
    assert report.late == [late["event_id"]] and report.transitions == []
    assert late["type"] == "slo.degraded" and datetime.fromisoformat(late["at"]) == T0
    s.clock.advance(120)
    assert s.service.evaluate().late == [] and len(s.messages()) == 1


def test_an_agent_that_no_longer_declares_an_slo_recovers() -> None:
    s = Stack(Agent(name="support", instructions="help"))
    s.store.enter(Degradation(agent="support", reason="burning", since=T0 - timedelta(hours=1), degrade=LITE))
    report = s.service.evaluate()
    assert [t.event for t in report.transitions] == ["recovered"]
    assert s.messages()[-1]["reason"] == "the agent no longer declares an SLO"
    assert s.store.active("support", s.clock.now()) is None


def test_a_failing_agent_does_not_stop_the_others() -> None:
    s = Stack(Agent(name="billing", instructions="help", slo=ERRORS),
              Agent(name="support", instructions="help", slo=ERRORS))
    s.ended(0, failed=12, agent="support")

    class Broken(InMemoryMetricsStore):
        def query_run_metrics(self, **kw: Any) -> list[RunMetrics]:
            if kw.get("agent") == "billing":
                raise TransientError("firestore is unavailable")
            return s.metrics.query_run_metrics(**kw)

    report = SloService(s.store, Broken(), s.agents, s.clock, s.bus).evaluate()
    assert [t.degradation.agent for t in report.transitions] == ["support"]
    assert report.errors == ["billing: firestore is unavailable"]


def test_a_busy_window_is_narrowed_to_its_latest_runs() -> None:
    s = Stack()
    old = s.clock.now() - timedelta(minutes=50)
    for i in range(30):
        s.metrics.put_run_metrics(run(i, "failed", ended=old))
    s.ended(25)
    service = SloService(s.store, s.metrics, s.agents, s.clock, s.bus, max_runs=40)
    report = service.evaluate()
    assert report.burn_rates["support"]["runs"] == 25 and report.transitions == []

