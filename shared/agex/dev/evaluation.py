"""Evaluations: a golden set of cases run through the real runtime, as a release gate (``agex eval``).

An eval file (YAML) holds cases; each is an input the agent is started with through the public API, the
decisions a reviewer makes on the approvals the run asks for, and what must hold of the run: its status, the
tool calls it made (the trajectory: exactly, in order, or in any order, with argument matchers), its answer
(contains, regex, or a rubric a model judges) and its budget (steps, cost)::

    name: support-golden
    agent: support
    thresholds: {pass_rate: 1.0, max_steps: 6, max_cost_usd: 0.02}
    cases:
      - id: refund-edited
        input: "Hi, order A-1042 arrived without the spare laces ..."
        approvals: [{decision: edit, tool: issue_refund, args: {amount_usd: 12.0}}]
        expect:
          trajectory:
            order: in_order
            calls: [lookup_order, {tool: issue_refund, args: {amount_usd: {lte: 20}}, approval: edited}]
          answer: [{contains: "$12.00"}, {rubric: "Tells the customer the amount refunded.", min_score: 0.7}]

The result is stored per agent version (``POST /v1/agents/{agent}/evals``) and compared with the last
accepted result of another version: a case that passed there and fails now is a regression. The gate fails
on a pass rate under the threshold, a budget missed, or a regression (docs/observability.md, "Evaluations").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Protocol, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agex.core.messages import Message, ModelRequest, Part
from agex.ports.model import Model

EVAL_SUFFIXES = (".yaml", ".yml", ".json")
MAX_BODY_BYTES = 64 * 1024
"""Under the API's request body limit (80 KiB with the default 32 KiB input limit), with room to spare:
per-case details are dropped to fit (``record``)."""
TERMINAL = ("succeeded", "failed", "cancelled", "expired")
OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "regex", "contains", "in", "any", "absent")
"""A mapping whose keys are all among these is a matcher, not an object to match."""
_NUMERIC = ("gt", "gte", "lt", "lte")
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
JUDGE_INSTRUCTIONS = (
    "You are the judge of an evaluation of a customer-facing software agent. You are given a rubric, the "
    "message the agent was given, the tool calls it made and its final answer. Judge only whether the answer "
    "(and the calls) meet the rubric, strictly. Reply with a JSON object and nothing else: "
    '{"score": <a number from 0 to 1, 1 when the rubric is fully met>, "reason": "<one sentence>"}.')


class EvalFileError(ValueError):
    """An eval file that cannot be used; the message names the file, the case and the field."""


# --- the file ------------------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_matcher(value: Any, where: str = "") -> None:
    """Raise ValueError naming ``where`` if a matcher (anywhere inside ``value``) is malformed."""
    at = f"{where}: " if where else ""
    if is_matcher(value):
        if "absent" in value and len(value) > 1:
            raise ValueError(f"{at}absent cannot be combined with other matchers")
        for op, arg in value.items():
            if op in _NUMERIC and (isinstance(arg, bool) or not isinstance(arg, int | float)):
                raise ValueError(f"{at}{op} needs a number, not {_short(arg)}")
            if op == "regex":
                if not isinstance(arg, str):
                    raise ValueError(f"{at}regex needs a string, not {_short(arg)}")
                try:
                    re.compile(arg)
                except re.error as e:
                    raise ValueError(f"{at}regex {arg!r} does not compile: {e}") from None
            if op == "in" and not isinstance(arg, list):
                raise ValueError(f"{at}in needs a list of values, not {_short(arg)}")
            if op in ("any", "absent") and arg is not True:
                raise ValueError(f"{at}{op} takes true (`{{{op}: true}}`)")
            if op == "contains":
                check_matcher(arg, f"{where}.{op}" if where else op)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_matcher(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_matcher(v, f"{where}[{i}]")


class CallSpec(_Strict):
    """A tool call expected (or forbidden). ``args`` are matched as a subset: arguments not named are not
    checked; each value is a literal or a matcher (``{lte: 50}``, ``{regex: "^A-"}``, ``{absent: true}``)."""

    tool: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
    args: dict[str, Any] = Field(default_factory=dict)
    outcome: Literal["ok", "error", "rejected", "expired", "not_run"] | None = None
    """What became of the call: it ran (ok), ran and failed (error), a reviewer rejected it, its approval
    expired, or it never ran (the run ended first)."""
    approval: Literal["none", "approved", "edited", "rejected", "expired", "pending"] | None = None

    @field_validator("args")
    @classmethod
    def _matchers(cls, v: dict[str, Any]) -> dict[str, Any]:
        check_matcher(v)
        return v


def _call_shorthand(value: Any) -> Any:
    """``lookup_order`` stands for ``{tool: lookup_order}``."""
    if isinstance(value, list):
        return [{"tool": v} if isinstance(v, str) else v for v in value]
    return value


class Trajectory(_Strict):
    order: Literal["exact", "in_order", "any_order"] = "in_order"
    """exact: these calls and no other, in this order; in_order: these calls in this order, others allowed
    between them; any_order: each of these calls, in any order, others allowed."""
    calls: list[CallSpec] = Field(default_factory=list)
    forbid: list[CallSpec] = Field(default_factory=list)
    """Calls that must not be made at all (``[issue_refund]``: no refund asked for)."""

    @field_validator("calls", "forbid", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return _call_shorthand(v)


class AnswerCheck(_Strict):
    """One check of the final answer: exactly one of ``contains``, ``not_contains`` (case-insensitive),
    ``regex`` (``re.search``) or ``rubric`` (judged by a model, passing at ``min_score``)."""

    contains: str | None = None
    not_contains: str | None = None
    regex: str | None = None
    rubric: str | None = None
    min_score: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one(self) -> AnswerCheck:
        given = [k for k in ("contains", "not_contains", "regex", "rubric") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("an answer check has exactly one of contains, not_contains, regex or rubric"
                             + (f" (this one has {', '.join(given)})" if given else ""))
        if self.min_score is not None and self.rubric is None:
            raise ValueError("min_score is for rubric checks")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as e:
                raise ValueError(f"regex {self.regex!r} does not compile: {e}") from None
        if any(s is not None and not s.strip() for s in (self.contains, self.not_contains, self.rubric)):
            raise ValueError("an answer check's text must not be empty")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("contains", "not_contains", "regex", "rubric") if getattr(self, k) is not None)


class Decision(_Strict):
    """What the reviewer decides on the run's next approval: approve, reject (``comment`` is the reason, told
    to the agent), or edit (approve with ``args`` changed; the others keep the values the approval shows)."""

    decision: Literal["approve", "reject", "edit"]
    tool: str | None = None
    """The tool the approval must be for; a run asking about another tool fails the case."""
    args: dict[str, Any] | None = None
    comment: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Decision:
        if self.decision == "edit" and not self.args:
            raise ValueError("an edit needs args: the arguments the reviewer changes")
        if self.decision != "edit" and self.args is not None:
            raise ValueError(f"args are for edit decisions, not {self.decision}")
        if self.decision == "reject" and not self.comment.strip():
            raise ValueError("a reject needs a comment: the reason, which is told to the agent")
        return self


class Expect(_Strict):
    status: Literal["succeeded", "failed"] = "succeeded"
    error_code: str | None = None
    """With status failed: the run's ``error.code`` (max_steps, guardrail_blocked, ...)."""
    trajectory: Trajectory | None = None
    answer: list[AnswerCheck] = Field(default_factory=list)

    @model_validator(mode="after")
    def _code(self) -> Expect:
        if self.error_code is not None and self.status != "failed":
            raise ValueError("error_code needs status: failed")
        return self


