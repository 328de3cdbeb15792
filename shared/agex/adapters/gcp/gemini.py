"""Gemini adapter of the model port, through ``google-genai``.

``google.genai`` is imported on the first request, not when the step function starts: it is the
heaviest import of the runtime and only steps that call the model need it.

Settings: an API key (``AGEX_GEMINI_API_KEY``; ``AGEX_GEMINI_BASE_URL`` points the client at the local
emulator), or Vertex AI (``AGEX_VERTEX=true`` with ``AGEX_PROJECT`` and ``AGEX_LOCATION``, using the
service's own credentials). The client's own retries are off: a failed call fails the step attempt and
Cloud Tasks retries it with backoff, so no instance sleeps while the quota recovers.

Context caching (``cache="auto"``): an agent's system instruction and tool declarations are the same in
every step, so once they are large enough for the model to cache, they go into an explicit cache
(``cachedContents``) and the requests refer to it instead of sending them again; Gemini bills those tokens
at its cached-input price. A cache is found by its display name, a digest of (model, instruction, tools),
so every instance of the fleet shares one per prefix. Caching only ever saves: a cache that cannot be
made or has gone leaves the request uncached. See docs/models.md, "Context caching".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from agex.core.errors import ConfigurationError, ModelBlocked, ModelError, model_unavailable
from agex.core.messages import FunctionCall, Message, ModelRequest, ModelResponse, Part, TokenUsage
from agex.obs import logging as log
from agex.ports.model import Model, TextSink

_RETRYABLE = {408, 429, 500, 502, 503, 504}
_log = log.get("gemini")

MIN_CACHE_TOKENS: Mapping[str, int] = {
    "gemini-2.5-flash-lite": 2048,
    "gemini-2.5-flash": 1024,
    "gemini-2.5-pro": 4096,
}
"""The smallest explicit cache each model accepts (by model-name prefix), as the Gemini API enforced it in
2026-11; other models: ``DEFAULT_MIN_CACHE_TOKENS``. A prefix estimated above it that the API still finds
too small is simply not cached."""
DEFAULT_MIN_CACHE_TOKENS = 4096
CHARS_PER_TOKEN = 4
"""The estimate of a prefix's size: characters of the instruction and of the tools' JSON, four a token.
No ``count_tokens`` call: that would be one more request per new prefix for a decision the API checks
anyway when the cache is made."""
RETRY_CREATE_S = 300.0
"""After a cache of a prefix could not be made, its requests go uncached this long before trying again."""
MAX_LISTED = 1000
"""Caches looked through when searching for another instance's cache of a prefix."""
CACHE_NAME_PREFIX = "agex-"


@dataclass(frozen=True)
class _Prefix:
    model: str
    digest: str
    system: str
    tools: list[Any] | None  # the request's tools as the API's JSON (dicts; the SDK's types name them Tool)

    @property
    def display_name(self) -> str:
        return CACHE_NAME_PREFIX + self.digest


@dataclass(frozen=True)
class _Cache:
    name: str
    expires: float  # epoch seconds



def genai_client(*, api_key: str, base_url: str, vertex: bool, project: str, location: str,
                 timeout_seconds: float) -> Any:
    """A google-genai client as the runtime uses it (the model and the embeddings alike): the Gemini API with a key
    or Vertex AI with the service's credentials, the emulator's base URL locally, and no retries of its own: a
    failed call raises, and Cloud Tasks retries the step with the queue's backoff."""
    from google import genai
    from google.genai import types

    options = types.HttpOptions(timeout=int(timeout_seconds * 1000), retry_options=types.HttpRetryOptions(attempts=1),
                                base_url=base_url or None)
    if vertex:
        return genai.Client(vertexai=True, project=project, location=location, http_options=options)
    return genai.Client(api_key=api_key, http_options=options)

