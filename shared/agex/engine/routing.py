"""Which models a step asks, in order: the agent's cost-aware rules first (a cheaper model for a small
step, a stronger one after a tool error), then its own model, then its fallbacks. Pure: the stepper asks
them and records the decision with the response (docs/models.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from agex.core.agent import Agent
from agex.core.messages import ModelRequest
from agex.core.run import Event, EventKind


def estimated_tokens(request: ModelRequest) -> int:
    """About a token per four characters of what is sent: close enough to tell a small step from a large one
    before paying for it."""
    size = len(request.system) + sum(len(json.dumps(m.model_dump(mode="json", exclude_none=True)))
                                      for m in request.messages)
    size += sum(len(json.dumps(t.parameters)) + len(t.description) for t in request.tools)
    return size // 4


def candidates(agent: Agent, request: ModelRequest, events: Sequence[Event], step: int,
               degraded: tuple[str, str] | None = None) -> tuple[tuple[str, ...], str | None]:
    """The models to ask in order, and why the first is not the agent's own (None when it is). ``degraded``:
    the model a degradation asks first, and why; it goes before any rule's."""
    chosen: str | None = None
    why: str | None = None
    if degraded is not None:
        chosen, why = degraded
    for rule in () if chosen else agent.model_rules:
        if rule.when == "small_input":
            tokens = estimated_tokens(request)
            if tokens <= rule.max_input_tokens:
                chosen, why = rule.model, f"rule small_input: about {tokens} input tokens, at most {rule.max_input_tokens}"
        elif rule.when == "after_tool_error" and _tool_failed(events, step - 1):
            chosen, why = rule.model, f"rule after_tool_error: a tool call of step {step - 1} failed"
        elif rule.when == "asks" and re.search(rule.pattern, _asked(request), re.IGNORECASE):
            chosen, why = rule.model, f"rule asks: the request matches {rule.pattern!r}"
        if chosen is not None:
            break
    order = tuple(dict.fromkeys([*([chosen] if chosen else []), agent.model, *agent.fallbacks]))
    return order, why


def _asked(request: ModelRequest) -> str:
    """The latest text the user sent: the part of the request that says what is asked."""
    for m in reversed(request.messages):
        if m.role == "user" and m.text:
            return m.text
    return ""


def _tool_failed(events: Sequence[Event], step: int) -> bool:
    return any(e.kind == EventKind.tool_result and e.step == step and not e.data.get("ok", True) for e in events)