class Budget(_Strict):
    max_steps: int | None = Field(default=None, ge=1)
    max_cost_usd: float | None = Field(default=None, ge=0.0)


class Thresholds(Budget):
    """Of the whole set; ``max_steps`` and ``max_cost_usd`` are each case's unless the case sets its own."""

    pass_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    max_pass_rate_drop: float = Field(default=0.0, ge=0.0, le=1.0)
    """How far the pass rate may fall below the reference's before the gate fails."""


class Case(_Strict):
    id: str = Field(pattern=_ID)
    input: str = Field(min_length=1, max_length=32 * 1024)
    metadata: dict[str, str] = Field(default_factory=dict)
    approvals: list[Decision] = Field(default_factory=list)
    """One decision per approval the run asks for, in the order it asks."""
    expect: Expect = Field(default_factory=Expect)
    thresholds: Budget = Field(default_factory=Budget)
    timeout_s: float | None = Field(default=None, gt=0)


class Judge(_Strict):
    model: str | None = None
    """The judge's model; default the agent's."""
    min_score: float = Field(default=0.7, ge=0.0, le=1.0)


class EvalSet(_Strict):
    name: str = Field(pattern=_ID)
    agent: str | None = None
    description: str = ""
    judge: Judge = Field(default_factory=Judge)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    timeout_s: float = Field(default=300.0, gt=0)
    """How long a case's run may take, waits for decisions included."""
    cases: list[Case] = Field(min_length=1)
    digest: str = ""
    """Of the file's content, so a comparison can say the set changed."""

    def budget(self, case: Case) -> Budget:
        return Budget(max_steps=case.thresholds.max_steps or self.thresholds.max_steps,
                      max_cost_usd=case.thresholds.max_cost_usd if case.thresholds.max_cost_usd is not None
                      else self.thresholds.max_cost_usd)

    @property
    def needs_judge(self) -> bool:
        return any(c.rubric is not None for case in self.cases for c in case.expect.answer)

    @property
    def needs_approver(self) -> bool:
        return any(case.approvals for case in self.cases)


