"""Typed tools: Python functions whose arguments are a pydantic model.

The argument model gives the JSON schema declared to the model and validates what the model sends
back; a validation failure or an exception in the tool goes back to the model as a tool error it can
correct, never as a crash of the step.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, Field, ValidationError

from agex.errors import ConfigurationError
from agex.messages import ToolSpec

MAX_TOOL_OUTPUT_BYTES = 64 * 1024
"""A tool result larger than this is truncated (with a marker) before it reaches events and the model."""


@dataclass(frozen=True)
class ToolContext:
    """What a tool may know about the call it serves."""

    tenant: str
    run_id: str
    step: int
    call_id: str
    idempotency_key: str
    """Stable across retries of the same call: pass it to any API that accepts one, so a retried call
    after a crash does not repeat the effect."""


class RetryLater(Exception):  # noqa: N818 - a request to the runtime, not an error of the tool
    """Raise from a tool that could not act now (rate limited, "retry after N seconds"): the call did not
    happen, and the run calls it again after ``after_s`` seconds, from a scheduled task; no instance
    sleeps meanwhile. The tool must be sure it had no effect."""

    def __init__(self, after_s: float, reason: str = "") -> None:
        super().__init__(reason or f"retry after {after_s:g} s")
        self.after_s = max(0.0, float(after_s))
        self.reason = reason


@dataclass(frozen=True)
class ContinueLater:
    """Return from a tool whose call is done but whose run should wait before its next step ("check the
    shipment again in 2 hours"): the run goes to ``waiting_timer`` and a scheduled task resumes it."""

    after_s: float
    output: BaseModel | dict[str, Any] | None = None


@dataclass(frozen=True)
class ToolOutcome:
    ok: bool
    output: dict[str, Any]
    retry_after_s: float | None = None
    """Set when the tool raised ``RetryLater``: nothing happened; call it again after this long."""
    continue_after_s: float | None = None
    """Set when the tool returned ``ContinueLater``: wait this long before the run's next step."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args_model: type[BaseModel]
    fn: Callable[..., Any]
    idempotent: bool = True
    """Safe to call again with the same idempotency key after a crash. A non-idempotent tool whose
    call may or may not have happened is never called blindly a second time."""

    def spec(self) -> ToolSpec:
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        return ToolSpec(name=self.name, description=self.description, parameters=schema)

    def call(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        try:
            parsed = self.args_model.model_validate(args)
        except ValidationError as e:
            return ToolOutcome(False, {"error": f"invalid arguments for {self.name}: {_brief(e)}"})
        try:
            result = self.fn(parsed, ctx)
        except RetryLater as e:
            return ToolOutcome(False, {"error": f"{self.name} asked to be retried later: {e}"},
                               retry_after_s=e.after_s)
        except Exception as e:  # a tool's failure is information for the model, not a step crash
            return ToolOutcome(False, {"error": f"{type(e).__name__}: {e}"})
        if isinstance(result, ContinueLater):
            output = _truncate(_as_dict(result.output)) if result.output is not None else {}
            return ToolOutcome(True, output, continue_after_s=max(0.0, float(result.after_s)))
        return ToolOutcome(True, _truncate(_as_dict(result)))


def tool(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, idempotent: bool = True
) -> Any:
    """Turn ``def f(args: SomeModel, ctx: ToolContext) -> BaseModel | dict`` into a ``Tool``.

    The description is the function's docstring; it is what the model reads to decide when to call it.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        hints = get_type_hints(f)
        params = list(inspect.signature(f).parameters)
        if not params or not (isinstance(hints.get(params[0]), type) and issubclass(hints[params[0]], BaseModel)):
            raise ConfigurationError(
                f"tool {f.__name__}: the first parameter must be annotated with a pydantic model of its arguments"
            )
        doc = inspect.getdoc(f)
        if not doc:
            raise ConfigurationError(f"tool {f.__name__}: add a docstring; the model reads it to choose tools")
        return Tool(name=name or f.__name__, description=doc, args_model=hints[params[0]], fn=f, idempotent=idempotent)

    return wrap(fn) if fn is not None else wrap


def _as_dict(result: Any) -> dict[str, Any]:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if isinstance(result, dict):
        return json.loads(json.dumps(result, default=str))
    return {"result": json.loads(json.dumps(result, default=str))}


def _truncate(output: dict[str, Any]) -> dict[str, Any]:
    encoded = json.dumps(output)
    if len(encoded.encode()) <= MAX_TOOL_OUTPUT_BYTES:
        return output
    head = encoded.encode()[: MAX_TOOL_OUTPUT_BYTES - 200].decode(errors="ignore")
    return {"truncated": True, "original_bytes": len(encoded.encode()), "partial_json": head}


def _brief(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'args'}: {err['msg']}" for err in e.errors())


class WaitArgs(BaseModel):
    seconds: int = Field(ge=1, le=7 * 24 * 3600, description="How long to wait before continuing, in seconds.")
    reason: str = Field(default="", max_length=500, description="What the run waits for, for the timeline.")


@tool(name="continue_later")
def continue_later(args: WaitArgs, ctx: ToolContext) -> ContinueLater:
    """Pause this task and continue it after the given number of seconds, for example to check on
    something again later. Nothing runs while waiting."""
    return ContinueLater(args.seconds, {"waiting_s": args.seconds, "reason": args.reason})
