"""The tool-call provenance policy: a sensitive tool called after untrusted content entered the model's
context, with arguments the user did not give, is held for a human (or blocked).

Why this shape: an injected instruction works by making the model call a tool with the attacker's values
(an account, an address, an amount), and those values come from the untrusted content, not from the
user. But benign tasks act on what they read too ("pay the bill in this file" pays the account written
in the file), so holding every such call would make the agent useless. The policy therefore holds a
call when its ungrounded arguments follow content that is *suspicious*: content the injection detector
scored at or above its suspicion threshold (well below the quarantine threshold), or content nobody
scored (no detector in the chain: every untrusted content counts). ``options: {strict: true}`` holds
every such call, suspicious or not.

What is untrusted: the output of every tool not declared ``trusted``. What is grounded: an argument
value (every string, number) found in what the user wrote, compared on lowercase letters and digits,
so formatting does not matter ("$89.00" grounds 89; "A-1042" grounds "a1042").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from agex.core.errors import ConfigurationError
from agex.core.guard import Action, Channel, Content, GuardSpec, Verdict, allow

NAME = "provenance"
_ACTIONS = (Action.approve, Action.block)
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def normalise(text: str) -> str:
    return _NOT_ALNUM.sub("", text.lower())


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, value


def _number_forms(n: int | float) -> set[str]:
    forms = {normalise(repr(n)), normalise(f"{n:g}")}
    if float(n).is_integer():
        forms.add(str(int(n)))
    return {f for f in forms if f}


def grounded(value: Any, user: str) -> bool:
    """Whether the user's own text contains ``value``."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int | float):
        return any(f in user for f in _number_forms(value))
    text = normalise(str(value))
    return not text or text in user


class ProvenanceGuard:
    name = NAME
    channels = frozenset({Channel.tool_args})

    def __init__(self, action: Action = Action.approve, threshold: float | None = None, strict: bool = False) -> None:
        self.action, self.strict = action, strict
        if threshold is None:
            from agex.guards.injection import SUSPICION_THRESHOLD

            threshold = SUSPICION_THRESHOLD
        self.threshold = threshold

    def check(self, content: Content) -> Verdict:
        ctx = content.context
        if content.tool not in ctx.sensitive_tools or not ctx.untrusted:
            return allow(NAME)
        user = normalise(ctx.user_text)
        ungrounded = [path for path, v in _leaves(content.value) if not grounded(v, user)]
        if not ungrounded:
            return allow(NAME)
        suspicious = [u for u in ctx.untrusted if u.score is None or u.score >= self.threshold]
        if not suspicious and not self.strict:
            return allow(NAME)
        sources = sorted({u.tool for u in (suspicious or ctx.untrusted)})
        why = "suspicious " if suspicious else ""
        return Verdict(self.action, NAME, findings=("untrusted_context",),
                       score=max((u.score or 0.0 for u in suspicious), default=None) if suspicious else None,
                       reason=(f"{content.tool} is sensitive and was called after {why}untrusted content from "
                               f"{', '.join(sources)} entered the context, with arguments the user did not give: "
                               f"{', '.join(ungrounded)}"))


def from_spec(spec: GuardSpec) -> ProvenanceGuard:
    if spec.channels is not None and set(spec.channels) != {Channel.tool_args}:
        raise ConfigurationError("guard provenance: it judges tool calls only (channels: [tool_args])")
    action = spec.action or Action.approve
    if action not in _ACTIONS:
        raise ConfigurationError(f"guard provenance: action must be approve or block, not {action.value}")
    unknown = set(spec.options) - {"strict"}
    if unknown:
        raise ConfigurationError(f"guard provenance: unknown option(s) {sorted(unknown)}; it has: strict")
    return ProvenanceGuard(action, spec.threshold, bool(spec.options.get("strict", False)))