def load_evalset(path: str | Path) -> EvalSet:
    """Read and validate an eval file; every problem is an ``EvalFileError`` naming the file, case and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EvalFileError(f"cannot read the eval file {path}: {e}") from e
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise EvalFileError(f"{path}: not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from e
    except yaml.YAMLError as e:
        mark, context = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        started = f", {e.context} at line {context.line + 1}" if context is not None and getattr(e, "context", None) \
            else ""  # an unclosed quote or bracket is found at the end; say where it opened
        raise EvalFileError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}{started}") from e
    if not isinstance(raw, dict):
        raise EvalFileError(f"{path}: an eval file holds a mapping with name, cases, ...; got "
                            f"{type(raw).__name__ if raw is not None else 'nothing'}")
    raw = {"name": path.stem if re.match(_ID, path.stem) else "", **raw}
    cases = raw.get("cases")
    if not isinstance(cases, list) or not cases:
        raise EvalFileError(f"{path}: cases: a non-empty list of cases is required")
    checked: list[Case] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(cases):
        ident = item.get("id") if isinstance(item, dict) else None
        which = f"case {ident!r} (cases[{i}])" if isinstance(ident, str) else f"cases[{i}]"
        if not isinstance(item, dict):
            raise EvalFileError(f"{path}: {which}: a case is a mapping with id, input, expect, ...; got "
                                f"{type(item).__name__}")
        try:
            case = Case.model_validate(item)
        except ValidationError as e:
            raise EvalFileError(f"{path}: {which}: {problems(e, Case, 'the case')}") from None
        if case.id in seen:
            raise EvalFileError(f"{path}: {which}: id {case.id!r} is also the id of cases[{seen[case.id]}]")
        seen[case.id] = i
        checked.append(case)
    digest = "sha256:" + hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]
    try:
        return EvalSet.model_validate({**raw, "cases": checked, "digest": digest})
    except ValidationError as e:
        raise EvalFileError(f"{path}: {problems(e, EvalSet)}") from None


def problems(e: ValidationError, model: type[BaseModel], root: str = "the file") -> str:
    """A validation error as one line: ``where: what; ...``, an unknown field with the fields allowed there."""
    out = []
    for err in e.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        where = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in loc).replace(".[", "[")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            msg = "unknown field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        out.append(f"{where or root}: {msg}")
    return "; ".join(out)


def _fields_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            current = _item(current)
            continue
        found = _model_in(current)
        if found is None or part not in found.model_fields:
            return []
        current = found.model_fields[part].annotation
    found = _model_in(current)
    return list(found.model_fields) if found is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation names, ``X | None`` included."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        return next((m for a in get_args(annotation) if (m := _model_in(a)) is not None), None)
    return None


def _item(annotation: Any) -> Any:
    """``X`` of ``list[X]`` (or of ``list[X] | None``)."""
    for candidate in (annotation, *get_args(annotation)):
        if get_origin(candidate) is list:
            return get_args(candidate)[0]
    return None


# --- matchers ------------------------------------------------------------------------------------------

def is_matcher(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(k in OPERATORS for k in value)


def match(expected: Any, actual: Any, present: bool = True) -> str | None:
    """None when ``actual`` matches ``expected``, else why not. Objects match as subsets; lists element by
    element; numbers by value (``89 == 89.0``, but a bool is not a number); matchers by their operators."""
    if is_matcher(expected):
        for op, arg in expected.items():
            problem = _operator(op, arg, actual, present)
            if problem:
                return problem
        return None
    if not present:
        return f"missing (expected {_short(expected)})"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"expected an object, got {_short(actual)}"
        for key, value in expected.items():
            problem = match(value, actual.get(key), key in actual)
            if problem:
                return f"{key}: {problem}"
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"expected {_short(expected)}, got {_short(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            problem = match(e, a)
            if problem:
                return f"[{i}]: {problem}"
        return None
    return None if _equal(expected, actual) else f"expected {_short(expected)}, got {_short(actual)}"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _number(a) and _number(b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def _same(a: Any, b: Any) -> bool:
    """Deep equality, numbers by value: what ``eq`` and ``ne`` compare (no subsets, no matchers)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return _equal(a, b)


def _operator(op: str, arg: Any, actual: Any, present: bool) -> str | None:
    if op == "absent":
        return None if not present else f"present ({_short(actual)}), expected absent"
    if not present:
        return f"missing (expected {op} {_short(arg)})"
    if op == "any":
        return None
    if op == "eq":
        return None if _same(arg, actual) else f"expected exactly {_short(arg)}, got {_short(actual)}"
    if op == "ne":
        return None if not _same(arg, actual) else f"{_short(actual)}, expected anything but that"
    if op in _NUMERIC:
        if not _number(actual):
            return f"{_short(actual)} is not a number ({op} {arg})"
        ok = {"gt": actual > arg, "gte": actual >= arg, "lt": actual < arg, "lte": actual <= arg}[op]
        return None if ok else f"{_short(actual)} is not {_SYMBOL[op]} {arg}"
    if op == "regex":
        if not isinstance(actual, str):
            return f"{_short(actual)} is not a string (regex {arg!r})"
        return None if re.search(arg, actual) else f"{_short(actual)} does not match {arg!r}"
    if op == "contains":
        if isinstance(actual, str) and isinstance(arg, str):
            return None if arg.casefold() in actual.casefold() else f"{_short(actual)} does not contain {arg!r}"
        if isinstance(actual, list):
            return None if any(match(arg, a) is None for a in actual) else \
                f"{_short(actual)} has no element matching {_short(arg)}"
        return f"{_short(actual)} cannot contain {_short(arg)}"
    if op == "in":
        return None if any(_same(a, actual) for a in arg) else f"{_short(actual)} is not one of {_short(arg)}"
    raise AssertionError(op)


_SYMBOL = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


# --- trajectories --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """A tool call the model asked for, as the run's events tell it."""

    tool: str
    args: dict[str, Any]
    """As run: the reviewer's arguments when an approval edited them, else the model's."""
    outcome: str
    """ok, error, rejected, expired, not_run."""
    approval: str = "none"
    """none, approved, edited, rejected, expired, pending."""
    requested_args: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        args = ", ".join(f"{k}={_short(v, 40)}" for k, v in self.args.items())
        tags = [self.approval] if self.approval != "none" else []
        return f"{self.tool}({args}) [{', '.join([*tags, self.outcome])}]"


