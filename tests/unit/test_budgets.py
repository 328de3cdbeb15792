"""Budgets across runs (docs/budgets.md): each scope's spend summed over its rolling window from the ledger the
step writes with each model response; a reached ``refuse`` budget answers new runs 429 saying when it frees
up and stops running ones before their next model call; ``degrade`` moves steps to the declared model (and
window, and tools); alerts at 50%, 80% and 100% go out once each; reads are reused only far from the cap."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from agex.adapters.inmemory.checkpoint_store import InMemoryCheckpointStore
from agex.adapters.inmemory.event_bus import InMemoryEventBus
from agex.adapters.inmemory.spend_ledger import InMemorySpendLedger
from agex.core.agent import Agent
from agex.core.errors import BudgetExceeded
from agex.core.messages import ModelRequest
from agex.core.run import EventKind, RunStatus
from agex.core.spend import BUDGET_ALERTS_TOPIC, LEDGER_RETENTION, Budget, Degrade, SpendEntry, Spent
from agex.core.tool import ToolContext, tool
from agex.engine.budgets import Budgets
from agex.ports.auth import Caller
from agex.ports.spend_ledger import Member, SpendLedger
from agex.testing import FunctionModel
from agex.testing.harness import InMemoryRuntime

PRIMARY, CHEAP = "gemini-2.5-flash", "gemini-2.5-flash-lite"
ALICE, BOB = Caller("acme", "alice@acme.com"), Caller("acme", "bob@acme.com")
OTHER = Caller("globex", "carol@globex.com")


class Nothing(BaseModel):
    pass


@tool(critical=False)
def look_around(args: Nothing, ctx: ToolContext) -> dict[str, str]:
    """Optional context."""
    return {"seen": "nothing"}


def agent(name: str = "helper") -> Agent:
    return Agent(name=name, instructions="Answer.", model=PRIMARY, guards=(), tools=(look_around,))


def model(seen: list[ModelRequest]) -> FunctionModel:
    def answer(request: ModelRequest) -> str:
        seen.append(request)
        return "fine"

    return FunctionModel(answer)


def tokens_per_run() -> int:
    rt = InMemoryRuntime([agent()], model([]))
    run = rt.run("helper", "hello")
    return run.usage.input_tokens + run.usage.output_tokens


def cap(runs: float) -> int:
    return int(tokens_per_run() * runs)


def test_a_refuse_budget_of_a_user_answers_429_with_when_it_frees_up() -> None:
    budget = Budget(name="user-day", scope="user", max_tokens=cap(2), action="refuse")
    rt = InMemoryRuntime([agent()], model([]), budgets=[budget])
    first = rt.run_as(ALICE, "helper", "hello")
    rt.clock.advance(3600)
    rt.run_as(ALICE, "helper", "hello")
    with pytest.raises(BudgetExceeded) as refused:
        rt.start("helper", "hello", caller=ALICE)
    e = refused.value
    assert e.status == 429 and e.details["budget"] == "user-day"
    # the two runs' spend leaves the window a day after the first: then one run fits again
    assert e.details["resets_at"] == (first.created_at + timedelta(days=1)).isoformat()
    assert 0 < e.retry_after_s <= 24 * 3600 - 3600 + 1
    assert "alice@acme.com" in e.message and "rolling day" in e.message
    # other users, and the same user in another tenant, have budgets of their own
    assert rt.run_as(BOB, "helper", "hello").status == RunStatus.succeeded
    rt.clock.advance(24 * 3600 - 3600)
    assert rt.run_as(ALICE, "helper", "hello").status == RunStatus.succeeded


def test_an_idempotent_retry_of_a_run_created_before_the_cap_gets_its_run() -> None:
    budget = Budget(name="user-day", scope="user", max_tokens=cap(1), action="refuse")
    rt = InMemoryRuntime([agent()], model([]), budgets=[budget])
    run = rt.start("helper", "hello", caller=ALICE, idempotency_key="k1")
    rt.drive()
    again = rt.start("helper", "hello", caller=ALICE, idempotency_key="k1")
    assert again.run_id == run.run_id
    with pytest.raises(BudgetExceeded):
        rt.start("helper", "hello", caller=ALICE, idempotency_key="k2")


def test_a_running_run_stops_before_its_next_model_call_once_its_tenant_is_over() -> None:
    budget = Budget(name="tenant-day", scope="tenant", max_tokens=cap(1), action="refuse")
    rt = InMemoryRuntime([agent()], model([]), budgets=[budget])
    a, b = rt.start("helper", "hello", caller=ALICE), rt.start("helper", "hello", caller=BOB)
    rt.drive()
    ended = [rt.store.get_run(r.tenant, r.run_id) for r in (a, b)]
    assert sorted(h.status for h in ended if h) == [RunStatus.failed, RunStatus.succeeded]
    failed = next(h for h in ended if h and h.status == RunStatus.failed)
    assert failed.error is not None and failed.error.code == "budget_exceeded"
    assert "tenant-day" in failed.error.message and "frees up from" in failed.error.message
    assert failed.usage.model_calls == 0
    assert rt.run_as(OTHER, "helper", "hello").status == RunStatus.succeeded


def test_degrade_moves_steps_to_the_cheaper_model_shorter_window_and_fewer_tools() -> None:
    budget = Budget(name="agent-day", scope="agent", max_tokens=cap(1), action="degrade",
                    degrade=Degrade(model=CHEAP, context_window_steps=1, skip_optional_tools=True))
    seen: list[ModelRequest] = []
    rt = InMemoryRuntime([agent()], model(seen), budgets=[budget])
    rt.run("helper", "hello")
    assert seen[-1].model == PRIMARY and [t.name for t in seen[-1].tools] == ["look_around"]
    run = rt.run("helper", "hello again")
    assert run.status == RunStatus.succeeded  # degrade never stops a run
    assert seen[-1].model == CHEAP and seen[-1].tools == []
    (data,) = [e.data for e in rt.store.list_events(run.tenant, run.run_id) if e.kind == EventKind.model_response]
    assert data["model"] == CHEAP
    assert data["route"]["degraded"] == ["budget agent-day at 100%"] or data["route"]["degraded"][0].startswith(
        "budget agent-day at")
    assert data["route"]["reason"].startswith("degraded: budget agent-day")


def test_degrade_at_applies_before_the_cap() -> None:
    budget = Budget(name="tenant-month", scope="tenant", window="month", max_tokens=cap(4), action="refuse",
                    degrade_at=0.2, degrade=Degrade(model=CHEAP))
    seen: list[ModelRequest] = []
    rt = InMemoryRuntime([agent()], model(seen), budgets=[budget])
    rt.run("helper", "hello")
    rt.run("helper", "hello")
    assert [r.model for r in seen] == [PRIMARY, CHEAP]


def test_budgets_apply_only_to_their_tenants_and_agents() -> None:
    budget = Budget(name="acme-only", scope="deployment", max_tokens=1, action="refuse", tenants=("acme",),
                    agents=("helper",))
    rt = InMemoryRuntime([agent(), agent("other")], model([]), budgets=[budget])
    rt.run_as(ALICE, "helper", "hello")
    with pytest.raises(BudgetExceeded):
        rt.start("helper", "hello", caller=BOB)
    assert rt.run_as(ALICE, "other", "hello").status == RunStatus.succeeded
    assert rt.run_as(OTHER, "helper", "hello").status == RunStatus.succeeded


def test_alerts_at_50_80_and_100_percent_once_each() -> None:
    budget = Budget(name="tenant-day", scope="tenant", max_tokens=cap(4), action="alert")
    rt = InMemoryRuntime([agent()], model([]), budgets=[budget])
    for _ in range(7):
        assert rt.run_as(ALICE, "helper", "hello").status == RunStatus.succeeded  # alert never stops anything
    sent = [m.message for m in rt.bus.on(BUDGET_ALERTS_TOPIC)]
    assert [m["threshold"] for m in sent] == [0.5, 0.8, 1.0]
    assert all(m["type"] == "budget.alert" and m["budget"] == "tenant-day" and m["member"] == "acme" for m in sent)
    assert len({m["alert_id"] for m in sent}) == 3
    # a second instance (its own cache of what it sent) does not send them again
    again = Budgets([budget], rt.runtime.backends.spend(), rt.bus)
    again.standings("acme", "helper", "x", rt.clock.now())
    assert len(rt.bus.on(BUDGET_ALERTS_TOPIC)) == 3


class CountingLedger(SpendLedger):
    def __init__(self, inner: SpendLedger) -> None:
        self.inner, self.reads = inner, 0

    def spent(self, member: Member, since: Any) -> Spent:
        self.reads += 1
        return self.inner.spent(member, since)

    def oldest(self, member: Member, since: Any, limit: int) -> Any:
        return self.inner.oldest(member, since, limit)

    def record(self, entry: SpendEntry) -> bool:
        return self.inner.record(entry)

    def claim_alert(self, alert_id: str, now: Any) -> bool:
        return self.inner.claim_alert(alert_id, now)


def _entry(store: InMemoryCheckpointStore, n: int, at: Any, cost: float) -> None:
    store._spend[f"r-{n}"] = SpendEntry(entry_id=f"r-{n}", tenant="acme", principal="p", agent="a", run_id="r",
                                        model="m", at=at, cost_usd=cost, tokens=0, expire_at=at + LEDGER_RETENTION)


def test_reads_are_reused_far_from_the_cap_and_fresh_close_to_it() -> None:
    from agex.core.clock import ManualClock

    clock, store = ManualClock(), InMemoryCheckpointStore()
    ledger = CountingLedger(InMemorySpendLedger(store))
    budgets = Budgets([Budget(name="t", scope="tenant", max_cost_usd=10.0)], ledger, InMemoryEventBus(), cache_s=5)
    check = lambda: budgets.for_step("acme", "a", "p", clock.now())  # noqa: E731
    check()
    clock.advance(1)
    _entry(store, 1, clock.now(), 1.0)
    check()  # a second read learns the rate: 10% in a second
    assert ledger.reads == 2
    clock.advance(1)
    check()  # projected 20%: reused
    assert ledger.reads == 2
    clock.advance(5)
    check()  # too old
    assert ledger.reads == 3
    _entry(store, 2, clock.now(), 6.0)
    clock.advance(1)
    check()
    assert ledger.reads == 3  # a burst after a quiet read goes unseen until the read is too old (cache_s)
    clock.advance(4.5)
    check()
    assert ledger.reads == 4  # 70%, rising 11% a second
    clock.advance(0.1)
    check()
    assert ledger.reads == 4  # projected 71%
    _entry(store, 3, clock.now(), 1.5)
    clock.advance(1)
    check()
    assert ledger.reads == 5  # projected 82%: read, and 85% found
    for _ in range(3):
        clock.advance(0.01)
        check()
    assert ledger.reads == 8  # at 85%: every check reads


def test_an_instance_counts_its_own_spend_into_what_it_read() -> None:
    from agex.core.clock import ManualClock

    clock, store = ManualClock(), InMemoryCheckpointStore()
    ledger = CountingLedger(InMemorySpendLedger(store))
    budgets = Budgets([Budget(name="t", scope="tenant", max_cost_usd=10.0)], ledger, None, cache_s=5)
    budgets.for_step("acme", "a", "p", clock.now())
    clock.advance(1)
    budgets.for_step("acme", "a", "p", clock.now())
    budgets.spent_here("acme", "a", "p", Spent(cost_usd=1.0, tokens=0))
    (standing,) = budgets.standings("acme", "a", "p", clock.now())
    assert ledger.reads == 2 and standing.spent.cost_usd == 1.0


def test_a_budget_needs_a_cap_and_a_way_to_degrade() -> None:
    with pytest.raises(ValueError, match="max_cost_usd, max_tokens"):
        Budget(name="b", scope="tenant")
    with pytest.raises(ValueError, match="how to degrade"):
        Budget(name="b", scope="tenant", max_tokens=1, action="degrade")
    with pytest.raises(ValueError, match="unique"):
        Budgets([Budget(name="b", scope="tenant", max_tokens=1)] * 2, InMemorySpendLedger(InMemoryCheckpointStore()))


LEAD = Caller("acme", "lead@acme.com")


def _waiting_approval(rt: InMemoryRuntime, run: Any) -> Any:
    head = rt.store.get_run(run.tenant, run.run_id)
    assert head is not None and head.status == RunStatus.waiting_approval and head.approval_id
    approval = rt.store.get_approval(run.tenant, head.approval_id)
    assert approval is not None
    return approval


def test_an_approve_budget_parks_runs_until_a_human_lets_them_go_on() -> None:
    from agex.core.approval import Decision
    from agex.core.errors import PermissionDenied
    from agex.engine.approvals import DecideRequest

    budget = Budget(name="tenant-day", scope="tenant", max_tokens=cap(1), action="approve",
                    approvers=("lead@acme.com",))
    seen: list[ModelRequest] = []

    def answer(request: ModelRequest) -> Any:
        seen.append(request)
        return [("look_around", {})] if len(request.messages) == 1 else "fine"

    rt = InMemoryRuntime([agent()], FunctionModel(answer), budgets=[budget])
    rt.run_as(ALICE, "helper", "hello")  # spends the whole budget
    run = rt.start("helper", "hello again", caller=ALICE)  # not refused: it waits instead
    rt.drive()
    approval = _waiting_approval(rt, run)
    assert approval.kind == "budget" and approval.tool == "budget:tenant-day"
    assert approval.arguments["budget"] == "tenant-day" and approval.arguments["share"] >= 1.0
    assert "approve to let run" in approval.reason
    calls = len(seen)
    with pytest.raises(PermissionDenied):  # four eyes: not the one who started it
        rt.approvals.decide(ALICE, approval.approval_id, DecideRequest(decision=Decision.approve))
    rt.approvals.decide(LEAD, approval.approval_id, DecideRequest(decision=Decision.approve, comment="ok, urgent"))
    rt.drive()
    done = rt.store.get_run(run.tenant, run.run_id)
    assert done is not None and done.status == RunStatus.succeeded
    assert len(seen) == calls + 2 and done.budget_decisions == {"tenant-day": "approved"}  # asked once per run
    # another run asks again, and a rejection stops it
    other = rt.start("helper", "once more", caller=BOB)
    rt.drive()
    rt.approvals.decide(LEAD, _waiting_approval(rt, other).approval_id, DecideRequest(decision=Decision.reject, comment="not this month"))
    rt.drive()
    stopped = rt.store.get_run(other.tenant, other.run_id)
    assert stopped is not None and stopped.status == RunStatus.failed
    assert stopped.error is not None and stopped.error.code == "budget_exceeded" and "rejected" in stopped.error.message


def test_an_approve_budget_nobody_decides_fails_the_run_when_it_expires() -> None:
    budget = Budget(name="tenant-day", scope="tenant", max_tokens=1, action="approve", approvers=("lead@acme.com",),
                    approval_expires_s=600)
    rt = InMemoryRuntime([agent()], model([]), budgets=[budget])
    rt.run_as(ALICE, "helper", "hello")
    run = rt.start("helper", "again", caller=ALICE)
    rt.drive()
    _waiting_approval(rt, run)
    rt.clock.advance(601)
    rt.drive()
    expired = rt.store.get_run(run.tenant, run.run_id)
    assert expired is not None and expired.status == RunStatus.failed
    assert expired.error is not None and expired.error.code == "approval_expired"
