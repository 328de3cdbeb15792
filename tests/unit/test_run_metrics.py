"""Behavioural metrics: a run's record written once when it ends, computed from its events; fingerprints;
the drift check on the in-memory runtime (windows, baselines, exactly one alert per key); usage."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from typing import Any

import pytest

from agex.core.agent import Agent
from agex.core.errors import ConfigurationError
from agex.core.fingerprint import fingerprint, parts
from agex.core.messages import ModelRequest
from agex.core.metrics import DRIFT_ALERTS_TOPIC, Watch
from agex.core.run import RunStatus
from agex.engine import reports
from agex.engine.metrics import sampled
from agex.engine.watching import DriftService, DriftSettings
from agex.ports.auth import Caller
from agex.testing.harness import InMemoryRuntime
from agex.testing.models import FunctionModel
from examples import support_backend as backend
from examples.support_agent import build

ORDERS = ("A-1187", "A-1042", "A-3310")


def support_model(factor: float = 1.0) -> FunctionModel:
    """The sample agent's script: look up, check, refund ``factor`` times a price-dependent amount, answer."""

    def answer(request: ModelRequest) -> Any:
        order = re.search(r"A-\d{4}", request.messages[0].text or "")
        order_id = order.group(0) if order else "A-1187"
        turns = sum(1 for m in request.messages if m.role == "model")
        if turns == 0:
            return [("lookup_order", {"order_id": order_id})]
        if turns == 1:
            return [("check_refund_policy", {"order_id": order_id})]
        if turns == 2:
            price = float(backend.ORDERS[order_id]["amount_usd"])  # type: ignore[arg-type]
            return [("issue_refund", {"order_id": order_id, "amount_usd": round(min(price, 40.0) * 0.5 * factor, 2),
                                      "reason": "damaged on arrival"})]
        return f"Refunded order {order_id}."

    return FunctionModel(answer)


