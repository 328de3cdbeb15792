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

from pydantic import BaseModel, ValidationError

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


@dataclass(frozen=True)
class ToolOutcome:
    ok: bool
    output: dict[str, Any]


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
        except Exception as e:  # a tool's failure is information for the model, not a step crash
            return ToolOutcome(False, {"error": f"{type(e).__name__}: {e}"})
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
