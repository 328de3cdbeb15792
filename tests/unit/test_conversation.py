"""``agex.engine.conversation``, table by table: event histories in, the model's messages and the progress of
the step in progress out. The histories are built directly, shaped as the decisions write them (tool outputs
as the stepper records them: an approval's note, a refusal, a reconciliation); each row's id says what it
proves. Pure: no store, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agex.core.messages import FunctionCall, FunctionResponse, Message, ModelResponse, Part, TokenUsage
from agex.core.run import Event, EventKind
from agex.engine.conversation import (
    HISTORY_NOTE,
    LateResult,
    Settled,
    StepProgress,
    Uncertainty,
    pending_calls,
    rebuild,
    uncertainty,
    window_start,
)

K = EventKind
T0 = datetime(2026, 1, 1, tzinfo=UTC)
INPUT = "tidy the notes"
A, B, C = "task#0@a", "task#1@b", "task#2@c"
"""Three attempts of a step."""


def call(id: str, name: str, **args: Any) -> FunctionCall:
    return FunctionCall(id=id, name=name, args=args)


C1 = call("c1", "search", q="notes")
C2 = call("c2", "write_note", text="tidy")
PAY = call("p1", "pay", to="acme", amount=250)


# --- messages the model sees ------------------------------------------------------------------------------

def said(*items: str | FunctionCall) -> Message:
    """A model turn: text and calls, in order."""
    return Message(role="model", parts=[Part(text=i) if isinstance(i, str) else Part(function_call=i)
                                        for i in items])


def answered(*pairs: tuple[FunctionCall, dict[str, Any]]) -> Message:
    """The user turn that carries the tools' outputs, paired with their calls by id."""
    return Message(role="user", parts=[Part(function_response=FunctionResponse(id=c.id, name=c.name, response=o))
                                       for c, o in pairs])


def opening(omitted: int = 0) -> Message:
    parts = [Part(text=INPUT)] + ([Part(text=HISTORY_NOTE.format(omitted=omitted))] if omitted else [])
    return Message(role="user", parts=parts)


# --- events, as the decisions write them --------------------------------------------------------------------

Item = tuple[EventKind, dict[str, Any]]
LATEST = "latest"
"""``late(..., intent=LATEST)``: the late result answers the call's latest intent written so far."""
FIRST = "first"


def started(owner: str = A, previous: str | None = None) -> Item:
    data: dict[str, Any] = {"attempt": 0, "task": "task", "owner": owner, "resumed": previous is not None}
    if previous:
        data |= {"previous_owner": previous, "previous_until": (T0 + timedelta(minutes=1)).isoformat()}
    return (K.step_started, data)


def model(*items: str | FunctionCall) -> Item:
    return (K.model_response, {"model": "gemini", "model_version": "v1", "finish_reason": "STOP",
                               "message": said(*items).model_dump(mode="json", exclude_none=True),
                               "usage": {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.001}})


def intent(c: FunctionCall, owner: str = A) -> Item:
    return (K.tool_intent, {"call_id": c.id, "name": c.name, "idempotency_key": f"run:1:{c.id}", "owner": owner})


def result(c: FunctionCall, output: dict[str, Any], ok: bool = True, continue_at: datetime | None = None) -> Item:
    data = {"call_id": c.id, "name": c.name, "ok": ok, "output": output}
    if continue_at:
        data["continue_at"] = continue_at.isoformat()
    return (K.tool_result, data)


def completed(calls: int) -> Item:
    return (K.step_completed, {"tool_calls": calls, "done": not calls})


def requested(c: FunctionCall, kind: str = "approval") -> Item:
    return (K.approval_requested, {"approval_id": f"apr_{c.id}_{kind}", "kind": kind, "call_id": c.id,
                                   "name": c.name, "approvers": ["lee@example.com"], "reason": ""})


def decided(c: FunctionCall, decision: str, kind: str = "approval", by: str | None = "lee@example.com",
            comment: str = "", arguments: dict[str, Any] | None = None) -> Item:
    return (K.approval_decided, {"approval_id": f"apr_{c.id}_{kind}", "kind": kind, "call_id": c.id,
                                 "decision": decision, "by": by, "comment": comment, "decision_id": None,
                                 "arguments": arguments})


def deferred(c: FunctionCall, retry_at: datetime) -> Item:
    return (K.tool_deferred, {"call_id": c.id, "name": c.name, "retry_at": retry_at.isoformat(), "reason": "429"})