@pytest.fixture(autouse=True)
def _ledger(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGEX_EXAMPLE_LEDGER", str(tmp_path / "refunds.sqlite"))


def _runtime(agent: Agent, factor: float = 1.0) -> InMemoryRuntime:
    rt = InMemoryRuntime([agent], support_model(factor))
    return rt


def test_a_run_is_recorded_once_with_its_behaviour() -> None:
    agent = build()
    rt = _runtime(agent)
    head = rt.run("support", "Refund order A-1187 please: the socks have a hole.")
    assert head.status == RunStatus.succeeded
    (record,) = rt.metrics.query_run_metrics(ended_from=head.created_at, ended_to=rt.clock.now() + timedelta(1))
    assert record.run_id == head.run_id and record.agent_version == "1"
    assert record.fingerprint == fingerprint(agent)
    assert record.steps == 4 and record.model_calls == 4 and record.status == "succeeded"
    assert record.tool_calls == {"lookup_order": 1, "check_refund_policy": 1, "issue_refund": 1}
    assert record.watched == {"issue_refund.amount_usd": [12.0], "refund_share": [0.5]}
    assert record.cost_usd == head.usage.cost_usd and record.input_tokens == head.usage.input_tokens
    assert record.models["gemini-2.5-flash"].calls == 4
    assert record.unrecorded_model_calls == 0 and record.retries == 0
    # recording again (a redelivery, the collector) changes nothing
    assert rt.runtime.recorder.record(head) is not None
    assert len(rt.metrics.query_run_metrics(ended_from=head.created_at, ended_to=rt.clock.now() + timedelta(1))) == 1


def test_approvals_and_waiting_time_are_counted() -> None:
    rt = _runtime(build(), factor=4.0)  # A-1042: 40 * 0.5 * 4 = $80, over the $50 review threshold
    head = rt.start("support", "Refund order A-1042: split sole.")
    rt.drive()
    (approval,) = rt.approvals.list(Caller("dev", "dev@example.com"))
    rt.clock.advance(600)
    rt.approvals.decide(Caller("dev", "manager@example.com"), approval.approval_id,
                        reports_decide(approve=True, arguments={"order_id": "A-1042", "amount_usd": 40.0,
                                                                "reason": "damaged on arrival"}))
    rt.drive()
    done = rt.store.get_run(head.tenant, head.run_id)
    assert done is not None and done.status == RunStatus.succeeded
    (record,) = rt.metrics.query_run_metrics(ended_from=head.created_at, ended_to=rt.clock.now() + timedelta(1))
    assert record.approvals_requested == 1 and record.approvals_granted == 1 and record.approvals_edited == 1
    # what the agent proposed is its behaviour, whatever the approver then made of it
    assert record.watched["issue_refund.amount_usd"] == [80.0]
    assert record.latency_s >= 600 and record.active_s < 5


def reports_decide(*, approve: bool, arguments: dict[str, Any] | None = None) -> Any:
    from agex.engine.approvals import DecideRequest

    return DecideRequest.model_validate({"decision": "approve" if approve else "reject",
                                         "comment": "ok" if approve else "no", "arguments": arguments})


def test_a_lost_model_response_is_estimated() -> None:
    from agex.core.errors import AgexError

    agent = build()
    inner = support_model()
    calls = {"n": 0}

    def flaky(request: ModelRequest) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the attempt is paid for, then dies before it records the response
            inner.request(request)
            raise AgexError("the instance died")
        return inner.fn(request)

    rt = InMemoryRuntime([agent], FunctionModel(flaky), lease_seconds=30)
    head = rt.start("support", "Refund order A-1187 please.")
    with pytest.raises(AgexError):
        rt.drive()
    rt.clock.advance(31)  # the dead attempt's lease lapses; the redelivery takes the step over
    rt.drive()
    (record,) = rt.metrics.query_run_metrics(ended_from=head.created_at, ended_to=rt.clock.now() + timedelta(1))
    assert record.status == "succeeded" and record.model_calls == 4
    assert record.unrecorded_model_calls == 1 and record.retries == 1
    assert record.unrecorded_cost_usd > 0


def test_fingerprints_change_with_behaviour_and_not_with_observers() -> None:
    a = build()
    assert fingerprint(a) == fingerprint(build())
    assert fingerprint(build(goodwill_factor=2.0)) != fingerprint(a)
    changed = {k for k, v in parts(build(goodwill_factor=2.0)).items() if parts(a)[k] != v}
    assert changed == {"behaviour", "instructions"}
    assert fingerprint(a.model_copy(update={"watch": (), "evaluators": (), "hooks": ()})) == fingerprint(a)
    assert fingerprint(a.model_copy(update={"guards": ()})) != fingerprint(a)


def test_a_changed_fingerprint_without_a_version_bump_is_flagged(caplog: pytest.LogCaptureFixture) -> None:
    rt = _runtime(build())
    rt.run("support", "Refund order A-1187.")
    changed = build(goodwill_factor=2.0)  # the same version "1", another behaviour
    stored = rt.runtime.versions.check(changed, fingerprint(changed), parts(changed))
    assert stored.fingerprint == fingerprint(build())
    assert [m["fingerprint"] for m in stored.mismatches] == [fingerprint(changed)]
    assert any(getattr(r, "fields", {}).get("drift_event") == "fingerprint_changed" for r in caplog.records)


def test_watches_must_name_the_agents_tools() -> None:
    with pytest.raises(ValueError, match="no tool 'refund'"):
        build().model_copy(update={"watch": (Watch(tool="refund", arg="amount"),)}).model_validate(
            {**build().model_dump(exclude={"tools", "approvals", "guards", "evaluators", "watch", "hooks"}),
             "tools": build().tools, "watch": (Watch(tool="refund", arg="amount"),)})


def test_evaluators_score_a_fixed_sample() -> None:
    share = sum(sampled(f"run_{i}", "mentions_order", 0.25) for i in range(4000)) / 4000
    assert 0.22 < share < 0.28
    assert sampled("run_x", "e", 0.25) == sampled("run_x", "e", 0.25)


# --- the drift check, in memory -----------------------------------------------------------------------


def _traffic(rt: InMemoryRuntime, n: int, start: int = 0) -> None:
    for i in range(n):
        rt.run("support", f"Refund order {ORDERS[(start + i) % len(ORDERS)]}, ticket {start + i}.")
        rt.clock.advance(2)


def _drift(rt: InMemoryRuntime, **kwargs: Any) -> DriftService:
    settings = DriftSettings(window_s=3600, interval_s=60, min_runs=12, settle_s=0, **kwargs)
    r = rt.runtime
    return DriftService(store=r.store, metrics=r.metrics, bus=r.bus, agents=r.agents, clock=r.clock,
                        recorder=r.recorder, versions=r.versions, settings=settings, instance="test")


def test_doubled_refunds_raise_one_alert_per_metric_and_window() -> None:
    v1 = InMemoryRuntime([build()], support_model())
    v1.clock.advance(3600 - v1.clock.now().timestamp() % 3600)  # the start of a window
    _traffic(v1, 15)
    assert _drift(v1).check().alerts == []  # one version, no baseline of its own yet: nothing to compare
    # version 2 deployed on the same stores, refunds doubled
    v2 = v1
    v2.redeploy([build("2", goodwill_factor=2.0)], support_model(2.0))
    _traffic(v2, 15, start=100)
    service = _drift(v2)
    report = service.check()
    alerts = [m.message for m in v1.bus.on(DRIFT_ALERTS_TOPIC)]
    metrics = {a["metric"] for a in alerts}
    assert "watched.issue_refund.amount_usd" in metrics and metrics <= {
        "watched.issue_refund.amount_usd", "watched.refund_share", "cost_usd", "tokens"}
    amount = next(a for a in alerts if a["metric"] == "watched.issue_refund.amount_usd")
    assert amount["version"] == "2" and amount["baseline_version"] == "1" and amount["schema"] == 1
    assert amount["current"]["mean"] == pytest.approx(2 * amount["baseline"]["mean"])
    assert 1 <= len(amount["examples"]) <= 5 and amount["p_value"] < amount["threshold"]
    assert report.alerts and len(report.alerts) == len(alerts)
    # checked again, and twice at once: no second alert for the same window
    threads = [threading.Thread(target=service.check) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert service.check().alerts == []
    assert len(v1.bus.on(DRIFT_ALERTS_TOPIC)) == len(alerts)
    page = reports.Reports(metrics=lambda: v1.metrics, agents=v2.agents, clock=v1.clock, ids=v1.runtime.ids).alerts(
        Caller("dev", "x"), agent="support", since=None, limit=10)
    assert {a.alert["metric"] for a in page.alerts} == metrics


def test_a_stable_version_raises_no_alert() -> None:
    rt = InMemoryRuntime([build()], support_model())
    rt.clock.advance(3600 - rt.clock.now().timestamp() % 3600)
    _traffic(rt, 15)
    rt.clock.advance(3600)  # the next window: the first one is now this version's own baseline
    _traffic(rt, 15, start=15)
    report = _drift(rt).check()
    assert report.compared == ["support@1 [1]"] and report.alerts == []
    assert rt.bus.on(DRIFT_ALERTS_TOPIC) == []


def test_the_collector_records_runs_that_ended_elsewhere() -> None:
    rt = InMemoryRuntime([build()], support_model())
    head = rt.start("support", "Refund order A-1187.")
    rt.service.cancel(Caller("dev", "dev@example.com"), head.run_id)
    rt.clock.advance(5)
    assert rt.metrics.recorded([(head.tenant, head.run_id)]) == set()
    assert _drift(rt).collect() == 1
    (record,) = rt.metrics.query_run_metrics(ended_from=head.created_at, ended_to=rt.clock.now())
    assert record.status == "cancelled" and record.recorded_by == "collector"
    assert _drift(rt).collect() == 0


def test_usage_groups_by_model_user_and_tool() -> None:
    rt = _runtime(build())
    rt.run("support", "Refund order A-1187.")
    rt.start("support", "Refund order A-3310.", Caller("dev", "other@example.com"))
    rt.drive()
    caller = Caller("dev", "dev@example.com")
    r = reports.Reports(metrics=lambda: rt.metrics, agents=rt.agents, clock=rt.clock, ids=rt.runtime.ids)
    by_user = r.usage(caller, ["user"], start=None, end=rt.clock.now() + timedelta(seconds=1))
    assert sorted(g.key["user"] for g in by_user.groups) == ["dev@example.com", "other@example.com"]
    assert sum(g.cost_usd or 0 for g in by_user.groups) == pytest.approx(by_user.total_cost_usd)
    by_tool = r.usage(caller, ["tool"], start=None, end=rt.clock.now() + timedelta(seconds=1))
    assert {g.key["tool"]: g.tool_calls for g in by_tool.groups}["issue_refund"] == 2
    assert all(g.cost_usd is None for g in by_tool.groups)
    by_model = r.usage(caller, ["agent", "model"], start=None, end=rt.clock.now() + timedelta(seconds=1))
    (group,) = by_model.groups
    assert group.model_calls == 8 and group.runs == 2
    with pytest.raises(Exception, match="model and tool"):
        r.usage(caller, ["model", "tool"], start=None, end=None)
    other = r.usage(Caller("acme", "ops@acme.test"), ["agent"], start=None, end=rt.clock.now() + timedelta(seconds=1))
    assert other.groups == []  # another tenant sees none of these runs


def test_fleet_file_pins_a_baseline(tmp_path: Any) -> None:
    from agex.app import fleet

    path = tmp_path / "fleet.yaml"
    path.write_text("agents:\n  support:\n    module: examples.support_agent:agent\n    identity: agent-support\n"
                    "    drift: {baseline_version: '1', baseline_to: '2026-11-01T00:00:00Z'}\n")
    declared = fleet.load(path)
    assert declared.agents["support"].drift is not None
    path.write_text("agents:\n  support:\n    module: examples.support_agent:agent\n    identity: agent-support\n"
                    "    drift: {baseline: '1'}\n")
    with pytest.raises(ConfigurationError, match="baseline"):
        fleet.load(path)


def test_a_check_that_died_while_publishing_is_retried_and_the_alert_goes_out_once() -> None:
    from agex.adapters.inmemory.event_bus import InMemoryEventBus

    rt = InMemoryRuntime([build()], support_model())
    rt.clock.advance(3600 - rt.clock.now().timestamp() % 3600)
    _traffic(rt, 15)
    rt.redeploy([build("2", goodwill_factor=2.0)], support_model(2.0))
    _traffic(rt, 15, start=100)

    class DownBus(InMemoryEventBus):
        def publish(self, topic: str, message: dict[str, Any], attributes: dict[str, str] | None = None) -> str:
            raise ConnectionError("Pub/Sub is unreachable")

    dying = _drift(rt)
    dying.bus = DownBus()
    with pytest.raises(ConnectionError):
        dying.check()  # claimed its first alert, then died before publishing it
    (held,) = [a.alert.alert_id for a in rt.metrics.list_alerts() if a.published_at is None]
    retried = _drift(rt)
    retried.check()  # the claim is still held: the retry leaves that alert to its holder for now
    before = {m.message["alert_id"] for m in rt.bus.on(DRIFT_ALERTS_TOPIC)}
    assert held not in before
    rt.clock.advance(121)  # the holder is presumed dead: its claim lapses
    retried.check()
    retried.check()
    ids = [m.message["alert_id"] for m in rt.bus.on(DRIFT_ALERTS_TOPIC)]
    assert len(ids) == len(set(ids)) and set(ids) == before | {held}
    assert any(m.message["metric"] == "watched.issue_refund.amount_usd" for m in rt.bus.on(DRIFT_ALERTS_TOPIC))