def calls_of(events: Iterable[Mapping[str, Any]]) -> list[Call]:
    """Every call the model asked for, in order, with what became of it (events as the API returns them)."""
    asked: list[tuple[tuple[int, str], str, dict[str, Any]]] = []
    seen: set[tuple[int, str]] = set()
    decided: dict[tuple[int, str], Mapping[str, Any]] = {}
    requested: set[tuple[int, str]] = set()
    results: dict[tuple[int, str], bool] = {}
    for e in events:
        data, step = e.get("data") or {}, int(e.get("step", 0))
        kind = e.get("kind")
        if kind == "model_response":
            for part in (data.get("message") or {}).get("parts") or []:
                fc = part.get("function_call") if isinstance(part, dict) else None
                if fc and (step, fc.get("id", "")) not in seen:
                    key = (step, str(fc.get("id", "")))
                    seen.add(key)
                    asked.append((key, str(fc.get("name", "")), dict(fc.get("args") or {})))
        elif kind == "approval_requested" and data.get("kind", "approval") == "approval":
            requested.add((step, str(data.get("call_id", ""))))
        elif kind == "approval_decided" and data.get("kind", "approval") == "approval":
            decided[(step, str(data.get("call_id", "")))] = data
        elif kind in ("tool_result", "tool_late_result"):
            results.setdefault((step, str(data.get("call_id", ""))), bool(data.get("ok")))
    calls = []
    for key, tool, args in asked:
        decision = decided.get(key)
        approval, ran_with = "none", args
        if decision is not None:
            verdict = str(decision.get("decision"))
            edited = decision.get("arguments")
            approval = "edited" if verdict == "approved" and isinstance(edited, dict) else verdict
            if isinstance(edited, dict):
                ran_with = dict(edited)
        elif key in requested:
            approval = "pending"
        if approval in ("rejected", "expired"):
            outcome = approval
        elif key in results:
            outcome = "ok" if results[key] else "error"
        else:
            outcome = "not_run"
        calls.append(Call(tool=tool, args=ran_with, outcome=outcome, approval=approval, requested_args=args))
    return calls


def call_problem(spec: CallSpec, call: Call) -> str | None:
    if spec.tool != call.tool:
        return f"tool {call.tool}, expected {spec.tool}"
    problem = match(spec.args, call.args) if spec.args else None
    if problem:
        return f"{spec.tool} {problem}"
    if spec.outcome is not None and spec.outcome != call.outcome:
        return f"{spec.tool} outcome {call.outcome}, expected {spec.outcome}"
    if spec.approval is not None and spec.approval != call.approval:
        return f"{spec.tool} approval {call.approval}, expected {spec.approval}"
    return None


def spec_text(spec: CallSpec) -> str:
    parts = [f"{k}={_short(v, 40)}" for k, v in spec.args.items()]
    parts += [f"{k}: {getattr(spec, k)}" for k in ("outcome", "approval") if getattr(spec, k) is not None]
    return f"{spec.tool}({', '.join(parts)})"


def check_trajectory(expected: Trajectory, calls: Sequence[Call]) -> list[str]:
    """Why the calls made do not meet ``expected`` (empty when they do)."""
    failures: list[str] = []
    made = "; ".join(c.text() for c in calls) or "none"
    specs = expected.calls
    if expected.order == "exact":
        if len(calls) != len(specs):
            failures.append(f"expected exactly {len(specs)} call(s) ({', '.join(s.tool for s in specs) or 'none'}), "
                            f"the run made {len(calls)}: {made}")
        else:
            for i, (spec, call) in enumerate(zip(specs, calls, strict=True)):
                problem = call_problem(spec, call)
                if problem:
                    failures.append(f"call {i + 1}: {problem}")
    elif expected.order == "in_order":
        at = 0
        for n, spec in enumerate(specs):
            while at < len(calls) and call_problem(spec, calls[at]) is not None:
                at += 1
            if at == len(calls):
                after = f" after {spec_text(specs[n - 1])}" if n else ""
                failures.append(f"no call {spec_text(spec)}{after}; calls made: {made}")
                break
            at += 1
    else:
        unmatched = _unmatched(specs, calls)
        failures += [f"no call {spec_text(specs[i])}; calls made: {made}" for i in unmatched]
    for spec in expected.forbid:
        hits = [c for c in calls if call_problem(spec, c) is None]
        if hits:
            failures.append(f"forbidden call made: {hits[0].text()}")
    return failures


def _unmatched(specs: Sequence[CallSpec], calls: Sequence[Call]) -> list[int]:
    """The specs left without a call of their own in a maximum matching (each call serves one spec)."""
    fits = [[j for j, c in enumerate(calls) if call_problem(s, c) is None] for s in specs]
    owner: dict[int, int] = {}

    def assign(i: int, visited: set[int]) -> bool:
        for j in fits[i]:
            if j not in visited:
                visited.add(j)
                if j not in owner or assign(owner[j], visited):
                    owner[j] = i
                    return True
        return False

    return [i for i in range(len(specs)) if not assign(i, set())]


# --- the judge -----------------------------------------------------------------------------------------

class JudgeConfigError(ValueError):
    """The rubric judge's model cannot be built from the settings."""


