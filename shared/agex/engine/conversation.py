"""Rebuild what the model sees, and what the step in progress already did, from events. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agex.core.messages import FunctionCall, FunctionResponse, Message, ModelResponse, Part, TokenUsage
from agex.core.run import Event, EventKind
from agex.core.thread import ThreadContext
from agex.engine.guarding import RESTRICTED, hold_reason, model_view


@dataclass(frozen=True)
class Settled:
    """How a human (or the expiry) settled an approval of a call of the current step."""

    decision: str
    """``approved``, ``rejected`` or ``expired``."""
    by: str
    comment: str
    arguments: dict[str, Any] | None
    """Edited arguments to run the tool with, if the approver changed them."""

    def note(self) -> dict[str, Any]:
        """What the model is told about the approval along with the call's result."""
        note: dict[str, Any] = {"decision": self.decision}
        if self.by:
            note["by"] = self.by
        if self.comment:
            note["comment"] = self.comment
        if self.arguments is not None:
            note["arguments_used"] = self.arguments
        return note


@dataclass(frozen=True)
class LateResult:
    """What a call returned, reported by the attempt that made it after it had lost its lease."""

    ok: bool
    output: dict[str, Any]
    owner: str
    at: str
    continue_at: datetime | None = None


@dataclass(frozen=True)
class Uncertainty:
    """What the events say about a call that was announced and never reported: who announced it and
    when, and how that attempt lost the step (its lease's expiry, who took over and when)."""

    owner: str | None = None
    announced_at: datetime | None = None
    lease_until: datetime | None = None
    taken_over_by: str | None = None
    taken_over_at: datetime | None = None


@dataclass
class StepProgress:
    """What earlier attempts of the current step recorded."""

    response: ModelResponse | None = None
    results: dict[str, tuple[bool, dict[str, Any]]] = field(default_factory=dict)
    intents: set[str] = field(default_factory=set)
    """Calls announced and perhaps made: an intent with no result means an attempt may have crashed
    inside the tool."""
    settled: dict[str, Settled] = field(default_factory=dict)
    """Approval decisions on calls of this step."""
    reconciled: dict[str, Settled] = field(default_factory=dict)
    """What a human said became of an uncertain call (``retry``, ``done``, ``fail``, ``expired``), when no
    intent was written since: a new intent makes the call uncertain again."""
    reconcile_rounds: dict[str, int] = field(default_factory=dict)
    intent_seq: dict[str, int] = field(default_factory=dict)
    """The event of each call's latest intent: the one a late result of the call must answer."""
    late: dict[str, LateResult] = field(default_factory=dict)
    """Late results that answer a call's latest intent: the call's result is known, though no attempt
    holding the lease recorded it."""
    continue_at: datetime | None = None
    """The latest time a tool of this step asked the run to wait until before its next step."""
    held: dict[str, str] = field(default_factory=dict)
    """Calls of this step a guard held for approval, with the guard's reason."""
    shown_answer: str | None = None
    """The text of this step's response as events show it, when that differs from what the model said
    (personal data redacted): what ``run_finished`` records of the answer."""


def window_start(current_step: int, window_steps: int) -> int:
    """First step whose events the model sees at ``current_step``."""
    return max(1, current_step - window_steps)


def _response_of(event: Event) -> ModelResponse:
    data = event.data
    return ModelResponse(message=Message.model_validate(model_view(data, "message")),
                         usage=TokenUsage(input_tokens=data["usage"]["input_tokens"],
                                          output_tokens=data["usage"]["output_tokens"],
                                          cached_input_tokens=data["usage"].get("cached_input_tokens", 0)),
                         model_version=data.get("model_version", ""), finish_reason=data.get("finish_reason", ""))


def _tool_message(results: list[Event]) -> Message:
    return Message(role="user", parts=[
        Part(function_response=FunctionResponse(id=e.data["call_id"], name=e.data["name"],
                                                response=model_view(e.data, "output")))
        for e in results])


HISTORY_NOTE = "(The {omitted} earlier steps of this run are not shown.)"
"""Told to the model when the window hides early steps, so it knows the history it sees is partial.
The Gemini emulator reads it to keep counting turns of long scripted runs."""


THREAD_NOTE = "(Conversation so far: {turns} earlier turns follow.{summary})"
"""Opens what a thread's run is shown of the conversation before it (docs/threads.md): the summary of the older
turns, then the last turns as user and model messages, then the run's own input. The Gemini emulator reads the
count to find where the run's own conversation starts."""
SUMMARY_NOTE = " Before them: {summary}"
DROPPED_NOTE = " ({dropped} turns before those are missing.)"


def history(context: ThreadContext | None) -> list[Message]:
    """A thread's turns before this run, as the model sees them: user and model messages, the first one opened
    by :data:`THREAD_NOTE` with the summary. Empty outside a thread or on its first turn."""
    if context is None or context.empty:
        return []
    summary = SUMMARY_NOTE.format(summary=context.summary) if context.summary else ""
    if context.dropped_turns:
        summary += DROPPED_NOTE.format(dropped=context.dropped_turns)
    note = Part(text=THREAD_NOTE.format(turns=len(context.turns), summary=summary))
    messages = []
    for i, turn in enumerate(context.turns):
        messages.append(Message(role="user", parts=[*([note] if i == 0 else []), Part(text=turn.input)]))
        messages.append(Message(role="model", parts=[Part(text=turn.answer)]))
    return messages or [Message(role="user", parts=[note])]