def timer(wake_at: datetime) -> Item:
    return (K.timer_set, {"wake_at": wake_at.isoformat(), "reason": "a tool asked to continue later"})


def late(c: FunctionCall, output: dict[str, Any], intent: str | int | None = LATEST, ok: bool = True,
         owner: str = A, continue_at: datetime | None = None) -> Item:
    data: dict[str, Any] = {"call_id": c.id, "name": c.name, "ok": ok, "output": output, "owner": owner,
                            "intent_seq": intent, "at": (T0 + timedelta(minutes=5)).isoformat()}
    if continue_at:
        data["continue_at"] = continue_at.isoformat()
    return (K.tool_late_result, data)


Step = tuple[int, tuple[Item, ...]]


def step(n: int, *items: Item) -> Step:
    return (n, items)


def tool_step(n: int, c: FunctionCall, output: dict[str, Any], ok: bool = True) -> Step:
    """A step that made one call and committed."""
    return step(n, started(), model(c), intent(c), result(c, output, ok), completed(1))


def history(*steps: Step) -> list[Event]:
    """``run_created`` (seq 1, step 0), then the steps' events numbered on. A late result's ``LATEST`` or
    ``FIRST`` intent becomes the seq of that intent of its call."""
    expire = T0 + timedelta(days=7)
    events = [Event(seq=1, step=0, kind=K.run_created, at=T0, expire_at=expire, data={"input": INPUT})]
    for n, items in steps:
        for kind, data in items:
            data = dict(data)
            if kind == K.tool_late_result and data["intent_seq"] in (LATEST, FIRST):
                seqs = [e.seq for e in events if e.kind == K.tool_intent and e.data["call_id"] == data["call_id"]]
                data["intent_seq"] = seqs[-1] if data["intent_seq"] == LATEST else seqs[0]
            seq = len(events) + 1
            events.append(Event(seq=seq, step=n, kind=kind, at=T0 + timedelta(seconds=seq), expire_at=expire,
                                data=data))
    return events


def view(events: list[Event], current: int, window: int = 20) -> tuple[list[Message], StepProgress]:
    """What a step sees, as the stepper reads it: the events of its window only (``events_since_step``)."""
    first = window_start(current, window)
    return rebuild(INPUT, [e for e in events if e.step >= first], current, first)


# --- the table of histories ---------------------------------------------------------------------------------

APPROVED = Settled("approved", "lee@example.com", "within budget", None)
REJECTED = Settled("rejected", "lee@example.com", "too much", None)
EXPIRED = Settled("expired", "", "nobody decided before 2026-01-02T00:00:00+00:00", None)
EDITED = Settled("approved", "lee@example.com", "90 is enough", {"to": "acme", "amount": 90})
DONE = Settled("done", "ops@example.com", "it went through", None)
RETRY = Settled("retry", "ops@example.com", "no record of it", None)
BY_FACTS = Settled("done", "agex", "settled by the facts", None)
REFUSED = {"error": "pay was not called: lee@example.com rejected it: too much", "approval": REJECTED.note()}
TIMED_OUT = {"error": "pay was not called: it needed approval and nobody decided before 2026-01-02T00:00:00+00:00",
             "approval": EXPIRED.note()}
LATER = T0 + timedelta(hours=1)


def decided_as(c: FunctionCall, s: Settled, kind: str = "approval") -> Item:
    return decided(c, s.decision, kind, s.by or None, s.comment, s.arguments)


def long_run(steps: int) -> list[Event]:
    return history(*(tool_step(n, call(f"c{n}", "search", q=str(n)), {"hits": n}) for n in range(1, steps + 1)))


def shown(*steps: int) -> list[Message]:
    """The messages of ``long_run``'s steps."""
    out: list[Message] = []
    for n in steps:
        c = call(f"c{n}", "search", q=str(n))
        out += [said(c), answered((c, {"hits": n}))]
    return out


@dataclass(frozen=True)
class Row:
    events: list[Event]
    current: int
    messages: list[Message]
    window: int = 20


