"""Gemini adapter of the model port, through ``google-genai``.

``google.genai`` is imported on the first request, not when the step function starts: it is the
heaviest import of the runtime and only steps that call the model need it.

Settings: an API key (``AGEX_GEMINI_API_KEY``; ``AGEX_GEMINI_BASE_URL`` points the client at the local
emulator), or Vertex AI (``AGEX_VERTEX=true`` with ``AGEX_PROJECT`` and ``AGEX_LOCATION``, using the
service's own credentials). The client's own retries are off: a failed call fails the step attempt and
Cloud Tasks retries it with backoff, so no instance sleeps while the quota recovers.
"""

from __future__ import annotations

import threading
from typing import Any

from agex.core.errors import ConfigurationError, ModelBlocked, ModelError, model_unavailable
from agex.core.messages import FunctionCall, Message, ModelRequest, ModelResponse, Part, TokenUsage
from agex.ports.model import Model

_RETRYABLE = {408, 429, 500, 502, 503, 504}


class GeminiModel(Model):
    def __init__(self, *, api_key: str = "", base_url: str = "", vertex: bool = False, project: str = "",
                 location: str = "", timeout_seconds: float = 60.0) -> None:
        if not vertex and not api_key:
            raise ConfigurationError("Gemini needs AGEX_GEMINI_API_KEY, or AGEX_VERTEX=true to use Vertex AI")
        self.api_key, self.base_url, self.vertex = api_key, base_url, vertex
        self.project, self.location, self.timeout_seconds = project, location, timeout_seconds
        self._client: Any = None
        self._lock = threading.Lock()

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                from google import genai
                from google.genai import types

                options = types.HttpOptions(timeout=int(self.timeout_seconds * 1000),
                                            retry_options=types.HttpRetryOptions(attempts=1),
                                            base_url=self.base_url or None)
                if self.vertex:
                    self._client = genai.Client(vertexai=True, project=self.project, location=self.location,
                                                http_options=options)
                else:
                    self._client = genai.Client(api_key=self.api_key, http_options=options)
            return self._client

    def request(self, request: ModelRequest) -> ModelResponse:
        from google.genai import errors, types

        client = self._get_client()
        config = types.GenerateContentConfig(
            system_instruction=request.system,
            tools=[types.Tool(function_declarations=[
                types.FunctionDeclaration(name=t.name, description=t.description, parameters_json_schema=t.parameters)
                for t in request.tools])] if request.tools else None,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
        try:
            response = client.models.generate_content(model=request.model, contents=[_content(m) for m in request.messages],
                                                      config=config)
        except errors.APIError as e:
            if e.code in _RETRYABLE:
                raise model_unavailable(e.code, f"Gemini answered {e.code}: {e.message}") from e
            raise ModelError(f"Gemini refused the request ({e.code}): {e.message}") from e
        except OSError as e:  # connection errors and timeouts of the HTTP client
            raise model_unavailable(0, f"Gemini could not be reached: {e}") from e
        except Exception as e:
            if type(e).__module__.startswith(("httpx", "httpcore")):
                raise model_unavailable(0, f"Gemini could not be reached: {e}") from e
            raise
        return _response(response)


def _content(message: Message) -> Any:
    from google.genai import types

    parts = []
    for p in message.parts:
        if p.text is not None:
            parts.append(types.Part(text=p.text))
        elif p.function_call is not None:
            fc = p.function_call
            parts.append(types.Part(function_call=types.FunctionCall(id=fc.id, name=fc.name, args=fc.args)))
        elif p.function_response is not None:
            fr = p.function_response
            parts.append(types.Part(function_response=types.FunctionResponse(id=fr.id, name=fr.name, response=fr.response)))
    return types.Content(role=message.role, parts=parts)


def _response(response: Any) -> ModelResponse:
    candidate = (response.candidates or [None])[0]
    if candidate is None or candidate.content is None:
        reason = getattr(response, "prompt_feedback", None)
        raise ModelBlocked(f"Gemini returned no candidate (prompt feedback: {reason})")
    parts: list[Part] = []
    for i, p in enumerate(candidate.content.parts or []):
        if p.function_call is not None:
            fc = p.function_call
            parts.append(Part(function_call=FunctionCall(id=fc.id or f"call-{i}", name=fc.name or "", args=dict(fc.args or {}))))
        elif p.text is not None and not p.thought:
            parts.append(Part(text=p.text))
    usage = response.usage_metadata
    output = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0) if usage else 0
    return ModelResponse(
        message=Message(role="model", parts=parts),
        usage=TokenUsage(input_tokens=(usage.prompt_token_count or 0) if usage else 0, output_tokens=output),
        model_version=response.model_version or "",
        finish_reason=str(candidate.finish_reason.value if candidate.finish_reason else ""))
