"""An agent's guardrail chain, built from its declaration: which guard looks at which channel, in order,
and what the chain as a whole decides about one piece of content.

Built once per agent at start (``build_chain``), so a bad declaration fails the deployment, not a run.
The guards load their models lazily, at their first check: an agent whose chain never sees a channel
never pays for it.
"""

from __future__ import annotations

import bisect
import importlib
from collections.abc import Sequence
from typing import Any

from agex.core.errors import ConfigurationError
from agex.core.guard import (
    ACTIONS_BY_CHANNEL,
    QUARANTINE_NOTICE,
    Action,
    ChainResult,
    Channel,
    Content,
    Guard,
    GuardContext,
    GuardSpec,
    Verdict,
    map_strings,
    strings_of,
    text_of,
)

BUILT_IN = {
    "prompt_injection": "agex.guards.injection",
    "provenance": "agex.guards.provenance",
    "pii": "agex.guards.pii",
    "output": "agex.guards.output",
    "llamafirewall": "agex.guards.llamafirewall",
}
"""Built-in guards by the name a ``GuardSpec`` uses; each module has ``from_spec(spec) -> Guard``."""

_MIN_PII = 6
"""Strings shorter than this hold no personal datum the redactor finds (the shortest, an IP address like
1.2.3.4, has 7 characters)."""
_JOIN = "\n|\n"
"""Between the strings of a content scanned at once: no recognizer's pattern runs through a bar (phone
numbers, IBANs and cards may run through white space)."""

_WHAT = {Channel.user_input: "message", Channel.tool_output: "tool output", Channel.model_output: "answer",
         Channel.tool_args: "call"}


def build_guard(spec: GuardSpec) -> Guard:
    name = spec.use.split(":", 1)[0]
    module = BUILT_IN.get(name)
    if module is None:
        raise ConfigurationError(f"guard {spec.use!r}: no such built-in guard (built-in: {', '.join(BUILT_IN)}); "
                                 "put your own Guard object in the chain instead")
    guard: Guard = importlib.import_module(module).from_spec(spec)
    return guard


class GuardChain:
    """The guards of one agent, in declaration order. ``records``: the PII redactor applied to whatever
    is shown of a run outside the model's context (events, logs, spans, approvals), when the chain has
    the ``pii`` guard; ``tokenize``: the model sees personal data as reversible tokens."""

    def __init__(self, guards: Sequence[Guard], records: Any = None, tokenize: bool = False) -> None:
        self.guards = tuple(guards)
        self.records = records
        self.tokenizes = tokenize and records is not None
        names = [g.name for g in self.guards]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigurationError(f"guard(s) {', '.join(twice)} appear twice in the chain; name your own guards "
                                     "uniquely")
        self._by_channel = {c: tuple(g for g in self.guards if c in g.channels) for c in Channel}

    def watches(self, channel: Channel) -> bool:
        return bool(self._by_channel[channel])

    def names(self) -> list[str]:
        return [g.name for g in self.guards]

    def check(self, channel: Channel, value: Any, context: GuardContext, *, tool: str | None = None,
              call_id: str | None = None) -> ChainResult:
        """Run the guards of ``channel`` in order. A redaction is passed on to the next guard; a quarantine
        or a block ends the chain (nothing after it can change the outcome). The chain's action is its
        most severe verdict's."""
        current = value
        verdicts: list[Verdict] = []
        scores: dict[str, float] = {}
        for guard in self._by_channel[channel]:
            verdict = guard.check(Content(channel=channel, value=current, text=text_of(current), context=context,
                                          tool=tool, call_id=call_id))
            if verdict.score is not None:
                scores[guard.name] = verdict.score
            if verdict.action == Action.allow:
                continue
            if verdict.action not in ACTIONS_BY_CHANNEL[channel]:
                raise ConfigurationError(f"guard {guard.name} answered {verdict.action.value} on {channel.value}, "
                                         f"which allows only {', '.join(sorted(ACTIONS_BY_CHANNEL[channel]))}")
            verdicts.append(verdict)
            if verdict.action == Action.redact and verdict.redacted is not None and channel != Channel.tool_args:
                current = verdict.redacted
            if verdict.action in (Action.quarantine, Action.block):
                break
        action = max((v.action for v in verdicts), key=lambda a: a.severity, default=Action.allow)
        if action == Action.quarantine:
            deciding = next(v for v in verdicts if v.action == Action.quarantine)
            notice = QUARANTINE_NOTICE.format(what=_WHAT[channel], guard=deciding.guard,
                                              why=deciding.reason or "it unsafe")
            current = notice if isinstance(value, str) else {"quarantined": notice}
        return ChainResult(action=action, value=current, verdicts=tuple(verdicts), scores=scores)

    def redact_for_records(self, value: Any) -> Any:
        if self.records is None:
            return value
        # one scan of all the strings joined (a tool output has hundreds of short ones, and each scan has
        # a fixed cost per recognizer), then a redaction of only those a finding falls in
        strings = [t for t in strings_of(value) if len(t) >= _MIN_PII]
        if not strings:
            return value
        starts, at = [], 0
        for t in strings:
            starts.append(at)
            at += len(t) + len(_JOIN)
        hit = {bisect.bisect_right(starts, f.start) - 1 for f in self.records.find(_JOIN.join(strings))}
        if not hit:
            return value
        seen = iter(range(len(strings)))

        def one(t: str) -> str:
            if len(t) < _MIN_PII:
                return t
            return str(self.records.redact(t)[0]) if next(seen) in hit else t

        return map_strings(value, one)


    def tokenize(self, value: Any, key: str) -> tuple[Any, dict[str, str]]:
        """``value`` with each personal datum replaced by a token stable for ``key`` (the run), and the
        tokens' values: what the model is sent when the chain tokenizes."""
        mapping: dict[str, str] = {}

        def one(text: str) -> str:
            tokenized, found = self.records.tokenize(text, key)
            mapping.update(found)
            return str(tokenized)

        return map_strings(value, one), mapping

    def detokenize(self, value: Any, mapping: dict[str, str]) -> Any:
        from agex.guards.pii import detokenize

        return detokenize(value, mapping) if mapping else value


