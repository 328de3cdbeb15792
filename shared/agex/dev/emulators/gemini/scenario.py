"""Scripted scenarios: file format, loading, matching and templating.

A scenario answers model turn k of a conversation, where k is the number of role
"model" contents already in the request. Because the answer depends only on the
request, a retried or replayed request gets the same answer; durable agent runtimes
rely on that property when they resume a conversation after a crash.

(The module is named ``scenario`` rather than ``scenarios`` so it cannot be confused
with the ``scenarios/`` directory of example files next to it.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from .wire import GenerateRequest, invalid

SCENARIO_SUFFIXES = (".yaml", ".yml", ".json")
EXHAUSTED_TEXT = "scenario exhausted"

# `{input.N}`: regex group N of match.input_regex; `{context.N}`: group N of match.context_regex; `{turn}`: the
# model turn index k. An argument that is exactly `{input.N:number}` (or `{context.N:number}`) is sent as a JSON
# number, as a model sends one (`amount_usd: 12.5`, not "12.5").
_PLACEHOLDER = re.compile(r"\{(?:(input|context)\.(\d+)(?::number)?|turn)\}")
_NUMBER = re.compile(r"^\{(?:input|context)\.(\d+):number\}$")


class ScenarioError(Exception):
    """A scenario file is unreadable or invalid; the message names the file."""


class _Strict(BaseModel):
    # Typos in scenario files (`function_call` for `function_calls`, ...) must fail
    # loudly at startup instead of silently producing a different script.
    model_config = ConfigDict(extra="forbid", frozen=True)


class FunctionCallSpec(_Strict):
    name: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)


class TurnFault(_Strict):
    """Fail (or delay) the first `times` requests for this turn of a conversation."""

    status: int | None = Field(default=None, ge=400, le=599)
    delay_ms: int | None = Field(default=None, ge=0)
    times: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _needs_effect(self) -> TurnFault:
        if self.status is None and self.delay_ms is None:
            raise ValueError("fault needs `status` and/or `delay_ms`")
        return self


class Turn(_Strict):
    text: str | None = None
    function_calls: list[FunctionCallSpec] | None = None
    fault: TurnFault | None = None

    @model_validator(mode="after")
    def _needs_output(self) -> Turn:
        if self.text is None and not self.function_calls:
            raise ValueError("a turn needs `text` and/or a non-empty `function_calls`")
        return self


class LoopSpec(_Strict):
    """Generator for long runs: `count` function-call turns, then `final_text`."""

    count: int | str
    function_call: FunctionCallSpec
    final_text: str
    # Adds a filler string arg `pad` of this many characters to each call, so
    # benchmarks can control message sizes.
    payload_bytes: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _count_shape(self) -> LoopSpec:
        if isinstance(self.count, int):
            if self.count < 0:
                raise ValueError("loop.count must be >= 0")
        elif not _PLACEHOLDER.search(self.count) and not self.count.strip().isdigit():
            raise ValueError("loop.count must be an integer or a template such as '{input.1}'")
        return self


class MatchSpec(_Strict):
    """All given conditions must hold; an empty match accepts every request."""

    system_contains: str | None = None
    # re.search on the first user text part: the run's input.
    input_regex: str | None = None
    # re.search on every user text part joined with newlines: the input and what a runtime put beside it (the
    # memories it recalled, a thread's earlier turns), so an answer can use what the run was reminded of.
    context_regex: str | None = None
    # Exact model name (without "models/"), for scenarios that differ per model.
    model: str | None = None

    @model_validator(mode="after")
    def _regex_compiles(self) -> MatchSpec:
        for name in ("input_regex", "context_regex"):
            pattern = getattr(self, name)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"match.{name} does not compile: {exc}") from None
        return self


class Scenario(_Strict):
    name: str = Field(min_length=1)
    description: str | None = None
    match: MatchSpec = Field(default_factory=MatchSpec)
    turns: list[Turn] | None = None
    loop: LoopSpec | None = None

    _regex: re.Pattern[str] | None = PrivateAttr(default=None)
    _context: re.Pattern[str] | None = PrivateAttr(default=None)
    _source: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        if (self.turns is None) == (self.loop is None):
            raise ValueError("a scenario needs exactly one of `turns` or `loop`")
        if self.turns is not None and not self.turns:
            raise ValueError("`turns` must not be empty")
        self._regex = re.compile(self.match.input_regex) if self.match.input_regex is not None else None
        self._context = re.compile(self.match.context_regex) if self.match.context_regex is not None else None
        groups = {"input": self._regex.groups if self._regex else 0,
                  "context": self._context.groups if self._context else 0}
        for template in _template_strings(self):
            for m in _PLACEHOLDER.finditer(template):
                source = m.group(1)
                if source == "context" and self._context is None:
                    # even `{context.0}`: without the regex there is nothing the run was reminded of to use
                    raise ValueError(f"{m.group(0)!r} is used but the scenario has no match.context_regex")
                if source is not None and int(m.group(2)) > groups[source]:
                    raise ValueError(f"{m.group(0)!r} is used but match.{source}_regex has {groups[source]} group(s)")
        return self

    @property
    def source(self) -> str:
        return self._source

    def matches(self, request: GenerateRequest) -> Found | None:
        """None if the scenario does not apply; otherwise what its regexes found, for the templates."""
        m = self.match
        if m.model is not None and m.model != request.model:
            return None
        if m.system_contains is not None and (
            request.system_text is None or m.system_contains not in request.system_text
        ):
            return None
        found_input = self._regex.search(request.first_user_text) if self._regex is not None else None
        if self._regex is not None and found_input is None:
            return None
        found_context = self._context.search(request.context_text) if self._context is not None else None
        if self._context is not None and found_context is None:
            return None
        return Found(found_input, found_context)

    def reply(self, request: GenerateRequest, found: Found) -> Reply:
        k = request.model_turns
        ctx = _Context(found, k)
        if self.loop is not None:
            return self._loop_reply(ctx)
        assert self.turns is not None
        if k < len(self.turns):
            turn = self.turns[k]
            calls = [(c.name, ctx.render(c.args)) for c in turn.function_calls or []]
            text = ctx.render_text(turn.text) if turn.text is not None else None
            return Reply(text=text, function_calls=calls, fault=turn.fault)
        # Past the script: repeat the last text-only turn so a chatty agent still ends.
        for turn in reversed(self.turns):
            if turn.text is not None and not turn.function_calls:
                return Reply(text=ctx.render_text(turn.text))
        return Reply(text=EXHAUSTED_TEXT)

    def _loop_reply(self, ctx: _Context) -> Reply:
        assert self.loop is not None
        loop = self.loop
        raw = loop.count if isinstance(loop.count, int) else ctx.render_text(loop.count)
        try:
            count = int(raw)
        except ValueError:
            raise invalid(
                f"Scenario {self.name!r}: loop.count resolved to {raw!r}, which is not an integer."
            ) from None
        if ctx.turn >= count:
            return Reply(text=ctx.render_text(loop.final_text))
        args = ctx.render(loop.function_call.args)
        if loop.payload_bytes:
            args["pad"] = "x" * loop.payload_bytes
        return Reply(text=None, function_calls=[(loop.function_call.name, args)])


@dataclass(frozen=True)
class Found:
    """What a matching scenario's regexes found: ``input`` for `{input.N}`, ``context`` for `{context.N}`."""

    input: re.Match[str] | None = None
    context: re.Match[str] | None = None


