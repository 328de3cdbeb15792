"""Runaway guards, on by default (docs/budgets.md): the same call asked for too often stops the run before it
is made; a context grown past its limit is cut to fewer steps, and a run whose single step is too large stops;
a run stepping faster than its rate waits, on a timer, instead of burning through its budget."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agex.core.agent import Agent
from agex.core.messages import ModelRequest
from agex.core.run import EventKind, Limits, RunStatus
from agex.core.tool import ToolContext, tool
from agex.testing import FunctionModel
from agex.testing.harness import InMemoryRuntime


class Query(BaseModel):
    q: str


calls: list[str] = []


@tool
def search(args: Query, ctx: ToolContext) -> dict[str, Any]:
    """Search."""
    calls.append(args.q)
    return {"hits": ["x" * 2000]}


def agent(**limits: Any) -> Agent:
    return Agent(name="looper", instructions="Search.", tools=(search,), guards=(),
                 limits=Limits(max_steps=500, max_tokens=10**9, max_cost_usd=1000, **limits))


def events(rt: InMemoryRuntime, run: Any, kind: EventKind) -> list[dict[str, Any]]:
    return [e.data for e in rt.store.list_events(run.tenant, run.run_id, limit=10_000) if e.kind == kind]


def test_the_same_call_asked_once_too_often_stops_the_run_before_it_is_made() -> None:
    calls.clear()
    rt = InMemoryRuntime([agent(max_repeated_calls=3)], FunctionModel(lambda r: [("search", {"q": "same"})]))
    run = rt.run("looper", "go")
    assert run.status == RunStatus.failed and run.error is not None and run.error.code == "repeated_call"
    assert "search" in run.error.message and "4 times" in run.error.message and "limit of 3" in run.error.message
    assert calls == ["same"] * 3


def test_different_arguments_are_different_calls() -> None:
    calls.clear()
    seen: list[int] = []

    def answer(r: ModelRequest) -> Any:
        seen.append(1)
        return [("search", {"q": f"q{len(seen)}"})] if len(seen) <= 8 else "done"

    run = InMemoryRuntime([agent(max_repeated_calls=2)], FunctionModel(answer)).run("looper", "go")
    assert run.status == RunStatus.succeeded and len(calls) == 8


def test_a_context_over_its_limit_keeps_fewer_steps_and_says_so() -> None:
    sizes: list[int] = []

    def answer(r: ModelRequest) -> Any:
        sizes.append(len(r.messages))
        return [("search", {"q": f"q{len(sizes)}"})] if len(sizes) <= 6 else "done"

    rt = InMemoryRuntime([agent(max_context_tokens=2500)], FunctionModel(answer))
    run = rt.run("looper", "go")
    assert run.status == RunStatus.succeeded
    assert max(sizes) < 2 * 6 + 1  # never the whole history
    routes = [d.get("route") for d in events(rt, run, EventKind.model_response)]
    assert any(r and any("context over 2500 tokens" in x for x in r.get("degraded", [])) for r in routes)


def test_an_input_too_large_for_the_context_limit_stops_the_run() -> None:
    rt = InMemoryRuntime([agent(max_context_tokens=100)], FunctionModel(lambda r: "done"))
    run = rt.run("looper", "x" * 2000)
    assert run.status == RunStatus.failed and run.error is not None and run.error.code == "context_too_large"
    assert run.usage.model_calls == 0


def test_a_run_faster_than_its_step_rate_waits_on_a_timer() -> None:
    n: list[int] = []

    def answer(r: ModelRequest) -> Any:
        n.append(1)
        return [("search", {"q": f"q{len(n)}"})] if len(n) <= 5 else "done"

    rt = InMemoryRuntime([agent(max_steps_per_minute=3)], FunctionModel(answer))
    run = rt.start("looper", "go")
    rt.drive()
    head = rt.store.get_run(run.tenant, run.run_id)
    assert head is not None and head.status == RunStatus.waiting_timer and head.step == 3  # the burst
    (timer,) = events(rt, run, EventKind.timer_set)
    assert timer["reason"].startswith("step_rate")
    for _ in range(10):
        rt.clock.advance(20)
        rt.drive()
    final = rt.store.get_run(run.tenant, run.run_id)
    assert final is not None and final.status == RunStatus.succeeded and final.step == 6
    waits = events(rt, run, EventKind.timer_set)
    assert len(waits) >= 3  # about one step each 20 s once the burst of 3 was spent


def test_the_head_keeps_a_few_calls_however_many_distinct_ones_a_run_makes() -> None:
    from agex.core.messages import FunctionCall
    from agex.engine.decisions import _count_calls

    seen: list[str] = []
    for i in range(100):
        seen, _ = _count_calls(seen, [FunctionCall(id="c", name="tick", args={"n": i})])
    assert len(seen) == 8 and seen[-1].endswith(":1")
    # a loop starting late is still counted: the newest of equals stays
    for _ in range(3):
        seen, top = _count_calls(seen, [FunctionCall(id="c", name="tick", args={"n": "again"})])
    assert top == (3, "tick") and len(seen) == 8