ROWS = [
    pytest.param(Row(history(), 1, [opening()]), id="no step yet: the input alone (run_created is no message)"),
    pytest.param(Row(history(tool_step(1, C1, {"hits": 2})), 2, [opening(), said(C1), answered((C1, {"hits": 2}))]),
                 id="a tool call and its result, paired by id"),
    pytest.param(Row(history(step(1, started(), model("two things", C1, C2), intent(C1), result(C1, {"hits": 2}),
                                  intent(C2), result(C2, {"written": True}), completed(2))), 2,
                     [opening(), said("two things", C1, C2), answered((C1, {"hits": 2}), (C2, {"written": True}))]),
                 id="two calls of a step: their results in one message, in order; the model's text kept"),
    pytest.param(Row(history(tool_step(1, C1, {"error": "timed out after 30 s"}, ok=False)), 2,
                     [opening(), said(C1), answered((C1, {"error": "timed out after 30 s"}))]),
                 id="a failed tool result: the model sees the error as the call's output"),
    pytest.param(Row(history(tool_step(1, C1, {"hits": 0}), tool_step(2, C2, {"written": True})), 3,
                     [opening(), said(C1), answered((C1, {"hits": 0})), said(C2), answered((C2, {"written": True}))]),
                 id="steps in order"),
    pytest.param(Row(history(step(1, started(), model(PAY), requested(PAY), decided_as(PAY, APPROVED), started(B),
                                  intent(PAY, B), result(PAY, {"paid": 250, "approval": APPROVED.note()}),
                                  completed(1))), 2,
                     [opening(), said(PAY), answered((PAY, {"paid": 250, "approval": {
                         "decision": "approved", "by": "lee@example.com", "comment": "within budget"}}))]),
                 id="approved: the result tells who approved it; the approval's events are no messages"),
    pytest.param(Row(history(step(1, started(), model(PAY), requested(PAY), decided_as(PAY, REJECTED), started(B),
                                  result(PAY, REFUSED, ok=False), completed(1))), 2,
                     [opening(), said(PAY), answered((PAY, {
                         "error": "pay was not called: lee@example.com rejected it: too much",
                         "approval": {"decision": "rejected", "by": "lee@example.com", "comment": "too much"}}))]),
                 id="rejected: the model is told the call was not made, by whom, and why"),
    pytest.param(Row(history(step(1, started(), model(PAY), requested(PAY), decided_as(PAY, EXPIRED), started(B),
                                  result(PAY, TIMED_OUT, ok=False), completed(1))), 2,
                     [opening(), said(PAY), answered((PAY, {
                         "error": "pay was not called: it needed approval and nobody decided before "
                                  "2026-01-02T00:00:00+00:00",
                         "approval": {"decision": "expired",
                                      "comment": "nobody decided before 2026-01-02T00:00:00+00:00"}}))]),
                 id="expired: the model is told nobody decided in time (no approver named)"),
    pytest.param(Row(history(step(1, started(), model(PAY), requested(PAY), decided_as(PAY, EDITED), started(B),
                                  intent(PAY, B), result(PAY, {"paid": 90, "approval": EDITED.note()}),
                                  completed(1))), 2,
                     [opening(), said(call("p1", "pay", to="acme", amount=250)), answered((PAY, {
                         "paid": 90, "approval": {"decision": "approved", "by": "lee@example.com",
                                                  "comment": "90 is enough",
                                                  "arguments_used": {"to": "acme", "amount": 90}}}))]),
                 id="edited: its own call stays as sent, and it sees the arguments the tool ran with"),
    pytest.param(Row(history(step(1, started(), model(PAY), intent(PAY), started(B, previous=A),
                                  requested(PAY, "reconcile"), decided_as(PAY, DONE, "reconcile"), started(C),
                                  result(PAY, {"reconciled": DONE.note()}), completed(1))), 2,
                     [opening(), said(PAY), answered((PAY, {"reconciled": {
                         "decision": "done", "by": "ops@example.com", "comment": "it went through"}}))]),
                 id="reconciled done: the model is told an operator says the call happened"),
    pytest.param(Row(history(step(1, started(), model(PAY), intent(PAY), started(B, previous=A),
                                  requested(PAY, "reconcile"), decided_as(PAY, RETRY, "reconcile"), started(C),
                                  intent(PAY, C), result(PAY, {"paid": 250}), completed(1))), 2,
                     [opening(), said(PAY), answered((PAY, {"paid": 250}))]),
                 id="reconciled retry: the call was made again, the model sees that result once"),
    pytest.param(Row(history(step(1, started(), model(PAY), intent(PAY), started(B, previous=A),
                                  requested(PAY, "reconcile"), late(PAY, {"paid": 250, "ref": "TX-1"}),
                                  decided_as(PAY, BY_FACTS, "reconcile"), started(C),
                                  result(PAY, {"paid": 250, "ref": "TX-1"}), completed(1))), 2,
                     [opening(), said(PAY), answered((PAY, {"paid": 250, "ref": "TX-1"}))]),
                 id="a late result that settled the reconciliation: the model sees the real result, once"),
    pytest.param(Row(history(step(1, started(), model(PAY), intent(PAY), started(B, previous=A),
                                  requested(PAY, "reconcile"), decided_as(PAY, RETRY, "reconcile"), started(C),
                                  intent(PAY, C), result(PAY, {"paid": 250, "ref": "TX-2"}), completed(1),
                                  late(PAY, {"paid": 250, "ref": "TX-1"}, intent=FIRST))), 2,
                     [opening(), said(PAY), answered((PAY, {"paid": 250, "ref": "TX-2"}))]),
                 id="a late result after the step committed is a record for the operator, not a message"),
    pytest.param(Row(history(step(1, started(), model(C1), intent(C1), deferred(C1, LATER), started(B),
                                  intent(C1, B), result(C1, {"hits": 3}), completed(1))), 2,
                     [opening(), said(C1), answered((C1, {"hits": 3}))]),
                 id="a deferred call (RetryLater) then made: one result, the deferral is no message"),
    pytest.param(Row(history(step(1, started(), model(C1), intent(C1), result(C1, {"checked": "db"}, continue_at=LATER),
                                  completed(1), timer(LATER)), tool_step(2, C2, {"written": True})), 3,
                     [opening(), said(C1), answered((C1, {"checked": "db"})), said(C2),
                      answered((C2, {"written": True}))]),
                 id="a timer between steps (ContinueLater): no message of its own"),
    pytest.param(Row(history(tool_step(1, C1, {"hits": 2}), step(2, started(), model(C2), intent(C2))), 2,
                     [opening(), said(C1), answered((C1, {"hits": 2}))]),
                 id="the step in progress is not history (its recorded response is reused, not resent)"),
    pytest.param(Row(history(tool_step(1, C1, {"hits": 2}), step(2, started()), tool_step(3, C2, {"written": 1})), 2,
                     [opening(), said(C1), answered((C1, {"hits": 2}))]),
                 id="events of steps after the current one are ignored"),
    # the context window
    pytest.param(Row(long_run(6), 7, [opening(omitted=3), *shown(4, 5, 6)], window=3),
                 id="window 3 of 6 steps: the input, a note that 3 steps are not shown, the last 3"),
    pytest.param(Row(long_run(6), 7, [opening(omitted=5), *shown(6)], window=1),
                 id="window 1: the last step only"),
    pytest.param(Row(long_run(6), 7, [opening(), *shown(1, 2, 3, 4, 5, 6)], window=6),
                 id="window exactly the steps committed: everything, no note"),
    pytest.param(Row(long_run(6), 7, [opening(), *shown(1, 2, 3, 4, 5, 6)], window=10),
                 id="window larger than the run: everything, no note"),
    pytest.param(Row(long_run(50), 51, [opening(omitted=30), *shown(*range(31, 51))]),
                 id="a long run with the default window of 20: the last 20 steps, 30 left out"),
]


