"""Adapter of the model port for any OpenAI-compatible chat-completions endpoint (OpenAI itself, Ollama,
vLLM, llama.cpp's server, LiteLLM, ...), spoken over plain ``httpx``: no vendor SDK to install or import.

Choices where the servers differ or the port has no exact counterpart:

- A tool call whose ``arguments`` are not a JSON object (small local models emit broken JSON now and
  then) is kept as the call ``{"_raw": "<the text>"}`` (``agex.core.tool.RAW_ARGUMENTS``): the tool reports
  it to the model as a tool error it can correct, instead of failing the run over one bad sample.
- ``finish_reason`` is passed through as the server says it (``stop``, ``tool_calls``, ``length``,
  ``content_filter``). A content filter that left nothing to return is a ``ModelError``, as Gemini's
  blocked answers are; one that cut an answer short returns what there is, with ``content_filter``.
- 408, 409, 429 and 5xx answers, connection errors and timeouts are ``TransientError`` (the message
  says the server's ``Retry-After`` when it gives one); any other refusal is a ``ModelError`` carrying
  the server's own message. A 200 whose body is not a chat completion is a ``ModelError``: a wrong
  base URL does not fix itself.
- A server that returns no ``usage`` (some do not) is counted as zero tokens.
- The adapter retries nothing itself: a failed call fails the step attempt and Cloud Tasks retries it.

``httpx`` is imported on the first request, like Gemini's client: steps that never call a model do not
pay for it at cold start.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from agex.core.errors import ModelBlocked, ModelError, model_unavailable
from agex.core.messages import FunctionCall, Message, ModelRequest, ModelResponse, Part, TokenUsage
from agex.core.tool import RAW_ARGUMENTS
from agex.ports.model import Model

if TYPE_CHECKING:
    import httpx

_RETRYABLE = {408, 409, 429}


class OpenAICompatibleModel(Model):
    def __init__(self, base_url: str, api_key: str = "", timeout_seconds: float = 60.0,
                 headers: dict[str, str] | None = None) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.timeout_seconds = timeout_seconds
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key:  # Ollama, vLLM and llama.cpp's server need none unless started with one
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _get_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                import httpx

                self._client = httpx.Client(timeout=self.timeout_seconds, headers=self._headers)
            return self._client

    def request(self, request: ModelRequest) -> ModelResponse:
        import httpx

        body = chat_request(request)
        try:
            answer = self._get_client().post(self.url, json=body)
        except httpx.TransportError as e:  # connect errors, timeouts, dropped connections
            raise model_unavailable(0, f"the model server at {self.url} could not be reached: "
                                       f"{type(e).__name__}: {e}") from e
        if answer.status_code != 200:
            _raise_for(answer)
        try:
            data = answer.json()
        except ValueError as e:
            raise ModelError(f"the model server at {self.url} answered 200 with a body that is not JSON: "
                             f"{_clip(answer.text)!r}") from e
        return chat_response(data)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def chat_request(request: ModelRequest) -> dict[str, Any]:
    """The chat-completions body for ``request``."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
    for m in request.messages:
        messages.extend(_messages(m))
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.tools:
        body["tools"] = [{"type": "function", "function": {
            "name": t.name, "description": t.description, "parameters": t.parameters}} for t in request.tools]
    return body


def _messages(message: Message) -> list[dict[str, Any]]:
    texts = [p.text for p in message.parts if p.text is not None]
    if message.role == "model":
        calls = [{"id": c.id, "type": "function",
                  "function": {"name": c.name, "arguments": json.dumps(c.args, ensure_ascii=False)}}
                 for c in message.function_calls]
        out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
        if calls:
            out["tool_calls"] = calls
        return [out]
    # Tool results first: they must follow the assistant's tool calls directly.
    result: list[dict[str, Any]] = [
        {"role": "tool", "tool_call_id": p.function_response.id,
         "content": json.dumps(p.function_response.response, ensure_ascii=False)}
        for p in message.parts if p.function_response is not None]
    if texts:
        # One string rather than content parts: every server accepts it, some older ones nothing else.
        result.append({"role": "user", "content": "\n\n".join(texts)})
    return result


def chat_response(data: Any) -> ModelResponse:
    """The port's response for a chat-completions answer (a decoded JSON body)."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices or not isinstance(choices[0], dict) or not isinstance(choices[0].get("message"), dict):
        raise ModelError(f"the model server returned no choice: {_clip(json.dumps(data))}")
    choice = choices[0]
    message = choice["message"]
    finish_reason = str(choice.get("finish_reason") or "")
    parts: list[Part] = []
    content = message.get("content")
    if isinstance(content, list):  # content parts, as some servers answer
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content:
        parts.append(Part(text=content))
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        parts.append(Part(function_call=FunctionCall(
            id=call.get("id") or f"call-{i}", name=function.get("name") or "",
            args=_arguments(function.get("arguments")))))
    if not parts and finish_reason == "content_filter":
        raise ModelBlocked("the model server's content filter blocked the answer (finish_reason content_filter)")
    usage = data.get("usage") or {}
    return ModelResponse(
        message=Message(role="model", parts=parts),
        usage=TokenUsage(input_tokens=usage.get("prompt_tokens") or 0,
                         output_tokens=usage.get("completion_tokens") or 0),
        model_version=str(data.get("model") or ""),
        finish_reason=finish_reason)


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):  # a few servers send the object itself
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError):
        parsed = None
    return parsed if isinstance(parsed, dict) else {RAW_ARGUMENTS: raw if isinstance(raw, str) else json.dumps(raw)}


def _raise_for(answer: httpx.Response) -> None:
    status, url = answer.status_code, str(answer.request.url)
    message = _error_message(answer)
    if status in _RETRYABLE or status >= 500:
        after = answer.headers.get("retry-after", "").strip()
        wait = f" (retry after {after}{' s' if after.isdigit() else ''})" if after else ""
        raise model_unavailable(status, f"the model server at {url} answered {status}{wait}: {message}")
    raise ModelError(f"the model server at {url} refused the request ({status}): {message}")


def _error_message(answer: httpx.Response) -> str:
    """The server's own words: ``{"error": {"message"}}`` (OpenAI, Ollama, llama.cpp), ``{"error": "..."}``
    or ``{"message": ...}`` (older vLLM), else the body's start."""
    try:
        data = answer.json()
    except ValueError:
        return _clip(answer.text) or answer.reason_phrase
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        if data.get("message"):
            return str(data["message"])
    return _clip(answer.text)


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
