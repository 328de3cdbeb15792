"""Gemini REST wire format: request validation, response building and the error shape.

The emulator is only useful if it rejects what the real API rejects, so validation here
mirrors the real API's rules (and, where practical, its messages) for the parts of a
``GenerateContentRequest`` an agent runtime touches: contents, roles, parts, function
call/response pairing, system instruction and tools. Fields the emulator does not
interpret (``generationConfig`` contents, safety settings, ...) are accepted as-is.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

# HTTP status -> google.rpc.Code name, as the real API reports it in `error.status`.
STATUS_NAMES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",  # not a google.rpc code; the real API answers 404 here
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def status_name(code: int) -> str:
    return STATUS_NAMES.get(code, "UNKNOWN")


class ApiError(Exception):
    """An error answered in Gemini's JSON error format."""

    def __init__(self, code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or status_name(code)

    def body(self) -> dict[str, Any]:
        # The real API's shape; google-genai reads code/message/status from `error`.
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


def invalid(message: str) -> ApiError:
    return ApiError(400, message, "INVALID_ARGUMENT")


# The `data` oneof of a Part. The real API accepts proto field names in either JSON
# spelling (the client itself sends some snake_case keys, e.g. `parameters_json_schema`),
# so both are recognised; the value is the canonical camelCase name.
_PART_DATA_FIELDS: dict[str, str] = {}
for _camel, _snake in (
    ("text", "text"),
    ("inlineData", "inline_data"),
    ("fileData", "file_data"),
    ("functionCall", "function_call"),
    ("functionResponse", "function_response"),
    ("executableCode", "executable_code"),
    ("codeExecutionResult", "code_execution_result"),
    ("toolCall", "tool_call"),
    ("toolResponse", "tool_response"),
):
    _PART_DATA_FIELDS[_camel] = _camel
    _PART_DATA_FIELDS[_snake] = _camel

_VALID_ROLES = ("user", "model")


def _get(obj: dict[str, Any], camel: str, snake: str | None = None) -> Any:
    if camel in obj:
        return obj[camel]
    return obj.get(snake) if snake else None


def canonical_json(value: Any) -> str:
    """Stable JSON so hashes and token counts do not depend on key order."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def count_tokens(chars: int) -> int:
    # Deterministic stand-in for a tokenizer: ~4 characters per token, rounded up.
    return math.ceil(chars / 4)


def part_chars(part: dict[str, Any]) -> int:
    """Characters a part contributes to token counts: its text, or its JSON otherwise."""
    text = part.get("text")
    if isinstance(text, str):
        return len(text)
    return len(canonical_json(part))


HISTORY_NOTE = re.compile(r"^\(The (\d+) earlier steps of this run are not shown\.\)$")
"""Agent Executor shows long runs to the model through a window and says how many steps it hides;
those steps each had one model turn, so they count towards the turn index of scripted scenarios."""
THREAD_NOTE = re.compile(r"^\(Conversation so far: (\d+) earlier turns follow\..*\)$", re.DOTALL)
"""A turn of an Agent Executor thread opens with the turns before it (a user and a model content each): a
scenario answers the run's own conversation, after them, as if it were alone."""


@dataclass(frozen=True)
class GenerateRequest:
    """The parts of a validated request that scenarios and responses depend on."""

    model: str
    system_text: str | None
    first_user_text: str
    # Number of role "model" contents: the index of the model turn being requested.
    model_turns: int
    prompt_tokens: int
    # Hash of model + system instruction + contents. Everything derived from it (call
    # ids, responseId, per-turn fault bookkeeping) is identical for a retried request.
    digest: str
    # The part of prompt_tokens a cachedContent supplied (reported as cachedContentTokenCount).
    cached_tokens: int = 0
    # Every user text part of the request, in order (a thread's earlier turns and the notes a runtime adds
    # after the input included): what `match.context_regex` reads.
    user_texts: tuple[str, ...] = ()

    @property
    def context_text(self) -> str:
        """The user text parts joined with newlines, as `match.context_regex` searches them."""
        return "\n".join(self.user_texts)


def _part_kind(part: Any, where: str) -> str:
    if not isinstance(part, dict):
        raise invalid(f"* GenerateContentRequest.{where}: expected a Part object, got {type(part).__name__}")
    kinds = [_PART_DATA_FIELDS[k] for k in part if k in _PART_DATA_FIELDS]
    if not kinds:
        raise invalid(
            f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have one initialized field"
        )
    if len(kinds) > 1:
        raise invalid(
            f"* GenerateContentRequest.{where}.data: oneof field 'data' is already set. Cannot set '{kinds[1]}'"
        )
    kind = kinds[0]
    value = _get(part, kind, _snake_of(kind))
    if kind == "text" and not isinstance(value, str):
        raise invalid(f"* GenerateContentRequest.{where}.text: expected a string")
    if kind in ("functionCall", "functionResponse"):
        field = "function_call" if kind == "functionCall" else "function_response"
        if not isinstance(value, dict):
            raise invalid(f"* GenerateContentRequest.{where}.{field}: expected an object")
        name = value.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(f"* GenerateContentRequest.{where}.{field}.name: Name cannot be empty.")
        payload_key = "args" if kind == "functionCall" else "response"
        if payload_key in value and not isinstance(value[payload_key], dict):
            raise invalid(f"* GenerateContentRequest.{where}.{field}.{payload_key}: expected a JSON object")
    return kind


def _snake_of(camel: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in camel)


def validate_content(
    content: Any, where: str, role_required: bool
) -> tuple[str, list[dict[str, Any]], list[str]]:
    """Returns (role, parts, part kinds) for a Content object, or raises INVALID_ARGUMENT."""
    if not isinstance(content, dict):
        raise invalid(
            f"* GenerateContentRequest.{where}: expected a Content object, got {type(content).__name__}"
        )
    role = content.get("role")
    if role in (None, ""):
        # The real API treats an unset role in `contents` as "user".
        role = "user"
    elif not role_required:
        pass  # systemInstruction's role is ignored by the real API
    elif role not in _VALID_ROLES:
        raise invalid(f"* GenerateContentRequest.{where}.role: Please use a valid role: user, model.")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise invalid(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
    kinds = [_part_kind(p, f"{where}.parts[{j}]") for j, p in enumerate(parts)]
    return str(role), parts, kinds


def load_generate_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a generateContent body, or INVALID_ARGUMENT."""
    if not body.strip():
        raise invalid("Request body is empty: expected a JSON GenerateContentRequest with `contents`.")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid(f"Invalid JSON payload received. {exc}") from None
    if not isinstance(data, dict):
        raise invalid(
            f"Invalid JSON payload received. Expected a GenerateContentRequest object, got {type(data).__name__}."
        )
    return data


def parse_generate_request(model: str, body: bytes) -> GenerateRequest:
    """Validates a generateContent body and extracts what the emulator needs."""
    return parse_generate_data(model, load_generate_body(body))


def parse_generate_data(model: str, data: dict[str, Any], cached_tokens: int = 0) -> GenerateRequest:
    """Validates a generateContent request (with a cachedContent's parts already put in, whose tokens are
    ``cached_tokens``) and extracts what the emulator needs."""
    contents = data.get("contents")
    if contents is None or contents == []:
        raise invalid("* GenerateContentRequest.contents: contents is not specified")
    if not isinstance(contents, list):
        raise invalid("* GenerateContentRequest.contents: expected a list of Content objects")

    chars = 0
    omitted = 0
    first_user_text: str | None = None
    user_texts: list[str] = []
    roles: list[str] = []
    kinds_per_content: list[list[str]] = []
    own = 0  # where the run's own conversation starts, after a thread's earlier turns
    for i, content in enumerate(contents):
        role, parts, kinds = validate_content(content, f"contents[{i}]", role_required=True)
        roles.append(role)
        kinds_per_content.append(kinds)
        for j, (part, kind) in enumerate(zip(parts, kinds, strict=True)):
            chars += part_chars(part)
            if role == "user" and kind == "text":
                user_texts.append(part["text"])
            if i == 0 and j == 0 and kind == "text" and (thread := THREAD_NOTE.match(part["text"])):
                own = 2 * int(thread.group(1))
                continue
            if i < own:
                continue
            if role == "user" and kind == "text" and first_user_text is None:
                first_user_text = part["text"]
            elif i == own and kind == "text" and (note := HISTORY_NOTE.match(part["text"])):
                omitted = int(note.group(1))
    check_function_turns(roles, kinds_per_content)

    system = _get(data, "systemInstruction", "system_instruction")
    system_text: str | None = None
    if system is not None:
        _, sys_parts, sys_kinds = validate_content(system, "system_instruction", role_required=False)
        texts = [p["text"] for p, k in zip(sys_parts, sys_kinds, strict=True) if k == "text"]
        system_text = "\n".join(texts)
        chars += sum(part_chars(p) for p in sys_parts)

    tools = data.get("tools")
    if tools is not None:
        validate_tools(tools)
        chars += sum(len(canonical_json(t)) for t in tools)

    config = _get(data, "generationConfig", "generation_config")
    if config is not None and not isinstance(config, dict):
        raise invalid("* GenerateContentRequest.generation_config: expected a GenerationConfig object")

    digest = hashlib.sha256(
        canonical_json({"model": model, "system": system, "contents": contents}).encode("utf-8")
    ).hexdigest()
    return GenerateRequest(
        model=model,
        system_text=system_text,
        first_user_text=first_user_text or "",
        model_turns=roles[own:].count("model") + omitted,
        prompt_tokens=count_tokens(chars),
        digest=digest,
        cached_tokens=cached_tokens,
        user_texts=tuple(user_texts),
    )


def prefix_chars(data: dict[str, Any]) -> int:
    """Characters of what a cachedContent holds (contents, system instruction, tools), counted as a
    request counts them, so its cached tokens are the part of the prompt they make."""
    chars = 0
    for content in data.get("contents") or []:
        chars += sum(part_chars(p) for p in content.get("parts") or [])
    system = _get(data, "systemInstruction", "system_instruction")
    if system is not None:
        chars += sum(part_chars(p) for p in system.get("parts") or [])
    chars += sum(len(canonical_json(t)) for t in data.get("tools") or [])
    return chars


def check_function_turns(roles: list[str], kinds: list[list[str]]) -> None:
    """Enforces the real API's pairing rules between function call and response turns.

    Gemini rejects histories where a function call turn is not answered by a turn with
    the same number of function responses; agent runtimes get this wrong easily when
    they persist and replay conversations, so the emulator catches it too.
    """
    for i, (role, ks) in enumerate(zip(roles, kinds, strict=True)):
        calls = ks.count("functionCall")
        responses = ks.count("functionResponse")
        if role == "model" and calls:
            if i == 0 or roles[i - 1] != "user":
                raise invalid(
                    "Please ensure that function call turn comes immediately after a user turn or after a function response turn."
                )
            if i + 1 < len(roles):
                answered = kinds[i + 1].count("functionResponse") if roles[i + 1] == "user" else 0
                if answered != calls:
                    raise invalid(
                        "Please ensure that the number of function response parts is equal to the number of "
                        f"function call parts of the function call turn (contents[{i}] has {calls} function "
                        f"call(s), contents[{i + 1}] has {answered} function response(s))."
                    )
        if responses and (role != "user" or i == 0 or "functionCall" not in kinds[i - 1]):
            raise invalid(
                "Please ensure that function response turn comes immediately after a function call turn."
            )


def validate_tools(tools: Any) -> None:
    if not isinstance(tools, list):
        raise invalid("* GenerateContentRequest.tools: expected a list of Tool objects")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise invalid(f"* GenerateContentRequest.tools[{i}]: expected a Tool object")
        decls = _get(tool, "functionDeclarations", "function_declarations")
        if decls is None:
            continue
        if not isinstance(decls, list):
            raise invalid(f"* GenerateContentRequest.tools[{i}].function_declarations: expected a list")
        for j, decl in enumerate(decls):
            name = decl.get("name") if isinstance(decl, dict) else None
            if not isinstance(name, str) or not name:
                raise invalid(
                    f"* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: Name cannot be empty."
                )


def build_response(
    request: GenerateRequest, text: str | None, function_calls: list[tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    """A GenerateContentResponse in the real API's JSON shape (camelCase)."""
    parts: list[dict[str, Any]] = []
    if text is not None:
        parts.append({"text": text})
    for i, (name, args) in enumerate(function_calls):
        # Ids derive from the request digest so a retried request gets the same ids.
        parts.append({"functionCall": {"id": f"call_{request.digest[:16]}_{i}", "name": name, "args": args}})
    output_tokens = count_tokens(sum(part_chars(p) for p in parts))
    usage = {
        "promptTokenCount": request.prompt_tokens,
        "candidatesTokenCount": output_tokens,
        "totalTokenCount": request.prompt_tokens + output_tokens,
    }
    if request.cached_tokens:
        # the real API leaves the field out when nothing came from a cache
        usage["cachedContentTokenCount"] = request.cached_tokens
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": usage,
        "modelVersion": request.model,
        "responseId": request.digest[:24],
    }