class GeminiModel(Model):
    def __init__(self, *, api_key: str = "", base_url: str = "", vertex: bool = False, project: str = "",
                 location: str = "", timeout_seconds: float = 60.0, cache: str = "auto",
                 cache_ttl_seconds: int = 3600) -> None:
        if not vertex and not api_key:
            raise ConfigurationError("Gemini needs AGEX_GEMINI_API_KEY, or AGEX_VERTEX=true to use Vertex AI")
        if cache not in ("auto", "off"):
            raise ConfigurationError(f"AGEX_CONTEXT_CACHE must be auto or off, not {cache!r}")
        if cache_ttl_seconds < 60:
            raise ConfigurationError(f"AGEX_CONTEXT_CACHE_TTL_SECONDS must be 60 or more, not {cache_ttl_seconds}")
        self.api_key, self.base_url, self.vertex = api_key, base_url, vertex
        self.project, self.location, self.timeout_seconds = project, location, timeout_seconds
        self.cache, self.cache_ttl_seconds = cache, cache_ttl_seconds
        self._client: Any = None
        self._lock = threading.Lock()
        self._caches: dict[str, _Cache] = {}
        self._listed: dict[str, float] = {}
        self._refused: dict[str, float] = {}
        self._prefix_locks: dict[str, threading.Lock] = {}

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = genai_client(api_key=self.api_key, base_url=self.base_url, vertex=self.vertex,
                                            project=self.project, location=self.location,
                                            timeout_seconds=self.timeout_seconds)
            return self._client

    def request(self, request: ModelRequest) -> ModelResponse:
        client = self._get_client()
        with _translated():
            response = self._generate(client, request)
        return _response(response)

    def stream(self, request: ModelRequest, on_text: TextSink) -> ModelResponse:
        """``streamGenerateContent``: each chunk's text goes to ``on_text`` as it arrives; the chunks make the
        response ``request`` would have given (text pieces joined, the calls, the last chunk's usage)."""
        from google.genai import errors

        client = self._get_client()
        tools = _tools(request)
        prefix = self._prefix(request, tools)
        cached = self._cached(client, prefix) if prefix is not None else None
        merged = _Merged()
        with _translated():
            try:
                for chunk in client.models.generate_content_stream(
                        model=request.model, contents=[_content(m) for m in request.messages],
                        config=_config(request.system, tools, cached)):
                    for text in merged.add(chunk):
                        on_text(text)
            except errors.APIError as e:
                if cached is None or prefix is None or not _names_cache(e) or merged.started:
                    raise
                # the cache went away: the unstreamed request makes it again (or goes without it)
                self._forget(prefix, cached)
                return self.request(request)
        return merged.response()

    def _generate(self, client: Any, request: ModelRequest) -> Any:
        from google.genai import errors

        contents = [_content(m) for m in request.messages]
        tools = _tools(request)
        prefix = self._prefix(request, tools)
        cached = self._cached(client, prefix) if prefix is not None else None
        for attempt in range(3):
            try:
                return client.models.generate_content(model=request.model, contents=contents,
                                                      config=_config(request.system, tools, cached))
            except errors.APIError as e:
                if cached is None or prefix is None or not _names_cache(e):
                    raise
                # expired or deleted since it was made: made again once, then the request goes uncached
                _log.info("cached content %s of model %s is gone (%s): %s", cached, request.model, e.code,
                          "making it again" if attempt == 0 else "asking without it")
                self._forget(prefix, cached)
                cached = self._cached(client, prefix) if attempt == 0 else None
        raise AssertionError("the last attempt is uncached")

    # --- context caching ---------------------------------------------------------------------------------

    def _prefix(self, request: ModelRequest, tools: list[Any] | None) -> _Prefix | None:
        """The request's stable prefix, when caching is on and it is large enough for the model."""
        if self.cache != "auto":
            return None
        declared = [t.model_dump(mode="json") for t in request.tools]
        text = json.dumps({"system": request.system, "tools": declared}, sort_keys=True, separators=(",", ":"))
        chars = len(request.system) + (len(json.dumps(declared, separators=(",", ":"))) if declared else 0)
        if math.ceil(chars / CHARS_PER_TOKEN) < min_cache_tokens(request.model):
            return None
        model = request.model.removeprefix("models/")
        digest = hashlib.sha256(f"{model}\n{text}".encode()).hexdigest()
        return _Prefix(model=model, digest=digest, system=request.system, tools=tools)

    def _prefix_lock(self, digest: str) -> threading.Lock:
        with self._lock:
            return self._prefix_locks.setdefault(digest, threading.Lock())

    def _cached(self, client: Any, prefix: _Prefix) -> str | None:
        """The name of a live cache of ``prefix``: known here, made by another instance, or made now. One
        request at a time per prefix decides, so concurrent steps make one cache, not several."""
        with self._prefix_lock(prefix.digest):
            now = time.time()
            known = self._caches.get(prefix.digest)
            if known is not None and known.expires - now > self._margin():
                return known.name
            if self._refused.get(prefix.digest, 0.0) > now:
                return None
            if now - self._listed.get(prefix.digest, -math.inf) >= self.cache_ttl_seconds:
                # at most once a TTL per prefix: on first sight, then when the cache it found has expired
                self._listed[prefix.digest] = now
                found = self._find(client, prefix, now)
                if found is not None:
                    self._caches[prefix.digest] = found
                    return found.name
            return self._create(client, prefix, now)

    def _margin(self) -> float:
        # a cache about to expire is not used: a request would likely find it gone
        return min(60.0, self.cache_ttl_seconds / 10)

    def _find(self, client: Any, prefix: _Prefix, now: float) -> _Cache | None:
        from google.genai import types

        best: _Cache | None = None
        try:
            for i, c in enumerate(client.caches.list(config=types.ListCachedContentsConfig(page_size=100))):
                if i >= MAX_LISTED:
                    break
                if c.display_name != prefix.display_name or not str(c.model or "").endswith(f"models/{prefix.model}"):
                    continue
                expires = c.expire_time.timestamp() if c.expire_time else 0.0
                if c.name and expires - now > self._margin() and (best is None or expires > best.expires):
                    best = _Cache(c.name, expires)
        except Exception as e:  # listing is an optimisation too: without it, a cache is made
            _log.warning("could not list Gemini's cached contents (%s); making a cache for model %s",
                         _reason(e), prefix.model)
        return best

    def _create(self, client: Any, prefix: _Prefix, now: float) -> str | None:
        from google.genai import types

        try:
            made = client.caches.create(model=prefix.model, config=types.CreateCachedContentConfig(
                display_name=prefix.display_name, system_instruction=prefix.system or None, tools=prefix.tools,
                ttl=f"{self.cache_ttl_seconds}s"))
        except Exception as e:  # never a failed step for want of a cache
            self._refused[prefix.digest] = now + RETRY_CREATE_S
            _log.warning("could not make a context cache for model %s (%s); its requests go uncached for %d s",
                         prefix.model, _reason(e), int(RETRY_CREATE_S),
                         extra={"fields": {"context_cache": "create_failed", "model": prefix.model}})
            return None
        expires = made.expire_time.timestamp() if made.expire_time else now + self.cache_ttl_seconds
        self._caches[prefix.digest] = _Cache(made.name, expires)
        log.info(_log, f"context cache {made.name} made for model {prefix.model}", context_cache="created",
                 model=prefix.model, cache=made.name,
                 cached_tokens=made.usage_metadata.total_token_count if made.usage_metadata else None)
        return str(made.name)

    def _forget(self, prefix: _Prefix, name: str) -> None:
        with self._prefix_lock(prefix.digest):
            known = self._caches.get(prefix.digest)
            if known is not None and known.name == name:
                del self._caches[prefix.digest]