@dataclass(frozen=True)
class Verdict:
    score: float
    reason: str


def parse_verdict(text: str) -> Verdict:
    """The judge's ``{"score", "reason"}``, wherever it is in the text (code fences and all)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError(f"no JSON object in the judge's reply: {_short(text)}")
    try:
        value = json.loads(text[start:end + 1])
    except json.JSONDecodeError as e:
        raise ValueError(f"the judge's reply is not valid JSON ({e.msg}): {_short(text)}") from None
    score: Any = value.get("score") if isinstance(value, dict) else None
    if not _number(score) or not 0.0 <= score <= 1.0:
        raise ValueError(f"the judge's score must be a number from 0 to 1: {_short(value)}")
    return Verdict(score=float(score), reason=str(value.get("reason", ""))[:500])


class RubricJudge:
    """Asks a model, through the model port, whether an answer meets a rubric."""

    def __init__(self, model: Model, model_name: str, *, attempts: int = 3, backoff_s: float = 1.0) -> None:
        self.model, self.model_name = model, model_name
        self.attempts, self.backoff_s = attempts, backoff_s
        self.input_tokens = self.output_tokens = self.calls = 0
        self._lock = threading.Lock()

    def judge(self, rubric: str, case_input: str, calls: Sequence[Call], answer: str) -> Verdict:
        from agex.core.errors import TransientError

        made = "\n".join(f"- {c.text()}" for c in calls) or "(none)"
        prompt = (f"Rubric:\n{rubric}\n\nThe message the agent was given:\n{case_input}\n\n"
                  f"Tool calls the agent made:\n{made}\n\nThe agent's final answer:\n{answer}")
        request = ModelRequest(model=self.model_name, system=JUDGE_INSTRUCTIONS,
                               messages=[Message(role="user", parts=[Part(text=prompt)])])
        attempt = 0
        while True:
            try:
                response = self.model.request(request)
                break
            except TransientError:
                attempt += 1
                if attempt >= self.attempts:
                    raise
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        with self._lock:
            self.calls += 1
            self.input_tokens += response.usage.input_tokens
            self.output_tokens += response.usage.output_tokens
        return parse_verdict("".join(p.text or "" for p in response.message.parts))


def build_judge(model_name: str, base_url: str | None = None) -> RubricJudge:
    """The judge's model, built as the runtime builds an agent's (``AGEX_*`` settings: Vertex AI with
    ``AGEX_VERTEX=true``, else ``AGEX_GEMINI_API_KEY``); ``base_url``: a Gemini API at this URL instead (the
    local emulator, which takes any key)."""
    from agex.app.backends import Backends
    from agex.app.settings import Settings
    from agex.core.agent import Agent
    from agex.core.errors import AgexError

    settings = Settings()
    if base_url:
        settings = settings.model_copy(update={"gemini_base_url": base_url, "vertex": False,
                                               "gemini_api_key": settings.gemini_api_key or "local-emulator-key"})
    judge = Agent(name="eval-judge", instructions=JUDGE_INSTRUCTIONS, model=model_name, guards=())
    try:
        return RubricJudge(Backends.gcp(settings).models()(judge), model_name)
    except AgexError as e:
        raise JudgeConfigError(f"rubric checks need a model to judge them: {e} (locally: --judge-url, the "
                               "Gemini emulator's URL that `agex dev` prints)") from e


# --- running cases -------------------------------------------------------------------------------------

class Api(Protocol):
    """What the runner uses of the public API (``agex.cli.client.Client``). Its errors carry the HTTP
    ``status``, ``code`` and ``message``."""

    def start_run(self, agent: str, input: str, metadata: dict[str, str] | None = None,
                  idempotency_key: str | None = None) -> dict[str, Any]: ...

    def run(self, run_id: str) -> dict[str, Any]: ...

    def events(self, run_id: str, after: int = 0) -> Iterable[dict[str, Any]]: ...

    def cancel(self, run_id: str) -> dict[str, Any]: ...

    def approval(self, approval_id: str) -> dict[str, Any]: ...

    def decide(self, approval_id: str, decision: str, comment: str = "", arguments: dict[str, Any] | None = None,
               idempotency_key: str | None = None) -> dict[str, Any]: ...


def _api_error(e: Exception) -> str | None:
    """An API error as a line, or None when ``e`` is not one."""
    status, code = getattr(e, "status", None), getattr(e, "code", None)
    if not isinstance(status, int) or not isinstance(code, str):
        return None
    return f"the API answered {status} {code}: {getattr(e, 'message', e)}"


@dataclass
class CaseResult:
    id: str
    passed: bool = False
    run_id: str = ""
    status: str = ""
    error_code: str | None = None
    steps: int = 0
    cost_usd: float = 0.0
    failures: list[str] = field(default_factory=list)
    """The checks that failed (status, trajectory, answer); a threshold miss is also here."""
    threshold_misses: list[str] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    answer: str | None = None
    duration_s: float = 0.0
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "passed": self.passed, "skipped": self.skipped, "run_id": self.run_id,
                "status": self.status, "error_code": self.error_code, "steps": self.steps,
                "cost_usd": round(self.cost_usd, 8), "failures": [f[:500] for f in self.failures[:20]],
                "threshold_misses": self.threshold_misses, "scores": self.scores,
                "trajectory": [{"tool": c.tool, "outcome": c.outcome, "approval": c.approval} for c in self.calls],
                "answer": (self.answer or "")[:2000] if self.answer is not None else None,
                "duration_s": round(self.duration_s, 3)}


@dataclass
class Runner:
    """Runs an eval set's cases against an agent through the API: ``client`` starts the runs (and reads
    them), ``approver`` decides their approvals (another principal: four eyes)."""

    client: Api
    approver: Api | None
    agent: str
    evalset: EvalSet
    eval_id: str
    judge: RubricJudge | None = None
    timeout_s: float | None = None
    poll_s: float = 0.25
    skip_approval_cases: bool = False
    on_result: Callable[[CaseResult], None] | None = None

    def run(self, parallel: int = 4) -> list[CaseResult]:
        """Every case, ``parallel`` at a time; results in the file's order."""
        with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="agex-eval") as pool:
            return list(pool.map(self._report, self.evalset.cases))

    def _report(self, case: Case) -> CaseResult:
        result = self.run_case(case)
        if self.on_result is not None:
            self.on_result(result)
        return result

    def run_case(self, case: Case) -> CaseResult:
        result = CaseResult(id=case.id)
        if case.approvals and self.skip_approval_cases:
            result.skipped = "decides approvals (--skip-approval-cases)"
            return result
        started = time.monotonic()
        try:
            self._drive(case, result)
        except Exception as e:  # a case's failure must not stop the others
            result.failures.append(_api_error(e) or f"{type(e).__name__}: {e}")
        result.duration_s = time.monotonic() - started
        result.passed = not result.failures
        return result

    def _drive(self, case: Case, result: CaseResult) -> None:
        metadata = {"eval": self.evalset.name, "eval_case": case.id, "eval_id": self.eval_id, **case.metadata}
        run = self.client.start_run(self.agent, case.input, metadata=metadata,
                                    idempotency_key=f"eval-{self.eval_id}-{case.id}")
        run_id = result.run_id = run["run_id"]
        timeout = self.timeout_s or case.timeout_s or self.evalset.timeout_s
        deadline = time.monotonic() + timeout
        decided: set[str] = set()
        while run["status"] not in TERMINAL:
            problem = None
            if time.monotonic() > deadline:
                problem = f"the run was still {run['status']} after {timeout:g} s; cancelled"
            elif run["status"] == "waiting_approval":
                problem = self._decide(case, run_id, decided)
            if problem:
                result.failures.append(problem)
                self._abandon(run_id)
                break
            time.sleep(self.poll_s)
            run = self.client.run(run_id)
        run = self.client.run(run_id)
        events = list(self.client.events(run_id))
        result.status, result.steps = run["status"], int(run.get("step", 0))
        result.error_code = (run.get("error") or {}).get("code")
        result.cost_usd = float((run.get("usage") or {}).get("cost_usd", 0.0))
        result.answer = run.get("result")
        result.calls = calls_of(events)
        if result.failures:
            return
        asked = sum(1 for e in events if e["kind"] == "approval_requested"
                    and (e.get("data") or {}).get("kind", "approval") == "approval")
        if asked < len(case.approvals):
            result.failures.append(f"the case decides {len(case.approvals)} approval(s); the run asked for {asked}")
        self._check(case, result)

    def _decide(self, case: Case, run_id: str, decided: set[str]) -> str | None:
        """Decide the run's undecided approvals as the case says; why not, if it cannot."""
        events = list(self.client.events(run_id))
        done = {(e.get("data") or {}).get("approval_id") for e in events if e["kind"] == "approval_decided"}
        asked = [e["data"] for e in events if e["kind"] == "approval_requested"]
        for n, data in enumerate(a for a in asked if a.get("kind", "approval") == "approval"):
            approval_id = data["approval_id"]
            if approval_id in done or approval_id in decided:
                continue
            if n >= len(case.approvals):
                return (f"unexpected approval {n + 1} for {data.get('name')}: the case decides "
                        f"{len(case.approvals)}; run cancelled")
            decision = case.approvals[n]
            if decision.tool is not None and decision.tool != data.get("name"):
                return (f"approval {n + 1} is for {data.get('name')}, the case decides one for {decision.tool}; "
                        "run cancelled")
            if self.approver is None:
                return "the run asks for an approval and no approver token was given"
            arguments = None
            if decision.decision == "edit":
                shown = self.approver.approval(approval_id)["arguments"] or {}
                arguments = {**shown, **(decision.args or {})}
            try:
                self.approver.decide(approval_id, "reject" if decision.decision == "reject" else "approve",
                                     decision.comment, arguments, idempotency_key=f"eval-{self.eval_id}-{approval_id}")
            except Exception as e:
                if getattr(e, "status", None) != 409:  # 409: decided already (a rerun of the same eval id)
                    raise
            decided.add(approval_id)
        if any(a.get("kind", "approval") != "approval" and a["approval_id"] not in done for a in asked):
            return "the run waits for a reconciliation (a crash left a call uncertain), which no case decides"
        return None

    def _abandon(self, run_id: str) -> None:
        with contextlib.suppress(Exception):  # it ended meanwhile; the case fails either way
            self.client.cancel(run_id)

    def _check(self, case: Case, result: CaseResult) -> None:
        expect, failures = case.expect, result.failures
        if result.status != expect.status:
            why = f" ({result.error_code})" if result.error_code else ""
            failures.append(f"status {result.status}{why}, expected {expect.status}")
        elif expect.error_code is not None and result.error_code != expect.error_code:
            failures.append(f"error {result.error_code}, expected {expect.error_code}")
        if expect.trajectory is not None:
            failures += check_trajectory(expect.trajectory, result.calls)
        for i, check in enumerate(expect.answer):
            problem = self._answer(case, i, check, result)
            if problem:
                failures.append(f"answer check {i + 1} ({check.kind}): {problem}")
        budget = self.evalset.budget(case)
        if budget.max_steps is not None and result.steps > budget.max_steps:
            result.threshold_misses.append(f"{result.steps} steps, over max_steps {budget.max_steps}")
        if budget.max_cost_usd is not None and result.cost_usd > budget.max_cost_usd:
            result.threshold_misses.append(f"cost ${result.cost_usd:.6f}, over max_cost_usd ${budget.max_cost_usd}")
        failures += result.threshold_misses

    def _answer(self, case: Case, index: int, check: AnswerCheck, result: CaseResult) -> str | None:
        answer = result.answer
        if answer is None:
            return "the run has no answer"
        if check.contains is not None:
            return None if check.contains.casefold() in answer.casefold() else f"does not contain {check.contains!r}"
        if check.not_contains is not None:
            return f"contains {check.not_contains!r}" if check.not_contains.casefold() in answer.casefold() else None
        if check.regex is not None:
            return None if re.search(check.regex, answer) else f"does not match {check.regex!r}"
        assert check.rubric is not None
        if self.judge is None:
            return "no judge to score the rubric"
        needed = check.min_score if check.min_score is not None else self.evalset.judge.min_score
        try:
            verdict = self.judge.judge(check.rubric, case.input, result.calls, answer)
        except Exception as e:
            return f"the judge failed: {e}"
        result.scores.append({"check": index + 1, "score": verdict.score, "min_score": needed,
                              "reason": verdict.reason})
        return None if verdict.score >= needed else f"score {verdict.score:.2f} < {needed:.2f}: {verdict.reason}"


