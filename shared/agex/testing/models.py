"""Model doubles in the manner of pydantic-ai's ``TestModel`` and ``FunctionModel``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from agex.core.messages import FunctionCall, Message, ModelRequest, ModelResponse, Part, TokenUsage
from agex.ports.model import Model


def _estimate_tokens(value: Any) -> int:
    return max(1, len(json.dumps(value, default=str)) // 4)


def usage_for(request: ModelRequest, message: Message) -> TokenUsage:
    prompt = [request.system, [m.model_dump(mode="json") for m in request.messages],
              [t.model_dump() for t in request.tools]]
    return TokenUsage(input_tokens=_estimate_tokens(prompt), output_tokens=_estimate_tokens(message.model_dump(mode="json")))


class FunctionModel(Model):
    """Answers with whatever ``fn(request)`` returns: a ``Message``, a string (final text) or a list of
    ``(tool name, args)`` pairs (tool calls). Usage is estimated from sizes, like the emulator's."""

    def __init__(self, fn: Callable[[ModelRequest], Message | str | list[tuple[str, dict[str, Any]]]]) -> None:
        self.fn = fn
        self.calls = 0

    def request(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        answer = self.fn(request)
        if isinstance(answer, str):
            message = Message(role="model", parts=[Part(text=answer)])
        elif isinstance(answer, list):
            message = Message(role="model", parts=[
                Part(function_call=FunctionCall(id=f"call-{i}", name=name, args=args))
                for i, (name, args) in enumerate(answer)])
        else:
            message = answer
        return ModelResponse(message=message, usage=usage_for(request, message), model_version=request.model,
                             finish_reason="STOP")


class TestModel(FunctionModel):
    """Calls every declared tool once with ``args_for(tool name)`` (default: empty), then answers
    ``final_text``. Good for checking an agent's plumbing without writing a script."""

    __test__ = False  # not a pytest test class

    def __init__(self, final_text: str = "done", args_for: Callable[[str], dict[str, Any]] | None = None) -> None:
        self.final_text = final_text
        self.args_for = args_for or (lambda name: {})
        super().__init__(self._answer)

    def _answer(self, request: ModelRequest) -> Message | str | list[tuple[str, dict[str, Any]]]:
        turns = sum(1 for m in request.messages if m.role == "model")
        if turns == 0 and request.tools:
            return [(t.name, self.args_for(t.name)) for t in request.tools]
        return self.final_text


def scripted(*turns: Message | str | list[tuple[str, dict[str, Any]]]) -> FunctionModel:
    """Answers model turn k (the number of model messages in the request) with ``turns[k]``, repeating
    the last one: the same request always gets the same answer, as a resumed step needs."""

    def answer(request: ModelRequest) -> Message | str | list[tuple[str, dict[str, Any]]]:
        k = sum(1 for m in request.messages if m.role == "model")
        return turns[min(k, len(turns) - 1)]

    return FunctionModel(answer)
