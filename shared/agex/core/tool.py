"""Typed tools: Python functions whose arguments are a pydantic model.

The argument model gives the JSON schema declared to the model and validates what the model sends
back; a validation failure or an exception in the tool goes back to the model as a tool error it can
correct, never as a crash of the step.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, get_type_hints, overload

from pydantic import BaseModel, Field, ValidationError

from agex.core.errors import ConfigurationError, validation_problems
from agex.core.messages import ToolSpec
from agex.core.scrub import scrub

RAW_ARGUMENTS = "_raw"
"""The one argument of a call whose arguments the model sent as something other than a JSON object."""
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
    secrets: Mapping[str, str] = field(default_factory=dict)
    """The values of the secrets the tool declared, read with the agent's identity. Never log or return
    them: anything the tool returns is scrubbed of them anyway."""
    memory: Memory | None = None
    """The run's long-term memory, for an agent that declares one (``Agent.memory``; the tools of
    ``agex.tools.memory``): the user's and the agent's memories, nobody else's."""


class Memory(Protocol):
    """Long-term memory as a tool of one run sees it (docs/memory.md, "The memory tools")."""

    def remember(self, key: str, value: str, text: str, kind: str = "fact") -> dict[str, Any]:
        """Keep a fact about the run's user (screened, and kept as the agent's conflict policy says)."""
        ...

    def recall(self, query: str, k: int = 5) -> list[dict[str, Any]]:
        """The memories nearest ``query`` in the scopes the run may read."""
        ...

    def forget(self, memory_id: str) -> bool:
        """Delete one of the user's memories; False if there is none of that id in their scopes."""
        ...


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


class TransientToolError(Exception):
    """Raise from a tool for a failure worth retrying at once (a dropped connection, a 503): the call is
    retried in the step, with backoff, up to its ``RetryPolicy``."""


