"""The context window a step's commit hands to the next step's task (``agex.engine.window``): the next step sees
exactly what it would have read, reads nothing it need not, and never trusts a body the head did not seal."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from agex.core.agent import Agent
from agex.core.messages import ModelRequest
from agex.core.run import Event, EventKind, RunHead, RunStatus
from agex.engine import decisions, window
from agex.ports.checkpoint_store import Mutation
from agex.ports.task_queue import StepTask, Task
from agex.testing import FunctionModel
from agex.testing.harness import InMemoryRuntime
from agex.tools import ToolContext, tool

STEPS = 9


class Tick(BaseModel):
    n: int


@tool
def tick(args: Tick, ctx: ToolContext) -> dict[str, Any]:
    """Count one."""
    return {"n": args.n, "echo": "x" * 40}


def counting_model(seen: list[str]) -> FunctionModel:
    """Ticks on from the last tick it can see, then answers: what it is shown decides what it does."""

    def answer(request: ModelRequest) -> Any:
        seen.append(json.dumps([m.model_dump(mode="json") for m in request.messages], sort_keys=True))
        last = 0
        for message in reversed(request.messages):
            results = [p.function_response for p in message.parts if p.function_response]
            if results:
                last = int(results[-1].response["n"])
                break
        return "done" if last >= STEPS else [("tick", {"n": last + 1})]

    return FunctionModel(answer)


def run(change: Callable[[StepTask], StepTask] | None = None,
        before: Callable[[InMemoryRuntime, StepTask], None] | None = None) -> tuple[RunHead, list[str], list[int]]:
    """The ticker with a 3-step window, every step task passed through ``change``; the model inputs, and how many
    times a step read its window from the store."""
    seen: list[str] = []
    agent = Agent(name="ticker", instructions="tick", tools=(tick,), context_window_steps=3)
    rt = InMemoryRuntime([agent], counting_model(seen))
    reads: list[int] = []
    read = rt.store.events_since_step

    def counted(tenant: str, run_id: str, step: int) -> list[Event]:
        reads.append(step)
        return read(tenant, run_id, step)

    rt.store.events_since_step = counted  # type: ignore[method-assign]
    started = rt.start("ticker", "tick")

    def handle(task: Task, attempt: int) -> bool:
        if before is not None and isinstance(task, StepTask):
            before(rt, task)
        rt.deliver(change(task) if change is not None and isinstance(task, StepTask) else task, attempt)
        return True

    while rt.queue.pending():
        rt.queue.deliver_due(rt.clock.now(), handle)
    head = rt.store.get_run(started.tenant, started.run_id)
    assert head is not None and head.status == RunStatus.succeeded
    return head, seen, reads


def test_the_carried_window_shows_the_model_what_reading_it_would() -> None:
    head, carried, reads = run()
    _, read, read_every_step = run(lambda t: t.model_copy(update={"window": None, "window_through": None}))
    assert carried == read
    assert len(carried) == STEPS + 1
    # only the first step, whose task the run's creation enqueued, read its window from the store
    assert reads == [1]
    assert len(read_every_step) == STEPS + 1
    assert head.window is not None and head.result == "done"


def test_a_changed_window_is_not_trusted_and_the_step_reads_the_store() -> None:
    def forged(task: StepTask) -> StepTask:
        if not task.window:
            return task
        return task.model_copy(update={"window": task.window.replace('"n":', '"n":1')})

    _, honest, _ = run()
    _, shown, reads = run(forged)
    assert shown == honest  # the forgery reached no model
    assert len(reads) == STEPS + 1


def test_a_window_cut_short_or_from_another_step_is_not_trusted() -> None:
    _, honest, _ = run()
    _, shown, reads = run(lambda t: t.model_copy(update={"window_through": (t.window_through or 0) - 1}))
    assert shown == honest and len(reads) == STEPS + 1


def test_events_written_after_the_seal_are_read_and_nothing_else() -> None:
    def note(rt: InMemoryRuntime, task: StepTask) -> None:
        if task.step == 4:  # someone else writes between two steps (here: what the sweep writes)
            rt.store.update_run(task.tenant, task.run_id, lambda h: decisions.reenqueue(
                h, rt.clock.now(), rt.clock.now() + timedelta(days=1)))

    _, shown, reads = run(before=note)
    _, read, _ = run(lambda t: t.model_copy(update={"window": None, "window_through": None}), before=note)
    assert shown == read
    assert reads == [1]


def head_and_events(seq: int, step: int, n: int) -> tuple[RunHead, list[Event]]:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    head = RunHead(tenant="t", run_id="r", agent="a", agent_version="1", principal="p", input="i", created_at=now,
                   updated_at=now,
                   expire_at=now + timedelta(days=7), seq=seq, step=step)
    events = [Event(seq=seq + i, step=step + 1, kind=EventKind.tool_result, at=now, expire_at=head.expire_at,
                    data={"i": i}) for i in range(1, n + 1)]
    return head, events


def test_seal_names_the_events_up_to_the_commit_and_opens_only_with_that_seal() -> None:
    read, new = head_and_events(seq=4, step=1, n=2)
    _, known = head_and_events(seq=0, step=0, n=4)
    committed = read.model_copy(update={"seq": 6, "step": 2})
    sealed, carried = window.seal(Mutation(committed, new), read, known, 4, first=1)
    assert carried is not None and carried.through == 6 and sealed.head is not None
    assert sealed.head.window == window.seal_of(carried)
    opened = window.opened(sealed.head, carried, first=1)
    assert opened is not None and [e.seq for e in opened] == [1, 2, 3, 4, 5, 6]
    assert window.opened(sealed.head, window.Carried(6, carried.text + " "), first=1) is None
    assert window.opened(read, carried, first=1) is None  # a head that sealed no window


def test_an_event_the_step_did_not_see_leaves_the_window_unsealed() -> None:
    read, new = head_and_events(seq=5, step=1, n=1)  # seq 5 was appended by someone else
    _, known = head_and_events(seq=0, step=0, n=4)
    sealed, carried = window.seal(Mutation(read.model_copy(update={"seq": 6}), new), read, known, 4, first=1)
    assert carried is None and sealed.head is not None and sealed.head.window is None
