"""The output guard: what the model writes must not carry the secrets its tools used, nor the agent's
system instructions.

Secrets: the values the step read for its tools (``GuardContext.secrets``) are found with the same
scrubber that keeps them out of tool outputs (``agex.core.scrub``: the value and its base64, hex, URL
and JSON forms) and replaced. The model has no business repeating one; a tool that returned one (it was
scrubbed there) or an injected instruction that made the model spell it out are the ways it gets here.

Instructions: an answer leaks them when it reproduces a substantial passage of them. Both texts are
compared as lowercase word sequences (punctuation, markdown and spacing do not matter): every run of
``_GRAM`` words of the answer that is also a run of the instructions marks those words, and the answer
leaks when the marked words form a passage of at least ``min_leak_chars`` characters, or cover at least
``min_leak_fraction`` of the instructions' runs (what catches short instructions repeated whole).
Quoting a few words, or restating a rule in one's own words, does not fire; a translation, an encoding
or a paraphrase of the instructions is not caught. Instructions shorter than ``MIN_INSTRUCTIONS`` are
not checked: there is too little to leak.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from agex.core.errors import ConfigurationError
from agex.core.guard import (
    ACTIONS_BY_CHANNEL,
    Action,
    Channel,
    Content,
    GuardSpec,
    Verdict,
    allow,
    map_strings,
)
from agex.core.scrub import scrub

NAME = "output"
MIN_INSTRUCTIONS = 40
MIN_LEAK_CHARS = 150
MIN_LEAK_FRACTION = 0.5
WITHHELD = "[system instructions withheld]"
_GRAM = 6
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Leak:
    spans: tuple[tuple[int, int], ...]
    """The passages of the answer that reproduce the instructions (start, end)."""
    longest: int
    coverage: float
    """The fraction of the instructions' word runs the answer reproduces."""


def find_leak(answer: str, instructions: str, min_chars: int = MIN_LEAK_CHARS,
              min_fraction: float = MIN_LEAK_FRACTION) -> Leak | None:
    """The passages of ``answer`` that reproduce ``instructions``, if they are substantial."""
    if len(instructions.strip()) < MIN_INSTRUCTIONS:
        return None
    taught = [w.lower() for w in _WORD.findall(instructions)]
    grams = {tuple(taught[i:i + _GRAM]) for i in range(len(taught) - _GRAM + 1)}
    if not grams:
        return None
    words = list(_WORD.finditer(answer))
    said = [m.group(0).lower() for m in words]
    covered = [False] * len(words)
    seen: set[tuple[str, ...]] = set()
    for i in range(len(said) - _GRAM + 1):
        gram = tuple(said[i:i + _GRAM])
        if gram in grams:
            seen.add(gram)
            covered[i:i + _GRAM] = [True] * _GRAM
    spans, start = [], None
    for i, c in enumerate([*covered, False]):
        if c and start is None:
            start = i
        elif not c and start is not None:
            spans.append((words[start].start(), words[i - 1].end()))
            start = None
    longest = max((e - s for s, e in spans), default=0)
    coverage = len(seen) / len(grams)
    if longest >= min_chars or (spans and coverage >= min_fraction):
        return Leak(tuple(spans), longest, coverage)
    return None


def _withhold(text: str, spans: Sequence[tuple[int, int]]) -> str:
    parts, at = [], 0
    for s, e in spans:
        parts += [text[at:s], WITHHELD]
        at = e
    return "".join(parts) + text[at:]


class OutputGuard:
    """Secrets in the model's output are redacted (or the configured action); a leak of the system
    instructions is quarantined (or the configured action: ``redact`` replaces the leaked passages)."""

    name = NAME
    channels = frozenset({Channel.model_output})

    def __init__(self, action: Action | None = None, min_leak_chars: int = MIN_LEAK_CHARS,
                 min_leak_fraction: float = MIN_LEAK_FRACTION) -> None:
        self.secret_action = action or Action.redact
        self.action = action or Action.quarantine
        self.min_leak_chars, self.min_leak_fraction = min_leak_chars, min_leak_fraction

    def check(self, content: Content) -> Verdict:
        ctx = content.context
        # numbered, not named: the context has the values only, and a name would tell the model nothing
        secrets = {str(i): s for i, s in enumerate(ctx.secrets, 1)}
        scrubbed = scrub(content.value, secrets) if secrets else content.value
        secret = scrubbed != content.value
        leak = find_leak(content.text, ctx.instructions, self.min_leak_chars, self.min_leak_fraction)
        if not secret and leak is None:
            return allow(NAME)
        actions, reasons, findings = [], [], []
        if secret:
            actions.append(self.secret_action)
            reasons.append("a secret value")
            findings.append("secret")
        if leak is not None:
            actions.append(self.action)
            reasons.append(f"the system instructions reproduced ({leak.longest} characters in one passage, "
                           f"{leak.coverage:.0%} of them)")
            findings.append("system_instructions")
        action = max(actions, key=lambda a: a.severity)
        redacted = None
        if action == Action.redact:
            redacted = scrubbed
            if leak is not None:
                instructions, chars, fraction = ctx.instructions, self.min_leak_chars, self.min_leak_fraction

                def withhold(s: str) -> str:
                    found = find_leak(s, instructions, chars, fraction)
                    return _withhold(s, found.spans) if found else s

                redacted = map_strings(scrubbed, withhold)
        return Verdict(action, NAME, reason=" and ".join(reasons), findings=tuple(findings), redacted=redacted,
                       score=leak.coverage if leak is not None else None)


def from_spec(spec: GuardSpec) -> OutputGuard:
    where = "guard output"
    if spec.channels is not None and set(spec.channels) != {Channel.model_output}:
        raise ConfigurationError(f"{where}: it judges the model's output only (channels: [model_output])")
    if spec.action is not None and spec.action not in ACTIONS_BY_CHANNEL[Channel.model_output]:
        raise ConfigurationError(f"{where}: action {spec.action.value} is not possible on model_output")
    if spec.threshold is not None:
        raise ConfigurationError(f"{where}: it takes no threshold (options min_leak_chars, min_leak_fraction)")
    unknown = set(spec.options) - {"min_leak_chars", "min_leak_fraction"}
    if unknown:
        raise ConfigurationError(f"{where}: unknown option(s) {sorted(unknown)}; it has: min_leak_chars, "
                                 "min_leak_fraction")
    chars = spec.options.get("min_leak_chars", MIN_LEAK_CHARS)
    if isinstance(chars, bool) or not isinstance(chars, int) or chars < MIN_INSTRUCTIONS // 2:
        raise ConfigurationError(f"{where}: option min_leak_chars must be an integer of at least "
                                 f"{MIN_INSTRUCTIONS // 2}")
    fraction = spec.options.get("min_leak_fraction", MIN_LEAK_FRACTION)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise ConfigurationError(f"{where}: option min_leak_fraction must be a number in (0, 1]")
    return OutputGuard(spec.action, chars, float(fraction))