def min_cache_tokens(model: str) -> int:
    model = model.removeprefix("models/")
    for prefix in sorted(MIN_CACHE_TOKENS, key=len, reverse=True):
        if model.startswith(prefix):
            return MIN_CACHE_TOKENS[prefix]
    return DEFAULT_MIN_CACHE_TOKENS


def _names_cache(e: Any) -> bool:
    """The API says the request's cached content is not there (any more): the Gemini API answers 403
    "CachedContent not found (or permission denied)", Vertex AI a 400 or 404 naming it."""
    message = str(getattr(e, "message", "") or e).lower()
    return getattr(e, "code", None) in (400, 403, 404) and ("cachedcontent" in message or "cached content" in message)


def _reason(e: Exception) -> str:
    code = getattr(e, "code", None)
    message = getattr(e, "message", None) or str(e)
    return f"{code}: {message}" if code else message


def _tools(request: ModelRequest) -> list[dict[str, Any]] | None:
    # plain dicts, as the messages (_content): the SDK validates them once, not a second time
    if not request.tools:
        return None
    return [{"function_declarations": [
        {"name": t.name, "description": t.description, "parameters_json_schema": t.parameters}
        for t in request.tools]}]


def _config(system: str, tools: list[dict[str, Any]] | None, cached: str | None) -> dict[str, Any]:
    off = {"disable": True}  # the SDK calls no function itself: the step runs the tools
    if cached is not None:
        # the cache holds the instruction and the tools; the API refuses a request that repeats them
        return {"cached_content": cached, "automatic_function_calling": off}
    return {"system_instruction": system, "tools": tools, "automatic_function_calling": off}


