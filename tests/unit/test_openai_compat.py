"""The OpenAI-compatible adapter's mapping of answers the emulator does not give: those of Ollama,
vLLM and llama.cpp's server, which differ from OpenAI's in small ways."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from agex.adapters.openai_compat import _raise_for, chat_request, chat_response
from agex.core.errors import ModelError, TransientError
from agex.core.messages import FunctionCall, Message, ModelRequest, Part
from agex.core.tool import RAW_ARGUMENTS, ToolContext, tool


def completion(message: dict[str, Any], finish_reason: str | None = "stop", **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "qwen2.5:0.5b",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
            **extra}


def test_an_ollama_tool_call_without_a_usage_block() -> None:
    response = chat_response(completion({"content": "", "tool_calls": [
        {"id": "call_x1", "index": 0, "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}, "tool_calls"))
    assert response.message.parts == [Part(function_call=FunctionCall(id="call_x1", name="get_weather",
                                                                      args={"city": "Paris"}))]
    assert response.finish_reason == "tool_calls" and response.model_version == "qwen2.5:0.5b"
    assert response.usage.input_tokens == 0 and response.usage.output_tokens == 0


def test_usage_text_and_tolerated_variants() -> None:
    response = chat_response(completion(
        {"content": "Sunny.", "reasoning_content": "thinking out loud", "tool_calls": [
            {"type": "function", "function": {"name": "a", "arguments": {"x": 1}}},  # an object, no id
            {"id": "c2", "type": "function", "function": {"name": "b", "arguments": ""}}]},
        usage={"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}))
    assert response.message.text == "Sunny."
    assert response.message.function_calls == [FunctionCall(id="call-0", name="a", args={"x": 1}),
                                               FunctionCall(id="c2", name="b", args={})]
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 5)


@pytest.mark.parametrize("raw", ['{"city": "Par', '["Paris"]'])
def test_arguments_that_are_no_json_object_reach_the_tool_as_raw_text(raw: str) -> None:
    [call] = chat_response(completion({"content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": raw}}]})
    ).message.function_calls
    assert call.args == {"_raw": raw}


def test_a_blocked_answer_is_a_model_error_and_a_cut_one_is_kept() -> None:
    with pytest.raises(ModelError, match="content filter"):
        chat_response(completion({"content": None}, "content_filter"))
    cut = chat_response(completion({"content": "Part of"}, "content_filter"))
    assert cut.message.text == "Part of" and cut.finish_reason == "content_filter"
    with pytest.raises(ModelError, match="no choice"):
        chat_response({"choices": []})


def test_several_texts_of_a_user_message_travel_as_one_string() -> None:
    body = chat_request(ModelRequest(model="m", system="", messages=[
        Message(role="user", parts=[Part(text="a"), Part(text="b")])]))
    assert body == {"model": "m", "messages": [{"role": "user", "content": "a\n\nb"}]}


def answer(status: int, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers,
                          request=httpx.Request("POST", "http://127.0.0.1:8000/v1/chat/completions"))


@pytest.mark.parametrize(("response", "error", "says"), [
    (answer(400, error={"message": "bad tools", "type": "invalid_request_error"}), ModelError, r"\(400\): bad tools"),
    (answer(404, error="model 'llama9' not found"), ModelError, "llama9"),  # Ollama's native shape
    (answer(400, object="error", message="context too long", code=400), ModelError, "context too long"),  # vLLM
    (answer(503, {"Retry-After": "30"}, error={"message": "loading model"}), TransientError,
     r"503 \(retry after 30 s\): loading model"),
    (answer(408), TransientError, "408"),
])
def test_error_answers(response: httpx.Response, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says):
        _raise_for(response)


class SearchArgs(BaseModel):
    limit: int = 10


SEARCHED: list[int] = []


@tool
def search(args: SearchArgs, ctx: ToolContext) -> dict[str, int]:
    """Search with an optional limit."""
    SEARCHED.append(args.limit)
    return {"found": 0}


def test_a_call_whose_arguments_were_not_json_is_a_tool_error_not_a_call_with_defaults() -> None:
    ctx = ToolContext(tenant="t", run_id="r", step=1, call_id="c", idempotency_key="k")
    outcome = search.call({RAW_ARGUMENTS: "{limit: 5"}, ctx)
    assert not outcome.ok and "not a JSON object" in outcome.output["error"] and SEARCHED == []