@pytest.mark.parametrize("row", ROWS)
def test_rebuild_messages(row: Row) -> None:
    messages, _ = view(row.events, row.current, row.window)
    assert messages == row.messages


def test_the_history_note_counts_the_steps_left_out() -> None:
    messages, _ = view(long_run(6), 7, window=2)
    assert messages[0].parts[1].text == "(The 4 earlier steps of this run are not shown.)"


# --- the progress of the step in progress -------------------------------------------------------------------

RESPONSE = ModelResponse(message=said(PAY), usage=TokenUsage(input_tokens=10, output_tokens=5),
                         model_version="v1", finish_reason="STOP")
"""``model(PAY)`` as recorded; in the rows below, step 1 starts at seq 2 (started), then 3 (model), 4, ..."""
LATE_AT = (T0 + timedelta(minutes=5)).isoformat()
EARLY = T0 + timedelta(minutes=30)


def progress(**fields: Any) -> StepProgress:
    return StepProgress(**fields)


PROGRESS = [
    pytest.param(history(step(1, started())), 1, progress(), id="claimed, nothing recorded yet"),
    pytest.param(history(step(1, started(), model(PAY))), 1, progress(response=RESPONSE),
                 id="the model response is kept, for a retry to reuse"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY))), 1,
                 progress(response=RESPONSE, intents={"p1"}, intent_seq={"p1": 4}),
                 id="an intent without a result: the call may have happened"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY), result(PAY, {"paid": 250}))), 1,
                 progress(response=RESPONSE, intents={"p1"}, intent_seq={"p1": 4},
                          results={"p1": (True, {"paid": 250})}),
                 id="a result, by call id"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY), result(PAY, {"error": "declined"}, ok=False))), 1,
                 progress(response=RESPONSE, intents={"p1"}, intent_seq={"p1": 4},
                          results={"p1": (False, {"error": "declined"})}),
                 id="a failed result is a result"),
    pytest.param(history(step(1, started(), model(C1, C2), intent(C1), result(C1, {}, continue_at=LATER), intent(C2),
                              result(C2, {}, continue_at=EARLY))), 1,
                 progress(response=RESPONSE.model_copy(update={"message": said(C1, C2)}), intents={"c1", "c2"},
                          intent_seq={"c1": 4, "c2": 6}, results={"c1": (True, {}), "c2": (True, {})},
                          continue_at=LATER),
                 id="ContinueLater: the latest time a tool of the step asked for"),
    pytest.param(history(step(1, started(), model(PAY), requested(PAY), decided_as(PAY, APPROVED))), 1,
                 progress(response=RESPONSE, settled={"p1": APPROVED}), id="approved"),
    pytest.param(history(step(1, started(), model(PAY), requested(PAY), decided_as(PAY, REJECTED))), 1,
                 progress(response=RESPONSE, settled={"p1": REJECTED}), id="rejected, with the reason"),
    pytest.param(history(step(1, started(), model(PAY), requested(PAY), decided_as(PAY, EXPIRED))), 1,
                 progress(response=RESPONSE, settled={"p1": EXPIRED}), id="expired: nobody decided, by nobody"),
    pytest.param(history(step(1, started(), model(PAY), requested(PAY), decided_as(PAY, EDITED))), 1,
                 progress(response=RESPONSE, settled={"p1": EDITED}), id="approved with edited arguments"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY), started(B, A), requested(PAY, "reconcile"),
                              decided_as(PAY, DONE, "reconcile"))), 1,
                 progress(response=RESPONSE, intent_seq={"p1": 4}, reconciled={"p1": DONE},
                          reconcile_rounds={"p1": 1}),
                 id="reconciled done: no longer in doubt"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY), started(B, A), requested(PAY, "reconcile"),
                              decided_as(PAY, RETRY, "reconcile"), started(C), intent(PAY, C))), 1,
                 progress(response=RESPONSE, intents={"p1"}, intent_seq={"p1": 9}, reconcile_rounds={"p1": 1}),
                 id="reconciled retry, then announced again: in doubt again, the answer no longer holds"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY), started(B, A), requested(PAY, "reconcile"),
                              decided_as(PAY, RETRY, "reconcile"), started(C), intent(PAY, C), started(A, C),
                              requested(PAY, "reconcile"), decided(PAY, "fail", "reconcile", "ops@example.com"))), 1,
                 progress(response=RESPONSE, intent_seq={"p1": 9}, reconcile_rounds={"p1": 2},
                          reconciled={"p1": Settled("fail", "ops@example.com", "", None)}),
                 id="a second reconciliation of the call is round 2"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY), started(B, A),
                              late(PAY, {"paid": 250}, continue_at=LATER))), 1,
                 progress(response=RESPONSE, intents={"p1"}, intent_seq={"p1": 4},
                          late={"p1": LateResult(ok=True, output={"paid": 250}, owner=A, at=LATE_AT,
                                                 continue_at=LATER)}),
                 id="a late result of the latest intent: the call's result is known"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY), started(B, A), intent(PAY, B),
                              late(PAY, {"paid": 250}, intent=FIRST))), 1,
                 progress(response=RESPONSE, intents={"p1"}, intent_seq={"p1": 6}),
                 id="a late result of an earlier intent is not taken for the later call"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY), late(PAY, {"paid": 250}), started(B, A),
                              intent(PAY, B))), 1,
                 progress(response=RESPONSE, intents={"p1"}, intent_seq={"p1": 7}),
                 id="a new intent drops the late result of the previous one"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY), late(PAY, {"paid": 1}, intent=None))), 1,
                 progress(response=RESPONSE, intents={"p1"}, intent_seq={"p1": 4}),
                 id="a late result naming no intent does not answer an announced call"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY), started(B, A), requested(PAY, "reconcile"),
                              late(PAY, {"paid": 250}), decided_as(PAY, BY_FACTS, "reconcile"))), 1,
                 progress(response=RESPONSE, intent_seq={"p1": 4}, reconciled={"p1": BY_FACTS},
                          reconcile_rounds={"p1": 1},
                          late={"p1": LateResult(ok=True, output={"paid": 250}, owner=A, at=LATE_AT)}),
                 id="settled by its late result: the result is known and the call no longer in doubt"),
    pytest.param(history(step(1, started(), model(C1), intent(C1), deferred(C1, LATER))), 1,
                 progress(response=RESPONSE.model_copy(update={"message": said(C1)}), intent_seq={"c1": 4}),
                 id="deferred (RetryLater): the tool did nothing, so its intent is not in doubt"),
    pytest.param(history(tool_step(1, PAY, {"paid": 250})), 2, progress(),
                 id="a committed step is history, not progress"),
    pytest.param(history(tool_step(1, C1, {"hits": 1}), step(2, started(), model(PAY), intent(PAY))), 2,
                 progress(response=RESPONSE, intents={"p1"}, intent_seq={"p1": 9}),
                 id="the progress of the current step only"),
]


