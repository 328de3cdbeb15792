"""OpenAI chat-completions wire format: request validation, the neutral request scenarios match on, the
answer, and the error shape.

Validation follows the real API's rules (and, where practical, its messages) for what an agent runtime
sends: roles, content, tool calls and their pairing with ``tool`` messages, and tool declarations. A
server that accepted what OpenAI rejects would hide adapter bugs until production.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from agex.dev.emulators.gemini.wire import HISTORY_NOTE, GenerateRequest, canonical_json, count_tokens

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# The engine opens a windowed history with this note after the input; joined to the input as one string.
_TRAILING_NOTE = re.compile(r"\n\n(\(The \d+ earlier steps of this run are not shown\.\))$")
# The memories a runtime recalled for the run follow its input (before a history note): joined to the input too.
_RECALL_NOTE = re.compile(r"\n\n(\(Remembered from earlier conversations with this user.*\))$", re.DOTALL)
_THREAD_OPENING = re.compile(r"^\(Conversation so far: (\d+) earlier turns follow\..*?\)(?:\n\n|$)", re.DOTALL)
"""A thread's turn opens with the turns before it (the gemini emulator's ``THREAD_NOTE``), the note joined to the
first user message's other parts: a scenario answers the run's own conversation after them."""


class OpenAIError(Exception):
    """An error answered in OpenAI's JSON error shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _texts(content: Any, where: str, *, required: bool) -> list[str]:
    """The text parts of a message's content: a string, or an array of content parts."""
    if content is None:
        if required:
            raise invalid(f"Missing required parameter: '{where}'.", where, "missing_required_parameter")
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise invalid(f"Invalid type for '{where}': expected one of a string or array of objects, but got "
                      f"{_kind(content)} instead.", where, "invalid_type")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise invalid(f"Missing required parameter: '{where}[{j}].type'.", f"{where}[{j}].type",
                          "missing_required_parameter")
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                raise invalid(f"Missing required parameter: '{where}[{j}].text'.", f"{where}[{j}].text",
                              "missing_required_parameter")
            texts.append(part["text"])
    return texts


def _tool_calls(calls: Any, where: str) -> list[str]:
    if not isinstance(calls, list):
        raise invalid(f"Invalid type for '{where}': expected an array, but got {_kind(calls)} instead.", where,
                      "invalid_type")
    ids = []
    for j, call in enumerate(calls):
        at = f"{where}[{j}]"
        if not isinstance(call, dict):
            raise invalid(f"Invalid type for '{at}': expected an object, but got {_kind(call)} instead.", at,
                          "invalid_type")
        for key in ("id", "type", "function"):
            if key not in call:
                raise invalid(f"Missing required parameter: '{at}.{key}'.", f"{at}.{key}",
                              "missing_required_parameter")
        if call["type"] != "function":
            raise invalid(f"Invalid value: '{call['type']}'. Supported values are: 'function'.", f"{at}.type",
                          "invalid_value")
        function = call["function"]
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid(f"Missing required parameter: '{at}.function.name'.", f"{at}.function.name",
                          "missing_required_parameter")
        if not isinstance(function.get("arguments"), str):
            raise invalid(f"Invalid type for '{at}.function.arguments': expected a string, but got "
                          f"{_kind(function.get('arguments'))} instead.", f"{at}.function.arguments", "invalid_type")
        ids.append(str(call["id"]))
    return ids


def _validate_tools(tools: Any) -> None:
    if not isinstance(tools, list):
        raise invalid(f"Invalid type for 'tools': expected an array, but got {_kind(tools)} instead.", "tools",
                      "invalid_type")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise invalid(f"Invalid 'tools[{i}]': expected an object with type 'function' and a 'function'.",
                          f"tools[{i}]", "invalid_value")
        name = function.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise invalid(f"Invalid 'tools[{i}].function.name': string does not match pattern. Expected a "
                          "string that matches the pattern '^[a-zA-Z0-9_-]+$'.", f"tools[{i}].function.name",
                          "invalid_value")
        if "parameters" in function and not isinstance(function["parameters"], dict):
            raise invalid(f"Invalid type for 'tools[{i}].function.parameters': expected an object.",
                          f"tools[{i}].function.parameters", "invalid_type")


