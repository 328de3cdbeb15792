"""WSGI application: routing, optional API-key check, faults and the request log.

Scenarios, their matching and their per-turn faults are the Gemini emulator's, applied to the neutral
request ``wire.parse_chat_request`` builds; the admin endpoints are the same too, so a test or a
benchmark drives either emulator alike.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from agex.dev.emulators.gemini.scenario import ScenarioSet
from agex.dev.emulators.gemini.wire import ApiError
from agex.dev.emulators.scripted import ScriptedModelApp, json_response

from .wire import OpenAIError, build_completion, invalid, parse_chat_request

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

_COMPLETIONS_PATHS = ("/v1/chat/completions", "/chat/completions")
_MODELS_PATHS = ("/v1/models", "/models")

# What the real API says for these statuses, so logs read as in production.
_FAULTS: dict[int, tuple[str, str, str | None]] = {
    429: ("Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
    504: ("Gateway timeout.", "server_error", None),
}


_json = json_response


def _error(exc: OpenAIError, headers: dict[str, str] | None = None) -> Response:
    return _json(exc.body(), status=exc.status, headers=headers)


class _Fail(Exception):
    """A fault to answer with: the error and its ``Retry-After``."""

    def __init__(self, error: OpenAIError, retry_after_s: int | None) -> None:
        self.error, self.retry_after_s = error, retry_after_s


class EmulatorApp(ScriptedModelApp):
    invalid_json = "We could not parse the JSON body of your request."

    def __init__(self, scenarios: ScenarioSet, latency_ms: int = 0, log_size: int = 10_000,
                 keep_bodies: bool = False, api_key: str = "") -> None:
        self.api_key = api_key
        """Required as ``Authorization: Bearer`` when set; like Ollama or vLLM, none is needed otherwise."""
        super().__init__(scenarios, latency_ms, log_size, keep_bodies)

    def _api_error(self, status: int, message: str) -> Exception:
        return OpenAIError(status, message)

    def _invalid(self, message: str) -> Exception:
        return invalid(message)

    def _error_response(self, exc: Exception) -> Response | None:
        return _error(exc) if isinstance(exc, OpenAIError) else None

    def _internal_error(self, exc: Exception) -> Response:
        return _error(OpenAIError(500, f"OpenAI emulator internal error: {exc!r}", type="server_error"))

    # -- routing -------------------------------------------------------------------

    def _dispatch(self, request: Request) -> Response:
        path, method = request.path.rstrip("/") or "/", request.method
        if path == "/healthz":
            return self._health()
        if path.startswith("/_emulator/"):
            return self._admin(request, path.removeprefix("/_emulator/"), method)
        if path in _COMPLETIONS_PATHS and method == "POST":
            return self._complete(request)
        if path in _MODELS_PATHS and method == "GET":
            names = sorted({s.match.model for s in self.scenarios.scenarios if s.match.model})
            return _json({"object": "list", "data": [
                {"id": n, "object": "model", "created": 0, "owned_by": "agex-emulator"} for n in names]})
        raise OpenAIError(404, f"Invalid URL ({method} {request.path})")

    # -- chat completions -----------------------------------------------------------

    def _complete(self, request: Request) -> Response:
        entry: dict[str, Any] = {"model": None, "turn": None, "scenario": None, "first_user_text": None,
                                 "status": 200, "at": time.time(), "fault": None, "error": None}
        delay = [self.latency_ms]
        try:
            response = _json(self._answer(request, entry, delay))
        except _Fail as fail:
            response = self._failed(entry, fail.error, {"Retry-After": str(fail.retry_after_s)}
                                    if fail.retry_after_s is not None else None)
        except OpenAIError as exc:
            response = self._failed(entry, exc)
        if delay[0] > 0:
            self._stopping.wait(delay[0] / 1000)
        self.log.append(entry)
        return response

    @staticmethod
    def _failed(entry: dict[str, Any], exc: OpenAIError, headers: dict[str, str] | None = None) -> Response:
        entry["status"], entry["error"] = exc.status, exc.message
        return _error(exc, headers)

    def _answer(self, request: Request, entry: dict[str, Any], delay: list[int]) -> dict[str, Any]:
        self._authenticate(request)
        raw = request.get_data(cache=False)
        if self.keep_bodies:
            entry["body"] = raw.decode("utf-8", "replace")
        parsed = parse_chat_request(raw)
        entry.update(model=parsed.model, turn=parsed.model_turns, first_user_text=parsed.first_user_text)

        # Injected faults come first: an overloaded backend fails before it looks at the request.
        injected = self.faults.take(parsed.model)
        if injected is not None:
            entry["fault"] = "injected"
            delay[0] += injected.delay_ms
            if injected.status is not None:
                raise _Fail(_fault_error(injected.status, "injected fault"), injected.retry_after_s)

        scenarios = self.scenarios
        found = scenarios.find(parsed)
        if found is None:
            raise invalid(
                f"OpenAI emulator: no scenario matched (model {parsed.model!r}, first user text "
                f"{_clip(parsed.first_user_text)!r}, system message {_clip(parsed.system_text or '')!r}). "
                f"Add a scenario file to {scenarios.directory} whose `match` covers this request.")
        scenario, regex_match = found
        entry["scenario"] = scenario.name
        try:
            reply = scenario.reply(parsed, regex_match)
        except ApiError as exc:  # a scenario that cannot answer this request (a loop count that is no number)
            raise invalid(exc.message) from None
        if reply.fault is not None and self.turn_faults.should_fault(parsed.digest, reply.fault.times):
            entry["fault"] = "scenario"
            delay[0] += reply.fault.delay_ms or 0
            if reply.fault.status is not None:
                raise _Fail(_fault_error(reply.fault.status,
                                         f"scenario {scenario.name!r} turn {parsed.model_turns} fault"), None)
        return build_completion(parsed, reply.text, reply.function_calls)

    def _authenticate(self, request: Request) -> None:
        if not self.api_key:
            return
        auth = request.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise OpenAIError(401, "You didn't provide an API key. You need to provide your API key in an "
                                   "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        if auth[7:].strip() != self.api_key:
            raise OpenAIError(401, "Incorrect API key provided.", code="invalid_api_key")


def _fault_error(status: int, what: str) -> OpenAIError:
    message, kind, code = _FAULTS.get(status, (f"Simulated HTTP {status}.", "invalid_request_error", None))
    return OpenAIError(status, f"{message} ({what} from the OpenAI emulator)", type=kind, code=code)


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