@pytest.mark.parametrize(("events", "current", "expected"), PROGRESS)
def test_rebuild_progress(events: list[Event], current: int, expected: StepProgress) -> None:
    _, got = view(events, current)
    assert got == expected


# --- idempotence and prefixes -------------------------------------------------------------------------------

def _row(p: Any) -> Row:
    return p.values[0]


HISTORIES = [pytest.param(_row(p).events, _row(p).current, id=p.id) for p in ROWS] + [
    pytest.param(*p.values[:2], id=p.id) for p in PROGRESS]
"""Every history of both tables."""


@pytest.mark.parametrize(("events", "current"), HISTORIES)
def test_rebuilding_twice_gives_the_same_answer_and_reads_the_events_only(events: list[Event], current: int) -> None:
    kept = [e.model_copy(deep=True) for e in events]
    first = view(events, current)
    again = view(events, current)
    assert first == again
    assert events == kept


MIXED = history(
    tool_step(1, C1, {"hits": 2}),
    step(2, started(), model(PAY), requested(PAY), decided_as(PAY, EDITED), started(B), intent(PAY, B),
         result(PAY, {"paid": 90, "approval": EDITED.note()}), completed(1)),
    step(3, started(), model(C1), intent(C1), deferred(C1, LATER), started(B), intent(C1, B),
         result(C1, {"hits": 0}, continue_at=LATER), completed(1), timer(LATER)),
    step(4, started(), model(PAY), intent(PAY), started(B, A), requested(PAY, "reconcile"), late(PAY, {"paid": 250}),
         decided_as(PAY, BY_FACTS, "reconcile"), started(C), result(PAY, {"paid": 250}), completed(1)),
    tool_step(5, C2, {"error": "disk full"}, ok=False),
)
"""Five committed steps of every kind: a plain call, an edited approval, a deferral and a timer, a late
result that settled a reconciliation, a failed call."""


