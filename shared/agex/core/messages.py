"""The model-facing conversation: provider-neutral messages, requests and responses.

The engine speaks only these types; the Gemini adapter translates them to and from ``google.genai``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FunctionCall(_Strict):
    """The model asks for a tool to be called."""

    id: str
    """Identifies the call within its step; the tool result answers it by the same id."""
    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class FunctionResponse(_Strict):
    """A tool's answer to a function call, as the model will see it."""

    id: str
    name: str
    response: dict[str, Any]


class Part(_Strict):
    """Exactly one of ``text``, ``function_call`` or ``function_response`` is set."""

    text: str | None = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None


class Message(_Strict):
    role: Literal["user", "model"]
    """Gemini's two roles: tool results travel in ``user`` messages as function responses."""
    parts: list[Part]

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if p.text)

    @property
    def function_calls(self) -> list[FunctionCall]:
        return [p.function_call for p in self.parts if p.function_call]


class ToolSpec(_Strict):
    """A tool as declared to the model: name, description and a JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


class ModelRequest(_Strict):
    model: str
    system: str
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)


class TokenUsage(_Strict):
    input_tokens: int = 0
    """The whole prompt, cached tokens included."""
    output_tokens: int = 0
    cached_input_tokens: int = 0
    """The part of ``input_tokens`` the provider served from a context cache (explicit or implicit), billed
    at its cached-input price."""


class ModelResponse(_Strict):
    message: Message
    usage: TokenUsage
    model_version: str = ""
    finish_reason: str = ""
