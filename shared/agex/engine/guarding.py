"""The guardrail chain at the seams of the step protocol: what a guard is shown, and how its verdict is
kept. Pure: the chain is given, the events are read by the caller, and what is to be written is returned.

Each content a chain judges is stored in three views (docs/guardrails.md, "What is stored"):
- the *record* view, in the event's own field: the guarded content with personal data redacted, which is
  all the API, the CLI, logs, traces and approvals ever show;
- ``restricted.value``: the guarded content as the model (or the user) gets it, when the record view
  differs (the PII the model may need to do its job); read only by the engine;
- ``restricted.original``: the content before the chain, when a guard changed it (a quarantined tool
  output, a redacted answer), kept for review and never given back to the model.
A verdict other than allow is also a ``guard_verdict`` event in the same write, so a redelivery finds
it and reuses it instead of asking the guard again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agex.core.agent import Agent
from agex.core.approval import ApprovalPolicy
from agex.core.guard import Action, Chain, ChainResult, Channel, GuardContext, Untrusted, text_of
from agex.core.messages import Message, Part
from agex.core.run import Event, EventKind, RunError

RESTRICTED = "restricted"
DETECTOR = "prompt_injection"
"""The guard whose score of each tool output is kept with the result, for the provenance policy."""


@dataclass(frozen=True)
class Guarded:
    """One content after the chain."""

    value: Any
    """What goes on: to the model (a tool's output, the input), to the user (the answer), to the tool."""
    record: Any
    """What may be shown and stored in the open."""
    restricted: dict[str, Any] = field(default_factory=dict)
    result: ChainResult | None = None
    verdict: dict[str, Any] | None = None
    """The ``guard_verdict`` event's data, when the chain did not simply allow."""

    @property
    def action(self) -> Action:
        return self.result.action if self.result else Action.allow

    def stored(self, name: str) -> dict[str, Any]:
        """The event fields for this content under ``name``: the record view, and the restricted views."""
        fields: dict[str, Any] = {name: self.record}
        if self.restricted:
            fields[RESTRICTED] = self.restricted
        if self.result is not None and self.result.scores:
            fields["guard"] = {"action": self.action.value,
                               "scores": {k: round(v, 4) for k, v in self.result.scores.items()}}
        return fields

    def blocked(self) -> RunError | None:
        if self.action != Action.block or self.result is None:
            return None
        v = self.result.deciding
        assert v is not None
        return RunError(code="guardrail_blocked", message=f"the guard {v.guard} blocked the run: {v.reason or 'no reason given'}"
                        f" ({self.verdict['channel'] if self.verdict else 'content'})")


def unguarded(value: Any) -> Guarded:
    return Guarded(value=value, record=value)


def guard(chain: Chain | None, channel: Channel, value: Any, context: GuardContext, *, tool: str | None = None,
          call_id: str | None = None) -> Guarded:
    """Judge ``value`` on ``channel`` (when the chain watches it) and work out its views."""
    if chain is None:
        return unguarded(value)
    result = chain.check(channel, value, context, tool=tool, call_id=call_id) if chain.watches(channel) else None
    goes_on = result.value if result is not None and channel != Channel.tool_args else value
    record = chain.redact_for_records(goes_on)
    if result is not None and channel == Channel.tool_args and result.action == Action.redact:
        deciding = next(v for v in result.verdicts if v.action == Action.redact)
        record = deciding.redacted if deciding.redacted is not None else record
    restricted = restricted_views(value, goes_on, record)
    verdict = None
    if result is not None and result.action != Action.allow:
        verdict = {"channel": channel.value, "action": result.action.value,
                   "verdicts": [v.record() for v in result.verdicts]}
        if tool is not None:
            verdict["tool"] = tool
        if call_id is not None:
            verdict["call_id"] = call_id
    return Guarded(value=goes_on, record=record, restricted=restricted, result=result, verdict=verdict)


def restricted_views(original: Any, goes_on: Any, record: Any) -> dict[str, Any]:
    """The restricted part of a stored content: what goes on, when the record view differs from it, and
    the original, when the chain changed it."""
    restricted: dict[str, Any] = {}
    if record != goes_on:
        restricted["value"] = goes_on
    if goes_on != original:
        restricted["original"] = original
    return restricted


def model_view(data: dict[str, Any], name: str) -> Any:
    """What the engine reads back of a content stored with ``Guarded.stored``."""
    restricted = data.get(RESTRICTED)
    if isinstance(restricted, dict) and "value" in restricted:
        return restricted["value"]
    return data[name]


def public(data: dict[str, Any]) -> dict[str, Any]:
    """An event's data as anything outside the engine may see it."""
    if RESTRICTED not in data:
        return data
    return {k: v for k, v in data.items() if k != RESTRICTED}


def context(agent: Agent, user_text: str, events: Iterable[Event] = (), before_step: int | None = None,
            secrets: tuple[str, ...] = ()) -> GuardContext:
    """What a guard may know: the agent, what the user wrote, and the untrusted content the model has in
    its context (the outputs of tools not declared trusted, in ``events`` of steps before ``before_step``),
    each with the score the detector gave it when it was recorded."""
    trusted = {t.name for t in agent.tools if t.trusted}
    untrusted = []
    for e in events:
        if e.kind != EventKind.tool_result or (before_step is not None and e.step >= before_step):
            continue
        if e.data.get("name") in trusted:
            continue
        untrusted.append(Untrusted(tool=e.data.get("name", ""), call_id=e.data.get("call_id", ""), step=e.step,
                                   text=text_of(model_view(e.data, "output")),
                                   score=e.data.get("guard", {}).get("scores", {}).get(DETECTOR)))
    return GuardContext(agent=agent.name, instructions=agent.instructions, user_text=user_text,
                        untrusted=tuple(untrusted), sensitive_tools=frozenset(t.name for t in agent.tools if t.sensitive),
                        secrets=secrets)


def with_text(message: Message, text: str) -> Message:
    """``message`` with its text replaced by ``text`` (its calls kept)."""
    parts = [Part(text=text)] if text else []
    parts += [p for p in message.parts if p.text is None]
    return message.model_copy(update={"parts": parts})


def hold_reason(verdict: dict[str, Any]) -> str:
    """What an approval a guard asked for says, from the verdict's record."""
    return f"held by the guard {verdict['guard']}: {verdict.get('reason') or 'no reason given'}"


def held_for_approval(agent: Agent, tool: str, reason: str) -> ApprovalPolicy:
    """The approval a guard asks for a call: the approvers of the tool's own policy, else the agent's
    operators, else anyone in the tenant; never the person who started the run (four eyes), since the
    run's input may be what steered the call."""
    own = next((p for p in agent.approvals if p.tool == tool), None)
    approvers = own.approvers if own else (agent.operators or ("*",))
    return ApprovalPolicy(tool=tool, approvers=approvers, four_eyes=True, allow_edits=False,
                          expires_after_s=24 * 3600, on_expiry="reject", reason=reason,
                          redact=own.redact if own else ())