def _content(message: Message) -> dict[str, Any]:
    """A message as the API's JSON. Dicts, not ``types.Content``: the SDK validates its parameters again
    whatever it is given, and from its own model objects that costs 3.5x what it does from dicts (5.6 ms
    against 1.6 ms for a full 10-step window)."""
    parts: list[dict[str, Any]] = []
    for p in message.parts:
        if p.text is not None:
            parts.append({"text": p.text})
        elif p.function_call is not None:
            fc = p.function_call
            parts.append({"function_call": {"id": fc.id, "name": fc.name, "args": fc.args}})
        elif p.function_response is not None:
            fr = p.function_response
            parts.append({"function_response": {"id": fr.id, "name": fr.name, "response": fr.response}})
    return {"role": message.role, "parts": parts}


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Gemini's errors as the model port's: retryable ones ``ModelUnavailable``, the rest ``ModelError``."""
    from google.genai import errors

    try:
        yield
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


class _Merged:
    """The chunks of a streamed answer, made into one response: text pieces joined in one part (a call between
    two texts keeps them apart), calls as they came, usage, version and finish reason from the last chunk that
    has them."""

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.usage: Any = None
        self.version = ""
        self.finish: Any = None
        self.candidate_seen = False
        self.feedback: Any = None
        self.started = False

    def add(self, chunk: Any) -> list[str]:
        self.started = True
        texts: list[str] = []
        self.usage = chunk.usage_metadata or self.usage
        self.version = chunk.model_version or self.version
        self.feedback = getattr(chunk, "prompt_feedback", None) or self.feedback
        candidate = (chunk.candidates or [None])[0]
        if candidate is None:
            return texts
        self.finish = candidate.finish_reason or self.finish
        if candidate.content is None:
            return texts
        self.candidate_seen = True
        for p in candidate.content.parts or []:
            if p.function_call is not None:
                self.parts.append(p)
            elif p.text and not p.thought:
                texts.append(p.text)
                last = self.parts[-1] if self.parts else None
                if isinstance(last, _Text):
                    last.text += p.text
                else:
                    self.parts.append(_Text(p.text))
        return texts

    def response(self) -> ModelResponse:
        if not self.candidate_seen:
            raise ModelBlocked(f"Gemini returned no candidate (prompt feedback: {self.feedback})")
        content = _Content(self.parts)
        return _response(_Whole([_Candidate(content, self.finish)], self.usage, self.version))


@dataclass
class _Text:
    text: str
    function_call: Any = None
    thought: Any = None


@dataclass
class _Content:
    parts: list[Any]


@dataclass
class _Candidate:
    content: _Content
    finish_reason: Any


@dataclass
class _Whole:
    candidates: list[_Candidate]
    usage_metadata: Any
    model_version: str


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
    prompt = (usage.prompt_token_count or 0) if usage else 0
    # explicit and implicit cache hits alike; never more than the prompt it is a part of
    cached = min(prompt, (usage.cached_content_token_count or 0) if usage else 0)
    return ModelResponse(
        message=Message(role="model", parts=parts),
        usage=TokenUsage(input_tokens=prompt, output_tokens=output, cached_input_tokens=cached),
        model_version=response.model_version or "",
        finish_reason=str(candidate.finish_reason.value if candidate.finish_reason else ""))
