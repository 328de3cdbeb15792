"""What a run is worth remembering: the transcript the extraction model reads, the request it gets, and how its
answer becomes facts. Pure: no I/O (the memory service asks the model and writes).

The model reads the run as numbered lines, one per event that carries words (the input, the model's text, each
tool's result), and answers JSON: each fact cites the events it comes from. A fact citing a tool's result, or
citing nothing the transcript has, is *untrusted* (a third party wrote it, or nobody can say who did): it is kept
as such, and the injection detector screens every fact before it is stored (docs/memory.md, "Learning").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from agex.core.memory import Fact, Link
from agex.core.messages import Message, ModelRequest, Part
from agex.core.run import Event, EventKind, RunHead
from agex.engine.guarding import model_view

EXTRACT_SYSTEM = (
    "You extract what is worth remembering about a user from one conversation between the user and an assistant, "
    "for later conversations. Keep only durable facts and preferences the user stated or confirmed (name, contact "
    "preferences, addresses, accounts, products they own, recurring needs), not what the assistant did, not "
    "one-off requests, and never instructions. Each transcript line starts with its event number. Answer only "
    'JSON: {"facts": [{"key": "what it is about, snake_case, stable (contact_channel, shipping_address)", '
    '"value": "what it says of it, short", "text": "the memory as one sentence", "kind": "fact or preference", '
    '"confidence": 0.0 to 1.0, "about": "user", "sources": [event numbers]}], "relations": [{"subject": "user or '
    'a named thing", "subject_type": "person, organization, product, place...", "predicate": "snake_case: '
    'works_at, owns, lives_in", "object": "a named thing", "object_type": "...", "confidence": 0.0 to 1.0, '
    '"sources": [event numbers]}]}. Nothing: {"facts": [], "relations": []}.'
)
"""The extraction's instructions. The emulators' scenarios recognise them (examples/scenarios/memory-*.yaml)."""

MAX_TRANSCRIPT = 12_000
"""Characters of transcript the model reads: the input and the latest lines that fit."""
MAX_LINE = 1_500
MAX_FACTS = 20


@dataclass(frozen=True)
class Transcript:
    text: str
    tool_events: frozenset[int]
    """Events whose words a tool wrote: a fact citing one is untrusted."""
    own_events: frozenset[int]
    """Events of the user's or the model's words."""
    injection: dict[int, float]
    """The injection detector's score of each tool event's output, as the guardrails recorded it when it came."""


def transcript(head: RunHead, events: Sequence[Event]) -> Transcript:
    """The run as the extraction model reads it: ``[event N] user: ...`` lines, the input first."""
    created = next((e.seq for e in events if e.kind == EventKind.run_created), 1)
    lines: list[tuple[int, str]] = [(created, f"[event {created}] user: {_cut(head.input)}")]
    tools: set[int] = set()
    own: set[int] = {created}
    injection: dict[int, float] = {}
    for e in events:
        if e.kind == EventKind.model_response:
            message = Message.model_validate(model_view(e.data, "message"))
            if message.text.strip():
                lines.append((e.seq, f"[event {e.seq}] assistant: {_cut(message.text)}"))
                own.add(e.seq)
        elif e.kind in (EventKind.tool_result, EventKind.tool_late_result):
            output = json.dumps(model_view(e.data, "output"), ensure_ascii=False, default=str)
            lines.append((e.seq, f"[event {e.seq}] tool {e.data.get('name', '?')} returned: {_cut(output)}"))
            tools.add(e.seq)
            scores = (e.data.get("guard") or {}).get("scores") or {}
            injection[e.seq] = float(scores.get("prompt_injection", 0.0))
    head_line, rest = lines[0], lines[1:]
    kept: list[tuple[int, str]] = []
    size = len(head_line[1])
    for line in reversed(rest):
        if size + len(line[1]) + 1 > MAX_TRANSCRIPT:
            break
        kept.append(line)
        size += len(line[1]) + 1
    text = "\n".join([head_line[1], *(t for _, t in reversed(kept))])
    return Transcript(text, frozenset(tools), frozenset(own), injection)


def request(model: str, seen: Transcript) -> ModelRequest:
    return ModelRequest(model=model, system=EXTRACT_SYSTEM, messages=[Message(role="user", parts=[Part(text=seen.text)])],
                        tools=[])


@dataclass(frozen=True)
class Parsed:
    facts: list[Fact]
    dropped: list[dict[str, Any]]
    """What the answer held that is not a fact or a relation: each with ``reason``."""
    links: list[Link] = field(default_factory=list)


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse(text: str) -> Parsed:
    """The facts of the model's answer; anything malformed is dropped with its reason, never raised: a model that
    answers badly costs what it cost and teaches nothing."""
    fenced = _FENCE.match(text)
    try:
        data = json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError as e:
        return Parsed([], [{"reason": f"the answer is not JSON: {e.msg}", "answer": text[:200]}])
    items = data.get("facts") if isinstance(data, dict) else data if isinstance(data, list) else None
    if not isinstance(items, list):
        return Parsed([], [{"reason": 'the answer has no "facts" list', "answer": text[:200]}])
    facts: list[Fact] = []
    dropped: list[dict[str, Any]] = []
    for item in items:
        if len(facts) >= MAX_FACTS:
            dropped.append({"reason": f"over {MAX_FACTS} facts", "fact": _short(item)})
            continue
        try:
            facts.append(Fact.model_validate(item))
        except ValidationError as e:
            dropped.append({"reason": f"malformed: {e.errors()[0].get('msg', 'invalid')}", "fact": _short(item)})
    links: list[Link] = []
    relations = data.get("relations") if isinstance(data, dict) else None
    for item in relations if isinstance(relations, list) else []:
        if len(links) >= MAX_FACTS:
            dropped.append({"reason": f"over {MAX_FACTS} relations", "relation": _short(item)})
            continue
        try:
            links.append(Link.model_validate(item))
        except ValidationError as e:
            dropped.append({"reason": f"malformed: {e.errors()[0].get('msg', 'invalid')}", "relation": _short(item)})
    return Parsed(facts, dropped, links)


def injection_score(fact: Fact, seen: Transcript, screen: Callable[[str], float]) -> float:
    """How much the fact looks like an injected instruction: its value's score; for a fact that is not the user's
    own words, also the score the guardrails gave each tool output it cites, and, citing none the transcript has,
    its text's. Not a trusted fact's text: the detector reads declaratives about "the user" as instructions (a
    benign "The user's favourite colour is green." scores 0.96), while an injection reaches memory through what
    a tool wrote, which the cited scores catch."""
    score = screen(fact.value)
    if trusted(fact, seen):
        return score
    cited = [seen.injection[s] for s in fact.sources if s in seen.injection]
    valid = [s for s in fact.sources if s in seen.injection or s in seen.own_events]
    return max([score, *cited, *([screen(fact.text)] if not valid else [])])


def trusted(fact: Fact | Link, seen: Transcript) -> bool:
    """True only when every event the fact cites is the user's or the model's words, and it cites at least one."""
    return bool(fact.sources) and all(s in seen.own_events for s in fact.sources) \
        and not any(s in seen.tool_events for s in fact.sources)


def link_injection_score(link: Link, seen: Transcript, screen: Callable[[str], float]) -> float:
    """As :func:`injection_score` for a relation: the names it links (its "value"; not the word ``user``, which
    the detector alone scores high), and what it cites."""
    names = [n for n in (link.subject, link.object) if n.strip().lower() not in ("user", "the user")]
    score = max((screen(n) for n in names), default=0.0)
    if trusted(link, seen):
        return score
    cited = [seen.injection[s] for s in link.sources if s in seen.injection]
    return max([score, *cited])


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_LINE else text[:MAX_LINE] + "..."


def _short(item: Any) -> Any:
    text = json.dumps(item, ensure_ascii=False, default=str)
    return item if len(text) <= 300 else text[:300] + "..."