@dataclass(frozen=True)
class RetryPolicy:
    """In-step retries of a call that failed transiently: exponential backoff with full jitter, capped.
    Short by design: a longer wait is ``RetryLater``, which frees the instance."""

    max_attempts: int = 3
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    retry_on: tuple[type[BaseException], ...] = (TransientToolError, ConnectionError, TimeoutError)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based): uniform in [0, capped exponential]."""
        return random.uniform(0, min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1)))


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class ToolLimits:
    """Limits held across every instance of the step function (see ``agex.ports.limiter``)."""

    max_concurrent: int | None = None
    per_second: float | None = None

    @property
    def any(self) -> bool:
        return self.max_concurrent is not None or self.per_second is not None


class ToolTimeout(Exception):  # noqa: N818 - reported to the model by name
    pass


@dataclass(frozen=True)
class Tool:
    """A typed tool. ``fn(args, ctx)`` gets the validated ``args_model`` instance; kinds of tool that are
    not Python functions (HTTP, MCP) subclass it and override ``spec`` and ``invoke``."""

    kind: ClassVar[str] = "python"

    name: str
    description: str
    args_model: type[BaseModel]
    fn: Callable[..., Any] | None = None
    idempotent: bool = True
    """Safe to call again with the same idempotency key after a crash. A non-idempotent tool whose
    call may or may not have happened is never called blindly a second time."""
    output_model: type[BaseModel] | None = None
    """When given, what the tool returns is validated against it; a mismatch is reported as a tool error."""
    timeout_s: float = 30.0
    """A call that runs longer is cut off and reported to the model as a timeout."""
    retry: RetryPolicy | None = None
    """Default: ``RetryPolicy()`` for an idempotent tool; none for a non-idempotent one, whose failed or
    timed-out call may still have had its effect."""
    secrets: tuple[str, ...] = ()
    """Secret Manager secret ids the tool needs; read with the agent's identity at call time and passed
    in ``ToolContext.secrets`` to this tool alone."""
    limits: ToolLimits = field(default_factory=ToolLimits)
    sensitive: bool = False
    """It moves money, sends messages, deletes, or changes permissions: the provenance guard holds (or
    blocks) a call of it that follows untrusted content with arguments the user did not give."""
    critical: bool = True
    """The agent cannot do its job without it. A degraded step (a budget close to its cap, an objective
    missed) may leave out the tools marked ``critical=False`` (``Degrade.skip_optional_tools``)."""
    trusted: bool = False
    """Its output is the deployment's own data, not content from outside (a policy lookup, a database the
    team controls): it does not count as untrusted for the provenance guard. The injection detector
    still reads it."""

    def spec(self) -> ToolSpec:
        # a fresh dict each time: callers (adapters translating the schema) may change what they get
        return ToolSpec(name=self.name, description=self.description,
                        parameters=json.loads(_arguments_schema(self.args_model)))

    def invoke(self, args: BaseModel, ctx: ToolContext) -> Any:
        assert self.fn is not None, f"tool {self.name} has no function"
        return self.fn(args, ctx)

    def call(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        outcome = self._call(args, ctx)
        # a tool may echo its credentials, in an error too: scrubbed before anything else sees the output,
        # and before truncation, which could cut a value in two
        return dataclasses.replace(outcome, output=_truncate(scrub(outcome.output, ctx.secrets))) if ctx.secrets \
            else dataclasses.replace(outcome, output=_truncate(outcome.output))

    def _call(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        if set(args) == {RAW_ARGUMENTS}:
            # a model sent arguments that are not JSON (an OpenAI-compatible server passes them on as text): an
            # error the model can correct, never a call with the tool's defaults
            return ToolOutcome(False, {"error": f"the arguments for {self.name} were not a JSON object: "
                                                f"{str(args[RAW_ARGUMENTS])[:200]}"})
        try:
            parsed = self.args_model.model_validate(args)
        except ValidationError as e:
            problems = validation_problems(e, "args")
            return ToolOutcome(False, {"error": f"invalid arguments for {self.name}: {problems}"})
        policy = self.retry or (RetryPolicy() if self.idempotent else NO_RETRY)
        attempt = 0
        result: Any = None
        while True:
            attempt += 1
            try:
                result = _with_timeout(self.timeout_s, self.invoke, parsed, ctx)
                break
            except RetryLater as e:
                return ToolOutcome(False, {"error": f"{self.name} asked to be retried later: {e}"},
                                   retry_after_s=e.after_s)
            except ToolTimeout:
                if attempt < policy.max_attempts and TimeoutError in policy.retry_on:
                    time.sleep(policy.backoff(attempt))
                    continue
                return ToolOutcome(False, {"error": f"{self.name} timed out after {self.timeout_s:g} s and was cut "
                                                    f"off (attempt {attempt})"})
            except Exception as e:  # a tool's failure is information for the model, not a step crash
                if attempt < policy.max_attempts and isinstance(e, policy.retry_on):
                    time.sleep(policy.backoff(attempt))
                    continue
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                return ToolOutcome(False, {"error": f"{type(e).__name__}: {e}{tries}"})
        if isinstance(result, ContinueLater):
            output = _as_dict(result.output) if result.output is not None else {}
            return ToolOutcome(True, output, continue_after_s=max(0.0, float(result.after_s)))
        if self.output_model is not None:
            try:
                result = self.output_model.model_validate(_as_dict(result))
            except ValidationError as e:
                return ToolOutcome(False, {"error": f"{self.name} returned a result that does not match its "
                                                    f"output model: {validation_problems(e, 'output')}"})
        return ToolOutcome(True, _as_dict(result))


def _with_timeout(timeout_s: float, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` in a worker thread and stop waiting after ``timeout_s``. Python cannot kill a thread:
    a runaway function keeps its thread until it returns, but the step goes on without it."""
    done = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn(*args)
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e
        finally:
            done.set()

    # the OpenTelemetry context follows the call, so spans of the tool belong to the step's trace
    threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True,
                     name=f"tool-{getattr(fn, '__name__', 'call')}").start()
    if not done.wait(timeout_s):
        raise ToolTimeout()
    if "error" in box:
        raise box["error"]
    return box["result"]


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    fn: None = None, /, *, name: str | None = None, idempotent: bool = True,
    output_model: type[BaseModel] | None = None, timeout_s: float = 30.0, retry: RetryPolicy | None = None,
    secrets: tuple[str, ...] = (), limits: ToolLimits | None = None, sensitive: bool = False, trusted: bool = False,
    critical: bool = True,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None, /, *, name: str | None = None, idempotent: bool = True,
    output_model: type[BaseModel] | None = None, timeout_s: float = 30.0, retry: RetryPolicy | None = None,
    secrets: tuple[str, ...] = (), limits: ToolLimits | None = None, sensitive: bool = False, trusted: bool = False,
    critical: bool = True,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
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
        return Tool(name=name or f.__name__, description=doc, args_model=hints[params[0]], fn=f, idempotent=idempotent,
                    output_model=output_model, timeout_s=timeout_s, retry=retry,
                    secrets=tuple(secrets), limits=limits or ToolLimits(), sensitive=sensitive, trusted=trusted,
                    critical=critical)

    return wrap(fn) if fn is not None else wrap


def _as_dict(result: Any) -> dict[str, Any]:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if isinstance(result, dict):
        plain: dict[str, Any] = json.loads(json.dumps(result, default=str))
        return plain
    return {"result": json.loads(json.dumps(result, default=str))}


@functools.lru_cache(maxsize=1024)
def _arguments_schema(model: type[BaseModel]) -> str:
    """The JSON schema of a tool's arguments, as text. Pydantic builds it anew on every call (3 ms a step for
    two tools), and the tools a step offers are the same every step."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    return json.dumps(schema)


def _truncate(output: dict[str, Any]) -> dict[str, Any]:
    encoded = json.dumps(output)
    if len(encoded.encode()) <= MAX_TOOL_OUTPUT_BYTES:
        return output
    head = encoded.encode()[: MAX_TOOL_OUTPUT_BYTES - 200].decode(errors="ignore")
    return {"truncated": True, "original_bytes": len(encoded.encode()), "partial_json": head}


class WaitArgs(BaseModel):
    seconds: int = Field(ge=1, le=7 * 24 * 3600, description="How long to wait before continuing, in seconds.")
    reason: str = Field(default="", max_length=500, description="What the run waits for, for the timeline.")


@tool(name="continue_later")
def continue_later(args: WaitArgs, ctx: ToolContext) -> ContinueLater:
    """Pause this task and continue it after the given number of seconds, for example to check on
    something again later. Nothing runs while waiting."""
    return ContinueLater(args.seconds, {"waiting_s": args.seconds, "reason": args.reason})