# --- results, comparison and the gate ------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    reference: dict[str, Any] | None
    """``{"eval_id", "version", "pass_rate", "created_at", "evalset_digest"}`` of the accepted result compared with."""
    regressions: tuple[str, ...] = ()
    """Cases that passed in the reference and fail now."""
    fixed: tuple[str, ...] = ()
    new: tuple[str, ...] = ()
    """Cases the reference did not run."""
    pass_rate_drop: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "regressions": list(self.regressions), "fixed": list(self.fixed),
                "new": list(self.new), "pass_rate_drop": self.pass_rate_drop}


def reference_of(stored: Iterable[Mapping[str, Any]], evalset: str, version: str) -> Mapping[str, Any] | None:
    """The newest accepted result of this eval set for another version (``stored`` newest first)."""
    return next((e for e in stored if e.get("accepted") and e.get("evalset") == evalset
                 and e.get("version") != version), None)


def compare(results: Sequence[CaseResult], reference: Mapping[str, Any] | None) -> Comparison:
    if reference is None:
        return Comparison(reference=None)
    before = {str(c.get("id")): bool(c.get("passed")) for c in reference.get("cases") or []
              if isinstance(c, Mapping) and not c.get("skipped")}
    ran = [r for r in results if r.skipped is None]
    summary = reference.get("summary") or {}
    ref_rate = float(summary.get("pass_rate", 0.0))
    return Comparison(
        reference={"eval_id": reference.get("eval_id"), "version": reference.get("version"), "pass_rate": ref_rate,
                   "created_at": reference.get("created_at"), "evalset_digest": summary.get("evalset_digest")},
        regressions=tuple(r.id for r in ran if before.get(r.id) is True and not r.passed),
        fixed=tuple(r.id for r in ran if before.get(r.id) is False and r.passed),
        new=tuple(r.id for r in ran if r.id not in before),
        pass_rate_drop=round(max(0.0, ref_rate - pass_rate(results)), 4))