@dataclass(frozen=True)
class Reply:
    text: str | None
    function_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fault: TurnFault | None = None


@dataclass(frozen=True)
class _Context:
    found: Found
    turn: int

    def _sub(self, m: re.Match[str]) -> str:
        if m.group(1) is None:
            return str(self.turn)
        match = self.found.input if m.group(1) == "input" else self.found.context
        group = match.group(int(m.group(2))) if match is not None else None
        return group or ""

    def render_text(self, template: str) -> str:
        return _PLACEHOLDER.sub(self._sub, template)

    def render(self, value: Any) -> Any:
        """Renders templates inside args; a value that is exactly `{turn}` becomes an int."""
        if isinstance(value, str):
            if value == "{turn}":
                return self.turn
            number = _NUMBER.match(value)
            if number is not None:
                text = self.render_text(value)
                try:
                    return int(text) if re.fullmatch(r"-?\d+", text) else float(text)
                except ValueError:
                    return text  # not a number after all: the tool's argument check tells the agent
            return self.render_text(value)
        if isinstance(value, dict):
            return {k: self.render(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(v) for v in value]
        return value


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _template_strings(s: Scenario) -> Iterable[str]:
    for turn in s.turns or []:
        if turn.text is not None:
            yield turn.text
        for call in turn.function_calls or []:
            yield from _strings(call.args)
    if s.loop is not None:
        yield s.loop.final_text
        yield from _strings(s.loop.function_call.args)
        if isinstance(s.loop.count, str):
            yield s.loop.count


@dataclass(frozen=True)
class ScenarioSet:
    directory: Path
    scenarios: tuple[Scenario, ...]

    def find(self, request: GenerateRequest) -> tuple[Scenario, Found] | None:
        for scenario in self.scenarios:
            found = scenario.matches(request)
            if found is not None:
                return scenario, found
        return None


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def load_scenario_file(path: Path) -> Scenario:
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: a scenario file must hold one mapping (got {type(raw).__name__})")
    # The name defaults to the file name so small scenario files can omit it.
    raw.setdefault("name", path.stem)
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(f"{path}: invalid scenario:\n{_format_validation_error(exc)}") from None
    scenario._source = str(path)
    return scenario


def load_scenarios(directory: Path) -> ScenarioSet:
    """Loads every *.yaml/*.yml/*.json file in `directory`, sorted by file name."""
    if not directory.is_dir():
        raise ScenarioError(f"{directory}: scenarios directory does not exist")
    files = sorted(
        (p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in SCENARIO_SUFFIXES),
        key=lambda p: p.name,
    )
    scenarios: list[Scenario] = []
    seen: dict[str, Path] = {}
    for path in files:
        scenario = load_scenario_file(path)
        if scenario.name in seen:
            raise ScenarioError(
                f"{path}: scenario name {scenario.name!r} is already used by {seen[scenario.name]}"
            )
        seen[scenario.name] = path
        scenarios.append(scenario)
    return ScenarioSet(directory=directory, scenarios=tuple(scenarios))