@pytest.mark.parametrize("current", range(1, 7))
def test_the_history_at_a_step_is_a_prefix_of_every_later_history(current: int) -> None:
    known = [e for e in MIXED if e.step < current]  # what was written when the step began
    earlier, _ = view(known, current)
    later, _ = view(MIXED, 6)
    assert earlier == later[:len(earlier)]
    assert len(earlier) == 1 + 2 * (current - 1)  # the input, then a model turn and its results per step


@pytest.mark.parametrize("current", range(1, 6))
def test_the_progress_of_a_step_does_not_depend_on_later_steps(current: int) -> None:
    _, upto = view([e for e in MIXED if e.step <= current], current)
    _, everything = view(MIXED, current)
    assert upto == everything


@pytest.mark.parametrize("window", [1, 2, 3, 4])
def test_a_window_is_the_tail_of_the_whole_history(window: int) -> None:
    whole, _ = view(MIXED, 6, window=1000)
    windowed, _ = view(MIXED, 6, window=window)
    assert windowed[0] == opening(omitted=5 - window)
    assert windowed[1:] == whole[len(whole) - 2 * window:]


# --- helpers of the stepper ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("current", "window", "first"), [
    pytest.param(1, 20, 1, id="the first step sees from step 1"),
    pytest.param(21, 20, 1, id="step 21 with window 20 still sees every step"),
    pytest.param(22, 20, 2, id="step 22 with window 20 leaves step 1 out"),
    pytest.param(7, 3, 4, id="step 7 with window 3 sees steps 4 to 6"),
    pytest.param(7, 1, 6, id="window 1: the previous step only"),
])
def test_window_start(current: int, window: int, first: int) -> None:
    assert window_start(current, window) == first