def pass_rate(results: Sequence[CaseResult]) -> float:
    ran = [r for r in results if r.skipped is None]
    return round(sum(r.passed for r in ran) / len(ran), 4) if ran else 0.0


@dataclass(frozen=True)
class Gate:
    passed: bool
    reasons: tuple[str, ...]


def gate(evalset: EvalSet, results: Sequence[CaseResult], comparison: Comparison, *,
         allow_regressions: bool = False) -> Gate:
    """Fails on a pass rate under the threshold, any budget missed, and (unless allowed) any regression or a
    pass-rate drop beyond ``max_pass_rate_drop`` from the reference."""
    t = evalset.thresholds
    reasons = []
    ran = [r for r in results if r.skipped is None]
    if not ran:
        reasons.append("no case ran")
    rate = pass_rate(results)
    if ran and rate < t.pass_rate:
        failed = ", ".join(r.id for r in ran if not r.passed)
        reasons.append(f"pass rate {rate:.2%} is under {t.pass_rate:.2%} (failed: {failed})")
    missed = [r.id for r in ran if r.threshold_misses]
    if missed:
        reasons.append(f"budgets missed by {', '.join(missed)}")
    if not allow_regressions:
        if comparison.regressions:
            reasons.append(f"regressions since version {comparison.reference and comparison.reference['version']}: "
                           f"{', '.join(comparison.regressions)}")
        if comparison.pass_rate_drop > t.max_pass_rate_drop + 1e-9:
            reasons.append(f"pass rate dropped by {comparison.pass_rate_drop:.2%} from version "
                           f"{comparison.reference and comparison.reference['version']} (allowed "
                           f"{t.max_pass_rate_drop:.2%})")
    return Gate(passed=not reasons, reasons=tuple(reasons))