def rebuild(run_input: str, events: list[Event], current_step: int,
            first_step: int = 1, context: ThreadContext | None = None,
            recalled: str | None = None) -> tuple[list[Message], StepProgress]:
    """Messages of the committed steps in ``events`` (after the thread's history in ``context``, if any, and the
    user's input, followed by what was ``recalled`` of earlier runs), and the progress of ``current_step``. Events
    must be ordered by seq and cover whole steps from ``first_step``."""
    opening = [Part(text=run_input)]
    if recalled:
        opening.append(Part(text=recalled))
    if first_step > 1:
        opening.append(Part(text=HISTORY_NOTE.format(omitted=first_step - 1)))
    before = history(context)
    if before and before[-1].role == "user":
        # only a summary (no turn kept): it opens the run's own message
        opening = [*before.pop().parts, *opening]
    messages = [*before, Message(role="user", parts=opening)]
    progress = StepProgress()
    by_step: dict[int, list[Event]] = {}
    for event in events:
        by_step.setdefault(event.step, []).append(event)
    for step in sorted(by_step):
        step_events = by_step[step]
        if step == current_step:
            for e in step_events:
                if e.kind == EventKind.model_response:
                    progress.response = _response_of(e)
                    if RESTRICTED in e.data:
                        progress.shown_answer = Message.model_validate(e.data["message"]).text
                elif e.kind == EventKind.tool_intent:
                    progress.intents.add(e.data["call_id"])
                    progress.reconciled.pop(e.data["call_id"], None)
                    progress.intent_seq[e.data["call_id"]] = e.seq
                    progress.late.pop(e.data["call_id"], None)
                elif e.kind == EventKind.tool_late_result:
                    call_id = e.data["call_id"]
                    if e.data.get("intent_seq") == progress.intent_seq.get(call_id):
                        at = e.data.get("continue_at")
                        progress.late[call_id] = LateResult(
                            ok=e.data["ok"], output=model_view(e.data, "output"), owner=e.data.get("owner", ""),
                            at=e.data.get("at", ""), continue_at=datetime.fromisoformat(at) if at else None)
                elif e.kind == EventKind.tool_result:
                    progress.results[e.data["call_id"]] = (e.data["ok"], model_view(e.data, "output"))
                    if e.data.get("continue_at"):
                        at = datetime.fromisoformat(e.data["continue_at"])
                        progress.continue_at = max(at, progress.continue_at or at)
                elif e.kind == EventKind.tool_deferred:
                    # the tool said it did nothing: its intent is no longer in doubt
                    progress.intents.discard(e.data["call_id"])
                elif e.kind == EventKind.guard_verdict and e.data.get("call_id"):
                    held = [v for v in e.data.get("verdicts", ()) if v.get("action") == "approve"]
                    if e.data.get("action") == "approve" and held:
                        progress.held[e.data["call_id"]] = hold_reason(held[0])
                elif e.kind == EventKind.approval_decided:
                    settled = Settled(decision=e.data["decision"], by=e.data.get("by") or "",
                                      comment=e.data.get("comment") or "", arguments=e.data.get("arguments"))
                    call_id = e.data["call_id"]
                    if e.data.get("kind") == "reconcile":
                        # a human answered for the uncertain call: it is no longer in doubt
                        progress.intents.discard(call_id)
                        progress.reconciled[call_id] = settled
                        progress.reconcile_rounds[call_id] = progress.reconcile_rounds.get(call_id, 0) + 1
                    else:
                        progress.settled[call_id] = settled
            continue
        if step > current_step:
            continue
        response = next((e for e in step_events if e.kind == EventKind.model_response), None)
        if response is None:
            continue
        messages.append(Message.model_validate(model_view(response.data, "message")))
        results = [e for e in step_events if e.kind == EventKind.tool_result]
        if results:
            messages.append(_tool_message(results))
    return messages, progress


def pending_calls(response: ModelResponse, progress: StepProgress) -> list[FunctionCall]:
    return [c for c in response.message.function_calls if c.id not in progress.results]


def uncertainty(events: list[Event], step: int, call_id: str) -> Uncertainty:
    """What ``events`` (ordered by seq) say about the latest intent of ``call_id`` in ``step``."""
    intent = next((e for e in reversed(events) if e.step == step and e.kind == EventKind.tool_intent
                   and e.data.get("call_id") == call_id), None)
    if intent is None:
        return Uncertainty()
    owner = intent.data.get("owner")
    takeover = next((e for e in events if e.seq > intent.seq and e.step == step and e.kind == EventKind.step_started
                     and e.data.get("resumed") and (owner is None or e.data.get("previous_owner") == owner)), None)
    until = takeover.data.get("previous_until") if takeover is not None else None
    return Uncertainty(owner=owner, announced_at=intent.at,
                       lease_until=datetime.fromisoformat(until) if until else None,
                       taken_over_by=takeover.data.get("owner") if takeover is not None else None,
                       taken_over_at=takeover.at if takeover is not None else None)
