"""Tools in the step protocol, on the in-memory ports: scoped secrets and scrubbing, timeouts and
retries, limits across instances, and reconciling a non-idempotent call a crash left uncertain."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from pydantic import BaseModel

from agex.core.agent import Agent
from agex.core.approval import ApprovalStatus, Decision
from agex.core.errors import RequestError
from agex.core.run import EventKind, RunStatus
from agex.engine.approvals import DecideRequest
from agex.ports.auth import Caller
from agex.ports.task_queue import StepTask
from agex.testing.harness import InMemoryRuntime
from agex.testing.models import scripted
from agex.tools import RetryPolicy, ToolContext, ToolLimits, TransientToolError, tool

KEY = "sk-test-9f8e7d6c5b"
OPERATOR = Caller("dev", "ops@example.com")


class Text(BaseModel):
    text: str


@tool(secrets=("api-key",))
def leaky(args: Text, ctx: ToolContext) -> dict[str, Any]:
    """Echo the key in several disguises."""
    key = ctx.secrets["api-key"]
    if args.text == "raise":
        raise RuntimeError(f"auth failed with key {key}")
    return {"plain": key, "b64": base64.b64encode(key.encode()).decode(), "url": f"https://x.test/?k={key}",
            "hex": key.encode().hex()}


def leaky_runtime(text: str = "hi") -> InMemoryRuntime:
    agent = Agent(name="leaky", instructions="leak", tools=(leaky,))
    rt = InMemoryRuntime([agent], scripted([("leaky", {"text": text})], "done"))
    rt.secrets.add_version("api-key", KEY)
    rt.secrets.grant("api-key", rt.agents.get("leaky").identity)
    return rt


def everything_stored(rt: InMemoryRuntime, run_id: str) -> str:
    events = rt.store.list_events("dev", run_id, limit=1000)
    return "".join(e.model_dump_json() for e in events) + str(rt.store.get_run("dev", run_id))


@pytest.mark.parametrize("text", ["hi", "raise"])
def test_a_tool_gets_its_secret_and_nothing_of_it_is_stored_or_shown_to_the_model(text: str) -> None:
    rt = leaky_runtime(text)
    seen: list[str] = []
    model = rt.runner.models(rt.agents.get("leaky"))
    original = model.request

    def spy(request: Any) -> Any:
        seen.append(request.model_dump_json())
        return original(request)

    model.request = spy  # type: ignore[method-assign]
    head = rt.run("leaky", "go")
    assert head.status == RunStatus.succeeded
    stored = everything_stored(rt, head.run_id) + "".join(seen)
    for disguise in (KEY, base64.b64encode(KEY.encode()).decode(), KEY.encode().hex()):
        assert disguise not in stored
    assert "[secret:api-key]" in stored


def test_an_identity_without_a_grant_fails_the_run_naming_the_secret_and_identity() -> None:
    rt = leaky_runtime()
    rt.secrets.revoke("api-key", rt.agents.get("leaky").identity)
    head = rt.run("leaky", "go")
    assert head.status == RunStatus.failed and head.error is not None
    assert head.error.code == "secret_access_denied"
    assert "api-key" in head.error.message and "agent-leaky@test" in head.error.message


def test_a_disabled_latest_version_fails_the_run_clearly() -> None:
    rt = leaky_runtime()
    rt.secrets.disable("api-key", 1)
    head = rt.run("leaky", "go")
    assert head.error is not None and head.error.code == "secret_unavailable"


def test_a_tool_past_its_timeout_is_cut_off_and_reported() -> None:
    @tool(timeout_s=0.2, retry=RetryPolicy(max_attempts=1))
    def sleepy(args: Text, ctx: ToolContext) -> dict[str, Any]:
        """Sleep too long."""
        time.sleep(2)
        return {}

    rt = InMemoryRuntime([Agent(name="sleepy", instructions="s", tools=(sleepy,))],
                         scripted([("sleepy", {"text": "x"})], "gave up"))
    started = time.monotonic()
    head = rt.run("sleepy", "go")
    assert time.monotonic() - started < 1.5
    result = [e for e in rt.store.list_events("dev", head.run_id, limit=100) if e.kind == EventKind.tool_result][0]
    assert result.data["ok"] is False and "timed out after 0.2 s" in result.data["output"]["error"]


def test_transient_errors_are_retried_with_backoff_then_reported() -> None:
    calls: list[float] = []

    @tool(retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02))
    def flaky(args: Text, ctx: ToolContext) -> dict[str, Any]:
        """Fails twice."""
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise TransientToolError("503 from upstream")
        return {"ok": True}

    rt = InMemoryRuntime([Agent(name="flaky", instructions="f", tools=(flaky,))],
                         scripted([("flaky", {"text": "x"})], "done"))
    assert rt.run("flaky", "go").status == RunStatus.succeeded
    assert len(calls) == 3


def test_invalid_arguments_and_a_bad_output_go_back_to_the_model() -> None:
    class Out(BaseModel):
        count: int

    @tool(output_model=Out)
    def counter(args: Text, ctx: ToolContext) -> dict[str, Any]:
        """Count."""
        return {"count": "many"}

    rt = InMemoryRuntime([Agent(name="counter", instructions="c", tools=(counter,))],
                         scripted([("counter", {"nope": 1}), ("counter", {"text": "x"})], "done"))
    head = rt.run("counter", "go")
    results = [e.data for e in rt.store.list_events("dev", head.run_id, limit=100) if e.kind == EventKind.tool_result]
    assert "invalid arguments for counter" in results[0]["output"]["error"]
    assert "does not match its output model" in results[1]["output"]["error"]


def test_a_tool_at_its_concurrency_limit_waits_for_a_scheduled_retry() -> None:
    @tool(limits=ToolLimits(max_concurrent=1))
    def single(args: Text, ctx: ToolContext) -> dict[str, Any]:
        """One at a time."""
        return {"ok": True}

    rt = InMemoryRuntime([Agent(name="single", instructions="s", tools=(single,))],
                         scripted([("single", {"text": "x"})], "done"))
    # another instance holds the only slot
    held = rt.limiter.acquire("single", single.limits, "someone-else", rt.clock.now(), lease_s=60)
    run = rt.start("single", "go")
    rt.drive()
    head = rt.store.get_run("dev", run.run_id)
    assert head is not None and head.status == RunStatus.waiting_timer
    deferred = [e for e in rt.store.list_events("dev", run.run_id, limit=100) if e.kind == EventKind.tool_deferred]
    assert "single" in deferred[0].data["reason"]
    rt.limiter.release(held)  # type: ignore[arg-type]
    rt.clock.advance(60)
    rt.drive()
    assert rt.store.get_run("dev", run.run_id).status == RunStatus.succeeded  # type: ignore[union-attr]


# --- reconciling an uncertain call ---------------------------------------------------------------------

wired: list[str] = []


@tool(idempotent=False)
def wire(args: Text, ctx: ToolContext) -> dict[str, Any]:
    """Wire money; not idempotent."""
    wired.append(ctx.idempotency_key)
    return {"wired": args.text}


def crashed_inside_wire() -> tuple[InMemoryRuntime, str]:
    """A run whose attempt died after calling ``wire`` and before recording its result."""
    wired.clear()
    agent = Agent(name="wirer", instructions="w", tools=(wire,), operators=("ops@example.com",))
    rt = InMemoryRuntime([agent], scripted([("wire", {"text": "100"})], "done"))
    run = rt.start("wirer", "wire 100")
    task = rt.queue.pending()[0]
    assert isinstance(task, StepTask)
    original = rt.store.update_run
    writes = {"n": 0}

    def dying(tenant: str, run_id: str, mutate: Any) -> Any:
        writes["n"] += 1
        if writes["n"] == 3:  # claim, model response + intent, then the result write dies
            raise RuntimeError("killed")
        return original(tenant, run_id, mutate)

    rt.store.update_run = dying  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        rt.deliver(task)
    rt.store.update_run = original  # type: ignore[method-assign]
    rt.clock.advance(61)  # the dead attempt's lease (60 s) expires: the next delivery takes over
    rt.deliver(task, attempt=1)
    return rt, run.run_id


def reconcile(rt: InMemoryRuntime, run_id: str, decision: Decision, comment: str = "") -> None:
    head = rt.store.get_run("dev", run_id)
    assert head is not None and head.status == RunStatus.waiting_approval and head.approval_id
    rt.approvals.decide(OPERATOR, head.approval_id, DecideRequest(decision=decision, comment=comment))
    rt.drive()


def test_an_uncertain_call_waits_for_a_human_and_is_not_repeated() -> None:
    rt, run_id = crashed_inside_wire()
    head = rt.store.get_run("dev", run_id)
    assert head is not None and head.status == RunStatus.waiting_approval
    approval = rt.store.get_approval("dev", head.approval_id or "")
    assert approval is not None and approval.kind == "reconcile" and approval.approvers == ["ops@example.com"]
    assert len(wired) == 1


def test_reconciled_as_done_goes_on_without_a_second_call() -> None:
    rt, run_id = crashed_inside_wire()
    reconcile(rt, run_id, Decision.done, "the bank shows the transfer")
    head = rt.store.get_run("dev", run_id)
    assert head is not None and head.status == RunStatus.succeeded and len(wired) == 1
    result = [e for e in rt.store.list_events("dev", run_id, limit=100) if e.kind == EventKind.tool_result][0]
    assert result.data["output"]["reconciled"]["decision"] == "done"
    approval = rt.store.list_approvals("dev")[0]
    assert approval.status == ApprovalStatus.resolved and approval.resolution == Decision.done


def test_reconciled_as_retry_calls_again_with_the_same_key() -> None:
    rt, run_id = crashed_inside_wire()
    reconcile(rt, run_id, Decision.retry)
    assert rt.store.get_run("dev", run_id).status == RunStatus.succeeded  # type: ignore[union-attr]
    assert len(wired) == 2 and wired[0] == wired[1]


def test_reconciled_as_fail_fails_the_run() -> None:
    rt, run_id = crashed_inside_wire()
    reconcile(rt, run_id, Decision.fail, "cannot tell; stopping")
    head = rt.store.get_run("dev", run_id)
    assert head is not None and head.status == RunStatus.failed and head.error is not None
    assert head.error.code == "tool_uncertain" and "ops@example.com chose to stop the run" in head.error.message


def test_a_reconciliation_takes_only_its_own_decisions() -> None:
    rt, run_id = crashed_inside_wire()
    head = rt.store.get_run("dev", run_id)
    with pytest.raises(RequestError, match="retry or done or fail"):
        rt.approvals.decide(OPERATOR, head.approval_id or "", DecideRequest(decision=Decision.approve))  # type: ignore[union-attr]