def build_chain(guards: Sequence[GuardSpec | Guard]) -> GuardChain:
    """The chain of an agent that declares ``guards`` (validated: a bad declaration raises
    ``ConfigurationError`` here, at start)."""
    built: list[Guard] = []
    records, tokenize = None, False
    for item in guards:
        if not isinstance(item, GuardSpec):
            _check_custom(item)
            built.append(item)
            continue
        guard = build_guard(item)
        if item.use == "pii":
            # personal data is redacted from the records whenever the pii guard is in the chain; as a verdict
            # (changing what the model or the user gets) only when the declaration gives it an action
            records, tokenize = getattr(guard, "redactor", None), bool(getattr(guard, "tokenize", False))
            if item.action is None:
                continue
        built.append(guard)
    return GuardChain(built, records=records, tokenize=tokenize)


def _check_custom(guard: object) -> None:
    if not isinstance(guard, Guard):
        raise ConfigurationError(f"{guard!r} in an agent's guards is neither a GuardSpec nor a Guard (it needs "
                                 "name, channels and check(content) -> Verdict)")
    bad = [c for c in guard.channels if not isinstance(c, Channel)]
    if bad or not guard.channels:
        raise ConfigurationError(f"guard {guard.name}: channels must be a non-empty set of Channel values")


def tightened(guards: Sequence[GuardSpec | Guard], tighten: Sequence[GuardSpec]) -> tuple[GuardSpec | Guard, ...]:
    """``guards`` tightened by the fleet file's ``tighten``: each entry there either adds a guard or makes
    a declared one stricter (a more severe action, a lower threshold, more channels, options on); anything
    that would loosen the code's chain raises ``ConfigurationError``."""
    out = list(guards)
    for extra in tighten:
        i = next((k for k, g in enumerate(out) if isinstance(g, GuardSpec) and g.use == extra.use), None)
        if i is None:
            out.append(extra)
            continue
        base = out[i]
        assert isinstance(base, GuardSpec)
        out[i] = _stricter(base, extra)
    return tuple(out)


def _stricter(base: GuardSpec, extra: GuardSpec) -> GuardSpec:
    where = f"fleet file guard {extra.use!r}"
    defaults = build_guard(base)
    base_action = base.action or _default_action(defaults)
    if extra.action is not None and extra.action.severity < base_action.severity:
        raise ConfigurationError(f"{where}: action {extra.action.value} is looser than the code's "
                                 f"{base_action.value}; the fleet file may only tighten a chain")
    base_threshold = base.threshold if base.threshold is not None else getattr(defaults, "threshold", None)
    if extra.threshold is not None and base_threshold is not None and extra.threshold > base_threshold:
        raise ConfigurationError(f"{where}: threshold {extra.threshold} is looser than the code's {base_threshold} "
                                 "(a higher threshold lets more through)")
    base_channels = base.channels or tuple(sorted(defaults.channels))
    if extra.channels is not None and not set(base_channels) <= set(extra.channels):
        raise ConfigurationError(f"{where}: channels {[c.value for c in extra.channels]} drop some of the code's "
                                 f"{[c.value for c in base_channels]}")
    for key, value in extra.options.items():
        if key.endswith("threshold") and isinstance(value, int | float):
            was = base.options.get(key, getattr(defaults, key, None))
            if isinstance(was, int | float) and value > was:
                raise ConfigurationError(f"{where}: {key} {value} is looser than the code's {was}")
    dropped = [k for k, v in base.options.items() if extra.options.get(k, v) != v and isinstance(v, bool) and v]
    if dropped:
        raise ConfigurationError(f"{where}: options {dropped} would turn off what the code turns on")
    return GuardSpec(use=base.use, channels=extra.channels or base.channels, action=extra.action or base.action,
                     threshold=extra.threshold if extra.threshold is not None else base.threshold,
                     options={**base.options, **extra.options})


def _default_action(guard: Guard) -> Action:
    action = getattr(guard, "action", None)
    return action if isinstance(action, Action) else Action.allow