def summary(evalset: EvalSet, results: Sequence[CaseResult], comparison: Comparison, verdict: Gate,
            judge: RubricJudge | None = None, duration_s: float = 0.0) -> dict[str, Any]:
    ran = [r for r in results if r.skipped is None]
    return {"pass_rate": pass_rate(results), "cases": len(results), "ran": len(ran),
            "passed": sum(r.passed for r in ran), "failed": sum(not r.passed for r in ran),
            "skipped": len(results) - len(ran), "cost_usd": round(sum(r.cost_usd for r in ran), 8),
            "max_case_cost_usd": round(max((r.cost_usd for r in ran), default=0.0), 8),
            "steps": sum(r.steps for r in ran), "max_case_steps": max((r.steps for r in ran), default=0),
            "threshold_misses": {r.id: r.threshold_misses for r in ran if r.threshold_misses},
            "thresholds": evalset.thresholds.model_dump(), "evalset_digest": evalset.digest,
            "judge": {"model": judge.model_name, "calls": judge.calls, "input_tokens": judge.input_tokens,
                      "output_tokens": judge.output_tokens} if judge is not None else None,
            "comparison": comparison.to_json(), "gate": {"passed": verdict.passed, "reasons": list(verdict.reasons)},
            "duration_s": round(duration_s, 3)}


def record(evalset: EvalSet, agent: Mapping[str, Any], results: Sequence[CaseResult], summary_: dict[str, Any],
           verdict: Gate, *, eval_id: str, accept: bool) -> dict[str, Any]:
    """The body of ``POST /v1/agents/{agent}/evals``, kept under the API's size limit (answers and then
    trajectories are dropped from the cases when it would not fit)."""
    body: dict[str, Any] = {
            "eval_id": eval_id, "version": str(agent.get("version", "")), "fingerprint": agent.get("fingerprint") or "",
            "evalset": evalset.name, "passed": verdict.passed, "accepted": verdict.passed and accept,
            "summary": summary_, "cases": [r.to_json() for r in results]}
    for drop in ("answer", "trajectory", "scores", "failures"):
        if len(json.dumps(body).encode()) <= MAX_BODY_BYTES:
            break
        body["cases"] = [{k: v for k, v in c.items() if k != drop} for c in body["cases"]]
    if len(json.dumps(body).encode()) > MAX_BODY_BYTES:
        raise EvalFileError(f"the result of {len(results)} cases is too large to store; split the eval set")
    return body


def new_eval_id() -> str:
    return f"ev-{uuid.uuid4().hex[:20]}"


# --- the report as a person reads it -------------------------------------------------------------------

def case_line(r: CaseResult) -> str:
    if r.skipped:
        return f"  skip  {r.id}: {r.skipped}"
    head = (f"  {'pass' if r.passed else 'FAIL'}  {r.id}  {r.status or '-'}  {_count(r.steps, 'step')}  "
            f"${r.cost_usd:.6f}  {r.duration_s:.1f} s")
    return "\n".join([head, *(f"          - {f}" for f in r.failures)])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def to_text(agent: Mapping[str, Any], evalset: EvalSet, summary_: Mapping[str, Any], verdict: Gate,
            stored: Mapping[str, Any] | None) -> str:
    s, c = summary_, summary_["comparison"]
    lines = [f"eval {evalset.name} of {agent.get('name')} v{agent.get('version')}: {s['passed']}/{s['ran']} cases "
             f"passed ({s['pass_rate']:.2%}, threshold {evalset.thresholds.pass_rate:.2%})"
             + (f", {s['skipped']} skipped" if s["skipped"] else ""),
             f"  cost ${s['cost_usd']:.6f} (at most ${s['max_case_cost_usd']:.6f} a case), {s['steps']} steps "
             f"(at most {s['max_case_steps']} a case), {s['duration_s']:.1f} s"]
    ref = c["reference"]
    if ref is None:
        lines.append("  no accepted result of another version to compare with")
    else:
        lines.append(f"  compared with version {ref['version']} ({ref['eval_id']}, pass rate {ref['pass_rate']:.2%}): "
                     f"{len(c['regressions'])} regression(s)" + (f" {', '.join(c['regressions'])}" if c["regressions"]
                                                                 else "")
                     + (f", fixed {', '.join(c['fixed'])}" if c["fixed"] else "")
                     + (f", new {', '.join(c['new'])}" if c["new"] else ""))
        if ref.get("evalset_digest") and ref["evalset_digest"] != evalset.digest:
            lines.append("  (the eval set changed since that result)")
    if stored is not None:
        lines.append(f"  stored as {stored.get('eval_id')}" + (" (accepted: the new reference)"
                                                                 if stored.get("accepted") else ""))
    lines.append("gate: passed" if verdict.passed
                 else "gate: FAILED\n" + "\n".join(f"  - {r}" for r in verdict.reasons))
    return "\n".join(lines)