@pytest.mark.parametrize(("settled", "note"), [
    pytest.param(APPROVED, {"decision": "approved", "by": "lee@example.com", "comment": "within budget"},
                 id="approved: who and why"),
    pytest.param(Settled("rejected", "lee@example.com", "", None), {"decision": "rejected", "by": "lee@example.com"},
                 id="no comment: none shown"),
    pytest.param(EXPIRED, {"decision": "expired", "comment": "nobody decided before 2026-01-02T00:00:00+00:00"},
                 id="expired: nobody to name"),
    pytest.param(EDITED, {"decision": "approved", "by": "lee@example.com", "comment": "90 is enough",
                          "arguments_used": {"to": "acme", "amount": 90}}, id="edited: the arguments used"),
    pytest.param(Settled("approved", "lee@example.com", "", {}), {"decision": "approved", "by": "lee@example.com",
                                                                  "arguments_used": {}},
                 id="edited to no arguments at all is still an edit"),
])
def test_settled_note(settled: Settled, note: dict[str, Any]) -> None:
    assert settled.note() == note


@pytest.mark.parametrize(("results", "pending"), [
    pytest.param({}, [C1, C2], id="nothing recorded: every call, in order"),
    pytest.param({"c1": (True, {})}, [C2], id="a recorded result is not called again"),
    pytest.param({"c1": (False, {"error": "x"})}, [C2], id="nor a recorded failure"),
    pytest.param({"c1": (True, {}), "c2": (True, {})}, [], id="all recorded: nothing pending"),
])
def test_pending_calls(results: dict[str, tuple[bool, dict[str, Any]]], pending: list[FunctionCall]) -> None:
    recorded = ModelResponse(message=said("both", C1, C2), usage=TokenUsage())
    assert pending_calls(recorded, StepProgress(results=results)) == pending


UNTIL = T0 + timedelta(minutes=1)


def at_seq(seq: int) -> datetime:
    return T0 + timedelta(seconds=seq)


@pytest.mark.parametrize(("events", "facts"), [
    pytest.param(history(step(1, started(), model(PAY))), Uncertainty(), id="never announced: nothing known"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY))), Uncertainty(owner=A, announced_at=at_seq(4)),
                 id="announced, nobody took over"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY), started(B, previous=A))),
                 Uncertainty(owner=A, announced_at=at_seq(4), lease_until=UNTIL, taken_over_by=B,
                             taken_over_at=at_seq(5)),
                 id="announced, then taken over: the lease's end and who took over when"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY), started(B, previous="someone else"))),
                 Uncertainty(owner=A, announced_at=at_seq(4)), id="a takeover of another attempt is not this one's"),
    pytest.param(history(step(1, started(C, previous=A), model(PAY), intent(PAY))),
                 Uncertainty(owner=A, announced_at=at_seq(4)), id="a takeover before the intent does not count"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY), started(B, previous=A), intent(PAY, B))),
                 Uncertainty(owner=B, announced_at=at_seq(6)),
                 id="the latest intent of the call is the one asked about"),
    pytest.param(history(step(1, started(), model(PAY), intent(PAY)), step(2, started(B, previous=A))),
                 Uncertainty(owner=A, announced_at=at_seq(4)), id="a takeover of another step does not count"),
    pytest.param(history(step(1, started(), model(C1), intent(C1))), Uncertainty(), id="another call's intent"),
])
def test_uncertainty(events: list[Event], facts: Uncertainty) -> None:
    assert uncertainty(events, 1, PAY.id) == facts