def parse_chat_request(body: bytes) -> GenerateRequest:
    """Validates a chat-completions body; returns the provider-neutral request scenarios match on."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid(f"We could not parse the JSON body of your request. ({exc})") from None
    if not isinstance(data, dict):
        raise invalid("We could not parse the JSON body of your request: expected an object.")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("you must provide a model parameter", "model")
    if data.get("stream"):
        raise invalid("The OpenAI emulator answers whole completions only: send `stream: false`.", "stream",
                      "unsupported_value")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid(f"{messages!r} is too short - 'messages'" if messages == [] else
                      "Missing required parameter: 'messages'.", "messages")
    if "tools" in data and data["tools"] is not None:
        _validate_tools(data["tools"])

    chars = len(canonical_json(data["tools"])) if data.get("tools") else 0
    system: list[str] = []
    first_user: list[str] | None = None
    user_texts: list[str] = []
    assistants = 0
    pending: list[str] = []  # ids of the last assistant message's tool calls not answered yet
    after_calls = False  # in the run of tool messages that follows an assistant's tool calls
    conversation = -1  # index among user and assistant messages
    own = 0  # where the run's own conversation starts, after a thread's earlier turns
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise invalid(f"Invalid type for '{where}': expected an object, but got {_kind(m)} instead.", where,
                          "invalid_type")
        role = m.get("role")
        if role not in _ROLES:
            raise invalid(f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                          "'function', 'tool', and 'developer'.", f"{where}.role", "invalid_value")
        if role != "tool" and pending:
            raise _unanswered(pending)
        if role == "tool":
            if not after_calls:
                raise invalid("Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                              "message with 'tool_calls'.", f"{where}.role")
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                raise invalid(f"Missing required parameter: '{where}.tool_call_id'.", f"{where}.tool_call_id",
                              "missing_required_parameter")
            if call_id not in pending:
                raise invalid(f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in 'tool_calls' of "
                              "previous message.", f"{where}.tool_call_id")
            pending.remove(call_id)
            chars += sum(map(len, _texts(m.get("content"), f"{where}.content", required=True)))
            continue
        after_calls = False
        if role in ("user", "assistant"):
            conversation += 1
        if role == "assistant":
            assistants += conversation >= own
            texts = _texts(m.get("content"), f"{where}.content", required="tool_calls" not in m)
            if m.get("tool_calls"):
                pending = _tool_calls(m["tool_calls"], f"{where}.tool_calls")
                after_calls = True
                chars += len(canonical_json(m["tool_calls"]))
        else:
            texts = _texts(m.get("content"), f"{where}.content", required=True)
            if role == "user":
                user_texts.extend(texts)
            if role in ("system", "developer"):
                system.extend(texts)
            elif role == "user" and conversation == 0 and texts and (thread := _THREAD_OPENING.match(texts[0])):
                own = 2 * int(thread.group(1))
                if own == 0:
                    first_user = [texts[0][thread.end():], *texts[1:]]
            elif role == "user" and first_user is None and conversation >= own:
                first_user = list(texts)
        chars += sum(map(len, texts))
    if pending:
        raise _unanswered(pending)

    first_text, omitted = _opening(first_user or [])
    digest = hashlib.sha256(canonical_json({"model": model, "messages": messages}).encode("utf-8")).hexdigest()
    return GenerateRequest(model=model, system_text="\n".join(system) if system else None,
                           first_user_text=first_text, model_turns=assistants + omitted,
                           prompt_tokens=count_tokens(chars), digest=digest, user_texts=tuple(user_texts))


def _unanswered(ids: list[str]) -> OpenAIError:
    return invalid("An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                   f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(ids)}",
                   "messages")


def _opening(texts: list[str]) -> tuple[str, int]:
    """The run's input and the number of steps the history window hides, from the first user message:
    the note is its own text part, or the end of the one string an adapter joined the parts into (after the
    recalled memories, which are not the input either: an input_regex sees what it would see on Gemini)."""
    if not texts:
        return "", 0
    first, omitted = texts[0], 0
    trailing = _TRAILING_NOTE.search(first)
    if trailing is not None:
        first, texts = first[:trailing.start()], [first[:trailing.start()], trailing.group(1)]
    recalled = _RECALL_NOTE.search(first)
    if recalled is not None:
        first = first[:recalled.start()]
    for text in texts[1:]:
        note = HISTORY_NOTE.match(text)
        if note is not None:
            omitted = int(note.group(1))
    return first, omitted


def build_completion(request: GenerateRequest, text: str | None,
                     function_calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """A chat completion in the real API's shape. Ids derive from the request digest, so a retried
    request gets the same completion and call ids."""
    calls = [{"id": f"call_{request.digest[:16]}_{i}", "type": "function",
              "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}
             for i, (name, args) in enumerate(function_calls)]
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    output_tokens = count_tokens(len(text or "") + (len(canonical_json(calls)) if calls else 0))
    return {
        "id": f"chatcmpl-{request.digest[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "system_fingerprint": "agex-emulator",
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": request.prompt_tokens, "completion_tokens": output_tokens,
                  "total_tokens": request.prompt_tokens + output_tokens},
    }
