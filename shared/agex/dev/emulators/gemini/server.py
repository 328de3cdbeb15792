"""WSGI application: routing, API-key check, fault application and the request log."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from agex.dev.emulators.scripted import ScriptedModelApp, json_response
from agex.ports.embeddings import EmbeddingKind

from . import embeddings
from .caches import CacheStore
from .faults import FaultEffect, normalize_model
from .scenario import ScenarioSet
from .wire import ApiError, build_response, invalid, load_generate_body, parse_generate_data

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

# The client defaults to /v1 (google-genai 3.x) and can be pointed at /v1beta.
_MODEL_PATH = re.compile(r"^/(?:v1|v1beta|v1alpha)/models/([^/:]+):([A-Za-z]+)$")
_CACHES_PATH = re.compile(r"^/(?:v1|v1beta|v1alpha)/cachedContents(?:/([^/:]+))?$")
_GENERATE_METHODS = ("generateContent", "streamGenerateContent")
_EMBED_METHODS = ("embedContent", "batchEmbedContents")

# Messages the real API uses for these statuses, so logs read the same as in production.
_FAULT_MESSAGES: dict[int, str] = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "The request timed out. Please try again.",
}

_MISSING_KEY_MESSAGE = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)


_json = json_response


def _error(exc: ApiError) -> Response:
    return _json(exc.body(), status=exc.code)


def _has_credentials(request: Request) -> bool:
    # Any non-empty key is accepted: the emulator checks that a key is sent, not which.
    key = request.headers.get("x-goog-api-key") or request.args.get("key")
    auth = request.headers.get("Authorization", "")
    return bool((key and key.strip()) or (auth.lower().startswith("bearer ") and auth[7:].strip()))


class EmulatorApp(ScriptedModelApp):
    def __init__(self, scenarios: ScenarioSet, latency_ms: int = 0, log_size: int = 10_000,
                 keep_bodies: bool = False) -> None:
        self.caches = CacheStore()
        super().__init__(scenarios, latency_ms, log_size, keep_bodies)

    def _api_error(self, status: int, message: str) -> Exception:
        return ApiError(status, message)

    def _invalid(self, message: str) -> Exception:
        return invalid(message)

    def _error_response(self, exc: Exception) -> Response | None:
        return _error(exc) if isinstance(exc, ApiError) else None

    def _internal_error(self, exc: Exception) -> Response:
        return _error(ApiError(500, f"Gemini emulator internal error: {exc!r}"))

    # -- routing -------------------------------------------------------------------

    def _dispatch(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path == "/healthz":
            return self._health()
        if path.startswith("/_emulator/"):
            return self._admin(request, path.removeprefix("/_emulator/").rstrip("/"), method)
        cached = _CACHES_PATH.match(path)
        if cached is not None:
            return self._cached_contents(request, cached.group(1), method)
        m = _MODEL_PATH.match(path)
        if m is None:
            raise ApiError(404, f"Path {path!r} is not served by the Gemini emulator.")
        model, rpc = m.group(1), m.group(2)
        if rpc not in _GENERATE_METHODS + _EMBED_METHODS:
            raise ApiError(
                404,
                f"Method {rpc!r} is not supported by the Gemini emulator "
                f"(only {', '.join(_GENERATE_METHODS + _EMBED_METHODS)}).",
            )
        if method != "POST":
            raise ApiError(405, f"{rpc} requires POST, got {method}.")
        if rpc in _EMBED_METHODS:
            return self._embed(request, normalize_model(model), rpc)
        return self._generate(request, normalize_model(model), stream=rpc == "streamGenerateContent")

    def _admin_more(self, request: Request, name: str, method: str) -> Response | None:
        if name == "caches" and method == "GET":
            return _json(self.caches.snapshot())
        if name == "caches/expire" and method == "POST":
            body = self._admin_body(request)
            made_next = body.get("made_next", 0) if isinstance(body, dict) else 0
            if not isinstance(body, dict) or set(body) - {"name", "display_name", "made_next"} \
                    or not isinstance(made_next, int) or made_next < 0:
                raise invalid("Expire caches with {\"name\": ...} and/or {\"display_name\": ...}, or {} for all; "
                              "\"made_next\": n expires the next n caches made as soon as they are made.")
            return _json({"expired": self.caches.expire(body.get("name"), body.get("display_name"), made_next)})
        return None

    def _reset_more(self) -> None:
        self.caches.clear()

    # -- cachedContents ---------------------------------------------------------------

    def _cached_contents(self, request: Request, name: str | None, method: str) -> Response:
        if not _has_credentials(request):
            raise ApiError(403, _MISSING_KEY_MESSAGE, "PERMISSION_DENIED")
        if name is None and method == "POST":
            body = self._admin_body(request)
            model = body.get("model") if isinstance(body, dict) else None
            self._fault("cachedContents.create", model if isinstance(model, str) else None)
            return _json(self.caches.create(body).resource())
        if name is None and method == "GET":
            self._fault("cachedContents.list", None)
            try:
                size = int(request.args.get("pageSize", "0") or 0)
            except ValueError:
                raise invalid("Invalid value at 'page_size' (TYPE_INT32)") from None
            page, token = self.caches.list(size, request.args.get("pageToken", ""))
            listed: dict[str, Any] = {"cachedContents": [c.resource() for c in page]}
            if token:
                listed["nextPageToken"] = token
            return _json(listed)
        if name is not None and method == "GET":
            self._fault("cachedContents.get", None)
            return _json(self.caches.get(name).resource())
        if name is not None and method == "PATCH":
            self._fault("cachedContents.update", None)
            return _json(self.caches.update(name, self._admin_body(request)).resource())
        if name is not None and method == "DELETE":
            self._fault("cachedContents.delete", None)
            self.caches.delete(name)
            return _json({})
        raise ApiError(405, f"cachedContents does not accept {method} here.")

    def _fault(self, method: str, model: str | None) -> None:
        injected = self.faults.take(model, method)
        if injected is not None:
            if injected.delay_ms:
                self._stopping.wait(injected.delay_ms / 1000)
            self._apply(injected, {}, [0], what=f"injected {method} fault")

    # -- embedContent, batchEmbedContents ----------------------------------------------

    def _embed(self, request: Request, model: str, rpc: str) -> Response:
        entry: dict[str, Any] = {"model": model, "method": rpc, "texts": None, "task_types": None,
                                 "output_dimensionality": None, "status": 200, "at": time.time(), "fault": None,
                                 "error": None}
        delay = [self.latency_ms]
        try:
            if not _has_credentials(request):
                raise ApiError(403, _MISSING_KEY_MESSAGE, "PERMISSION_DENIED")
            raw = request.get_data(cache=False)
            if self.keep_bodies:
                entry["body"] = raw.decode("utf-8", "replace")
            data = embeddings.load_body(raw)
            batch = rpc == "batchEmbedContents"
            parsed = embeddings.parse_batch(model, data) if batch else \
                [embeddings.parse_embed(model, data, "EmbedContentRequest")]
            entry.update(texts=len(parsed), task_types=sorted({p.task_type for p in parsed}),
                         output_dimensionality=sorted({p.dimensions for p in parsed}))
            injected = self.faults.take(model, rpc)
            if injected is not None:
                self._apply(injected, entry, delay, what=f"injected {rpc} fault")
            vectors = self._vectors(parsed)
            response = _json({"embeddings": [{"values": v} for v in vectors]} if batch
                             else {"embedding": {"values": vectors[0]}})
        except ApiError as exc:
            entry["status"], entry["error"] = exc.code, exc.message
            response = _error(exc)
        if delay[0] > 0:
            self._stopping.wait(delay[0] / 1000)
        self.log.append(entry)
        return response

    def _vectors(self, parsed: list[embeddings.EmbedRequest]) -> list[list[float]]:
        # the local model is loaded on the first embedding request: an emulator that only generates never does
        from agex.adapters.local_embeddings import LocalEmbedder

        out: list[list[float]] = [[] for _ in parsed]
        kinds: tuple[EmbeddingKind, ...] = ("document", "query")
        for kind in kinds:
            at = [i for i, p in enumerate(parsed) if p.kind == kind]
            if at:
                found = LocalEmbedder().embed([parsed[i].text for i in at], kind=kind)
                for i, vector in zip(at, found, strict=True):
                    out[i] = embeddings.sized(vector, parsed[i].dimensions)
        return out

    # -- generateContent ------------------------------------------------------------

    def _generate(self, request: Request, model: str, stream: bool) -> Response:
        entry: dict[str, Any] = {
            "model": model,
            "turn": None,
            "scenario": None,
            "first_user_text": None,
            "status": 200,
            "at": time.time(),
            "fault": None,
            "error": None,
            "cached_content": None,
        }
        delay = [self.latency_ms]
        try:
            payload = self._answer(request, model, entry, delay)
            if stream:
                # the answer's delay is spread over its chunks, as a model writes
                response, delay[0] = self._stream_response(request, payload, delay[0]), 0
            else:
                response = _json(payload)
        except ApiError as exc:
            entry["status"] = exc.code
            entry["error"] = exc.message
            response = _error(exc)
        if delay[0] > 0:
            self._stopping.wait(delay[0] / 1000)
        self.log.append(entry)
        return response

    def _answer(
        self, request: Request, model: str, entry: dict[str, Any], delay: list[int]
    ) -> dict[str, Any]:
        if not _has_credentials(request):
            raise ApiError(403, _MISSING_KEY_MESSAGE, "PERMISSION_DENIED")
        raw = request.get_data(cache=False)
        if self.keep_bodies:
            entry["body"] = raw.decode("utf-8", "replace")
        data = load_generate_body(raw)
        cache_name = data.get("cachedContent", data.get("cached_content"))
        if cache_name is None:
            parsed = parse_generate_data(model, data)
        else:
            if not isinstance(cache_name, str) or not cache_name:
                raise invalid("* GenerateContentRequest.cached_content: expected a resource name")
            entry["cached_content"] = cache_name
            cache = self.caches.get(cache_name, count=False)
            if cache.model != model:
                raise invalid(f"Model used by GenerateContent request (models/{model}) and CachedContent "
                              f"(models/{cache.model}) has to be the same.")
            if any(k in data for k in ("systemInstruction", "system_instruction", "tools", "toolConfig",
                                       "tool_config")):
                raise invalid("Tool config, tools and system instruction should not be set in the request "
                              "when using cached content.")
            parsed = parse_generate_data(model, cache.applied_to(data), cached_tokens=cache.tokens)
        entry["turn"] = parsed.model_turns
        entry["first_user_text"] = parsed.first_user_text

        # Injected faults come first: an overloaded backend fails before it looks at
        # the request, so they apply even when no scenario would match.
        injected = self.faults.take(model)
        if injected is not None:
            self._apply(injected, entry, delay, what="injected fault")

        scenarios = self.scenarios
        found = scenarios.find(parsed)
        if found is None:
            raise invalid(
                f"Gemini emulator: no scenario matched (model {model!r}, first user text "
                f"{_clip(parsed.first_user_text)!r}, system instruction {_clip(parsed.system_text or '')!r}). "
                f"Add a scenario file to {scenarios.directory} whose `match` covers this request."
            )
        scenario, regex_match = found
        entry["scenario"] = scenario.name
        reply = scenario.reply(parsed, regex_match)
        if reply.fault is not None and self.turn_faults.should_fault(parsed.digest, reply.fault.times):
            effect = FaultEffect(
                status=reply.fault.status, delay_ms=reply.fault.delay_ms or 0, source="scenario"
            )
            self._apply(
                effect, entry, delay, what=f"scenario {scenario.name!r} turn {parsed.model_turns} fault"
            )
        return build_response(parsed, reply.text, reply.function_calls)

    @staticmethod
    def _apply(effect: FaultEffect, entry: dict[str, Any], delay: list[int], what: str) -> None:
        entry["fault"] = effect.source
        delay[0] += effect.delay_ms
        if effect.status is not None:
            message = _FAULT_MESSAGES.get(effect.status, f"Simulated HTTP {effect.status}.")
            raise ApiError(effect.status, f"{message} ({what} from the Gemini emulator)")

    def _stream_response(self, request: Request, payload: dict[str, Any], delay_ms: int) -> Response:
        chunks = stream_chunks(payload)
        if request.args.get("alt") != "sse":
            return _json(chunks)
        pause = delay_ms / 1000 / len(chunks)

        def events() -> Iterator[bytes]:
            for chunk in chunks:
                if pause:
                    self._stopping.wait(pause)
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\r\n\r\n".encode()

        return Response(events(), mimetype="text/event-stream", direct_passthrough=True)


STREAM_CHUNK_WORDS = 3


def stream_chunks(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """A streamed answer as the real API sends it: the text a few words per chunk, then a last chunk with the
    calls, the usage and the finish reason."""
    candidate = (payload.get("candidates") or [None])[0]
    if not candidate or not candidate.get("content"):
        return [payload]
    parts = candidate["content"].get("parts") or []
    words = re.findall(r"\S+\s*", "".join(p.get("text", "") for p in parts if "text" in p))
    pieces = ["".join(words[i:i + STREAM_CHUNK_WORDS]) for i in range(0, len(words), STREAM_CHUNK_WORDS)]
    calls = [p for p in parts if "text" not in p]
    if len(pieces) <= 1:
        return [payload]
    head = {k: v for k, v in payload.items() if k not in ("candidates", "usageMetadata")}
    chunks = [{**head, "candidates": [{"content": {"role": "model", "parts": [{"text": piece}]}, "index": 0}]}
              for piece in pieces[:-1]]
    last = {**candidate, "content": {"role": "model", "parts": [{"text": pieces[-1]}, *calls]}}
    return [*chunks, {**payload, "candidates": [last]}]


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
