"""Threads (docs/threads.md): turns that see the conversation before them through a bounded summary and the last
turns, one run stepping per thread, the reject / queue / interrupt policies, and every repair the two-write
protocol needs (a lost thread task, a request that died between admitting its run and creating it)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from agex.core.agent import Agent
from agex.core.errors import ModelUnavailable
from agex.core.messages import ModelRequest
from agex.core.run import RunStatus
from agex.core.thread import KEEP_TURNS, MAX_RECENT_TURNS, SUMMARY_BATCH, ThreadPolicy
from agex.engine.runs import CreateRunRequest
from agex.engine.threads import SUMMARY_INSTRUCTIONS, CreateThreadRequest, ThreadBusy
from agex.ports.task_queue import StepTask, ThreadTask
from agex.testing import FunctionModel, InMemoryRuntime
from agex.testing.harness import DEFAULT_CALLER

AGENT = Agent(name="chat", instructions="You chat.")


class Chat:
    """A model that answers each message with ``re: <message>``, and a summary with the number of turns it
    folded: enough to see what every request was given."""

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []
        self.fail_summaries = False

    def __call__(self, request: ModelRequest) -> str:
        self.requests.append(request)
        if request.system == SUMMARY_INSTRUCTIONS:
            if self.fail_summaries:
                raise ModelUnavailable("429", "quota")
            return f"summary of {request.messages[0].text.count('User:')} turns"
        return f"re: {request.messages[-1].parts[-1].text}"

    def last_chat(self) -> ModelRequest:
        return next(r for r in reversed(self.requests) if r.system != SUMMARY_INSTRUCTIONS)


@pytest.fixture
def chat() -> Chat:
    return Chat()


@pytest.fixture
def rt(chat: Chat) -> InMemoryRuntime:
    return InMemoryRuntime([AGENT], FunctionModel(chat))


def _thread(rt: InMemoryRuntime, policy: ThreadPolicy = ThreadPolicy.reject) -> str:
    thread, replayed = rt.runtime.threads.create(DEFAULT_CALLER, "chat", CreateThreadRequest(policy=policy))
    assert not replayed
    return thread.thread_id


def _say(rt: InMemoryRuntime, thread_id: str, text: str, key: str | None = None) -> str:
    return rt.runtime.threads.post(DEFAULT_CALLER, thread_id, CreateRunRequest(input=text), idempotency_key=key).run.run_id


def _head(rt: InMemoryRuntime, run_id: str):  # type: ignore[no-untyped-def]
    head = rt.store.get_run("dev", run_id)
    assert head is not None
    return head


def test_each_turn_sees_the_turns_before_it(rt: InMemoryRuntime, chat: Chat) -> None:
    thread_id = _thread(rt)
    first = _say(rt, thread_id, "my order is A-1042")
    rt.drive()
    assert _head(rt, first).result == "re: my order is A-1042"
    second = _say(rt, thread_id, "where is it?")
    rt.drive()
    texts = [(m.role, m.text) for m in chat.last_chat().messages]
    assert texts[1:] == [("model", "re: my order is A-1042"), ("user", "where is it?")]
    assert "(Conversation so far: 1 earlier turns follow.)" in texts[0][1] and "my order is A-1042" in texts[0][1]
    head = _head(rt, second)
    assert (head.status, head.thread_id) == (RunStatus.succeeded, thread_id)
    thread = rt.runtime.threads.get(DEFAULT_CALLER, thread_id)
    assert (thread.turns, thread.active_run, [t.answer for t in thread.context.turns]) == (
        2, None, ["re: my order is A-1042", "re: where is it?"])


def test_fifty_turns_cost_what_the_tenth_does(rt: InMemoryRuntime, chat: Chat) -> None:
    thread_id = _thread(rt)
    sizes, messages = [], []
    for i in range(50):
        run_id = _say(rt, thread_id, f"message {i} " + "x" * 200)
        rt.drive()
        assert _head(rt, run_id).status == RunStatus.succeeded
        sizes.append(len(json.dumps(_head(rt, run_id).model_dump(mode="json"))))
        messages.append(len(chat.last_chat().messages))
    thread = rt.runtime.threads.get(DEFAULT_CALLER, thread_id)
    assert thread.turns == 50 and len(thread.context.turns) < KEEP_TURNS + SUMMARY_BATCH
    assert thread.context.summarized_turns + len(thread.context.turns) == 50
    assert thread.summary_calls == (50 - KEEP_TURNS) // SUMMARY_BATCH
    # bounded: a sawtooth between folds, never growing (a few bytes for longer numbers and ids aside)
    assert max(sizes[40:]) <= max(sizes[10:20]) * 1.01 and max(messages[40:]) <= max(messages[10:20])
    assert thread.context.summary.startswith("summary of ")
    # the summaries are the agent's spend
    spent = [e for e in rt.runtime.store.spend_entries() if e.entry_id.startswith("thread-")]  # type: ignore[attr-defined]
    assert len(spent) == thread.summary_calls and all(e.agent == "chat" for e in spent)


def test_a_message_while_a_run_goes_on_is_refused_by_default(rt: InMemoryRuntime) -> None:
    thread_id = _thread(rt)
    first = _say(rt, thread_id, "hello")
    with pytest.raises(ThreadBusy, match="has a run going"):
        _say(rt, thread_id, "are you there?")
    rt.drive()
    assert _head(rt, first).status == RunStatus.succeeded
    _say(rt, thread_id, "are you there?")  # once it ended


def test_queued_messages_run_in_order_each_seeing_the_one_before(rt: InMemoryRuntime, chat: Chat) -> None:
    thread_id = _thread(rt, ThreadPolicy.queue)
    runs = [_say(rt, thread_id, f"m{i}") for i in range(3)]
    assert [_head(rt, r).status for r in runs] == [RunStatus.queued, RunStatus.waiting_turn, RunStatus.waiting_turn]
    assert [t.run_id for t in rt.queue.pending() if isinstance(t, StepTask)] == runs[:1]
    rt.drive()
    assert [_head(rt, r).result for r in runs] == ["re: m0", "re: m1", "re: m2"]
    assert [m.parts[-1].text for m in chat.last_chat().messages] == ["m0", "re: m0", "m1", "re: m1", "m2"]


def test_a_queued_message_cancelled_before_its_turn_leaves_the_queue(rt: InMemoryRuntime) -> None:
    thread_id = _thread(rt, ThreadPolicy.queue)
    first, second, third = (_say(rt, thread_id, f"m{i}") for i in range(3))
    rt.service.cancel(DEFAULT_CALLER, second)
    rt.drive()
    assert [_head(rt, r).status for r in (first, second, third)] == [
        RunStatus.succeeded, RunStatus.cancelled, RunStatus.succeeded]
    assert [t.run_id for t in rt.runtime.threads.get(DEFAULT_CALLER, thread_id).context.turns] == [first, third]


def test_interrupt_cancels_the_run_going_on_and_runs_the_new_message(rt: InMemoryRuntime) -> None:
    thread_id = _thread(rt, ThreadPolicy.interrupt)
    first = _say(rt, thread_id, "write me a poem")
    second = _say(rt, thread_id, "never mind, what time is it?")
    assert _head(rt, first).status == RunStatus.cancelled
    rt.drive()
    assert _head(rt, second).result == "re: never mind, what time is it?"
    turns = rt.runtime.threads.get(DEFAULT_CALLER, thread_id).context.turns
    assert [(t.run_id, t.answer.split(":")[0]) for t in turns] == [(first, "[cancelled"), (second, "re")]


def test_a_retried_message_is_one_turn(rt: InMemoryRuntime) -> None:
    thread_id = _thread(rt)
    run = _say(rt, thread_id, "hello", key="k1")
    assert _say(rt, thread_id, "hello", key="k1") == run  # retried while its run goes on: the same run, no 409
    rt.drive()
    assert _say(rt, thread_id, "hello", key="k1") == run
    (task,) = [t for t in rt.queue.pending() if isinstance(t, ThreadTask)] or [ThreadTask(
        tenant="dev", run_id=run, thread_id=thread_id)]
    rt.deliver(task)  # a redelivered thread task records nothing twice
    assert rt.runtime.threads.get(DEFAULT_CALLER, thread_id).turns == 1


def test_a_lost_thread_task_is_repaired_by_the_next_message_and_by_the_sweep(rt: InMemoryRuntime) -> None:
    thread_id = _thread(rt, ThreadPolicy.queue)
    first, second = _say(rt, thread_id, "a"), _say(rt, thread_id, "b")
    (step,) = [t for t in rt.queue.pending() if isinstance(t, StepTask)]
    rt.deliver(step)
    for task in [t for t in rt.queue.pending() if isinstance(t, ThreadTask)]:
        rt.queue.drop(task)  # the first run ended and its thread task was lost
    assert _head(rt, first).status == RunStatus.succeeded and _head(rt, second).status == RunStatus.waiting_turn
    rt.clock.advance(600)
    assert rt.runtime.threads.sweep(timedelta(minutes=5)) == 1
    rt.drive()
    assert _head(rt, second).result == "re: b"
    # and without the sweep: the next message finds the ended run and moves the thread on first
    third = _say(rt, thread_id, "c")
    (step,) = [t for t in rt.queue.pending() if isinstance(t, StepTask)]
    rt.deliver(step)
    for task in [t for t in rt.queue.pending() if isinstance(t, ThreadTask)]:
        rt.queue.drop(task)
    fourth = _say(rt, thread_id, "d")
    rt.drive()
    assert _head(rt, fourth).result == "re: d"
    assert [t.run_id for t in rt.runtime.threads.get(DEFAULT_CALLER, thread_id).context.turns][-3:] == [
        second, third, fourth]


def test_a_run_admitted_and_never_created_is_released(rt: InMemoryRuntime) -> None:
    thread_id = _thread(rt)
    rt.runtime.threads.threads.update_thread("dev", thread_id, lambda t: (t.model_copy(update={
        "active_run": "run_lost", "updated_at": rt.clock.now()}), None))  # a request died between the writes
    with pytest.raises(ThreadBusy):
        _say(rt, thread_id, "hello")  # within the grace: it may still be creating it
    rt.clock.advance(120)
    run = _say(rt, thread_id, "hello")
    rt.drive()
    assert _head(rt, run).result == "re: hello"


def test_summaries_that_keep_failing_bound_the_thread_and_say_what_is_missing(rt: InMemoryRuntime,
                                                                             chat: Chat) -> None:
    chat.fail_summaries = True
    thread_id = _thread(rt)
    for i in range(MAX_RECENT_TURNS + 3):
        _say(rt, thread_id, f"m{i}")
        rt.drive()
    thread = rt.runtime.threads.get(DEFAULT_CALLER, thread_id)
    assert len(thread.context.turns) == MAX_RECENT_TURNS and thread.context.dropped_turns == 3
    # the last run was given the turns before it: two of them were missing then
    assert "(2 turns before those are missing.)" in chat.last_chat().messages[0].text
    chat.fail_summaries = False
    _say(rt, thread_id, "again")
    rt.drive()
    assert rt.runtime.threads.get(DEFAULT_CALLER, thread_id).context.summary
