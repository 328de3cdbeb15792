"""The OpenAI chat-completions emulator, at the wire (httpx) and through the OpenAI-compatible adapter.

One emulator process serves the module (startup dominates runtime); an autouse fixture resets its
state (faults, request log, per-turn fault counters) before each test.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agex.adapters.openai_compat import OpenAICompatibleModel
from agex.core.errors import ModelError, TransientError
from agex.core.messages import FunctionResponse, Message, ModelRequest, Part, ToolSpec
from agex.dev.emulators.gcloud import EmulatorProcess, start_python_emulator

MODEL = "llama3.2"
SCENARIOS: dict[str, str] = {
    "flaky.yaml": """
name: flaky
match: {input_regex: "^flaky$"}
turns:
  - text: "first"
    fault: {status: 503, times: 2}
""",
    "greet.yaml": """
name: greet
match: {input_regex: "^hello"}
turns:
  - text: "Hi there!"
""",
    "loop.yaml": """
name: loop
match: {input_regex: "^loop (\\\\d+)$"}
loop: {count: "{input.1}", function_call: {name: tick, args: {n: "{turn}"}}, final_text: "looped {input.1} times"}
""",
    "slow.yaml": """
name: slow
match: {input_regex: "^slow$"}
turns:
  - text: "late"
    fault: {delay_ms: 1500}
""",
    "support-refund.yaml": """
name: support-refund
match: {system_contains: "customer support", input_regex: "refund.*order (A-\\\\d+)"}
turns:
  - function_calls: [{name: lookup_order, args: {order_id: "{input.1}"}}, {name: policy, args: {n: 3}}]
  - text: "Refund for {input.1} approved"
""",
}
SYSTEM = "You are a customer support agent."
TOOLS = [{"type": "function", "function": {"name": name, "description": f"{name} tool",
                                           "parameters": {"type": "object", "properties": {}}}}
         for name in ("lookup_order", "policy")]


@pytest.fixture(scope="module")
def scenarios_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("openai-scenarios")
    for name, text in SCENARIOS.items():
        (d / name).write_text(text, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def emulator(scenarios_dir: Path) -> Iterator[EmulatorProcess]:
    proc = start_python_emulator("agex.dev.emulators.openai", ["--port", "0", "--scenarios", str(scenarios_dir),
                                                               "--keep-bodies"])
    yield proc
    proc.stop()
    assert proc.popen.returncode == 0, "the emulator did not exit cleanly on SIGTERM"


@pytest.fixture
def base(emulator: EmulatorProcess) -> str:
    url = f"http://127.0.0.1:{emulator.port}"
    httpx.post(f"{url}/_emulator/reset").raise_for_status()
    return url


def chat(base: str, messages: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", json={"model": MODEL, "messages": messages, **extra})


def logged(base: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{base}/_emulator/requests").json()["requests"])


def test_ready_line_names_the_bound_loopback_port(emulator: EmulatorProcess) -> None:
    assert re.fullmatch(r"READY http=127\.0\.0\.1:\d+", emulator.ready_line)
    assert emulator.port > 0


def test_a_text_answer_with_deterministic_usage(base: str) -> None:
    r = chat(base, [{"role": "user", "content": "hello world"}])
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Hi there!", "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": math.ceil(len("hello world") / 4),
                             "completion_tokens": math.ceil(len("Hi there!") / 4),
                             "total_tokens": math.ceil(11 / 4) + math.ceil(9 / 4)}
    assert chat(base, [{"role": "user", "content": "hello world"}]).json()["id"] == body["id"]


def test_tool_calls_and_their_answers(base: str) -> None:
    opening: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM},
                                     {"role": "user", "content": [{"type": "text", "text": "refund for order A-7 please"}]}]
    first = chat(base, opening, tools=TOOLS).json()
    [choice] = first["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("function", "lookup_order", {"order_id": "A-7"}), ("function", "policy", {"n": 3})]
    assert chat(base, opening, tools=TOOLS).json()["choices"][0]["message"]["tool_calls"] == calls  # same ids

    answers = [{"role": "tool", "tool_call_id": c["id"], "content": '{"ok": true}'} for c in calls]
    second = chat(base, [*opening, choice["message"], *answers], tools=TOOLS).json()
    assert second["choices"][0]["message"]["content"] == "Refund for A-7 approved"
    assert [(e["scenario"], e["turn"], e["status"]) for e in logged(base)] == [
        ("support-refund", 0, 200), ("support-refund", 0, 200), ("support-refund", 1, 200)]


CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup_order", "arguments": "{}"}}


@pytest.mark.parametrize(("messages", "param", "says"), [
    ([{"role": "model", "content": "hi"}], "messages[0].role", "Invalid value: 'model'"),
    ([{"role": "user"}], "messages[0].content", "Missing required parameter"),
    ([{"role": "user", "content": "hello"}, {"role": "tool", "tool_call_id": "x", "content": "{}"}],
     "messages[1].role", "must be a response to a preceeding message with 'tool_calls'"),
    ([{"role": "user", "content": "hello"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
      {"role": "user", "content": "hello"}], "messages", "did not have response messages: call_1"),
    ([{"role": "user", "content": "hello"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
      {"role": "tool", "tool_call_id": "call_2", "content": "{}"}], "messages[2].tool_call_id", "not found"),
    ([{"role": "user", "content": "hello"}, {"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "function": {"name": "lookup_order", "arguments": {}}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "{}"}],
     "messages[1].tool_calls[0].function.arguments", "expected a string, but got an object"),
])
def test_what_the_real_api_rejects_is_rejected(base: str, messages: list[dict[str, Any]], param: str,
                                               says: str) -> None:
    r = chat(base, messages)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and says in error["message"]


def test_bad_tool_names_streaming_and_unknown_paths(base: str) -> None:
    bad = [{"type": "function", "function": {"name": "has space"}}]
    assert chat(base, [{"role": "user", "content": "hello"}], tools=bad).json()["error"]["param"] == \
        "tools[0].function.name"
    assert chat(base, [{"role": "user", "content": "hello"}], stream=True).status_code == 400
    assert httpx.post(f"{base}/v1/completions", json={}).json()["error"]["message"] == \
        "Invalid URL (POST /v1/completions)"
    assert httpx.get(f"{base}/v1/models").json()["object"] == "list"


def test_injected_faults_answer_n_times_with_retry_after(base: str) -> None:
    httpx.post(f"{base}/_emulator/faults", json={"status": 429, "count": 2, "retry_after_s": 7}).raise_for_status()
    for _ in range(2):
        r = chat(base, [{"role": "user", "content": "hello"}])
        assert r.status_code == 429 and r.headers["retry-after"] == "7"
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert chat(base, [{"role": "user", "content": "hello"}]).status_code == 200
    httpx.post(f"{base}/_emulator/faults", json={"status": 500}).raise_for_status()
    with pytest.raises(TransientError, match="answered 500"):
        OpenAICompatibleModel(f"{base}/v1").request(ask("hello"))
    httpx.post(f"{base}/_emulator/faults", json={"status": 429, "retry_after_s": 7}).raise_for_status()
    with pytest.raises(TransientError, match=r"answered 429 \(retry after 7 s\): Rate limit reached"):
        OpenAICompatibleModel(f"{base}/v1").request(ask("hello"))
    assert [e["fault"] for e in logged(base)] == ["injected", "injected", None, "injected", "injected"]


def test_faults_can_target_one_model(base: str) -> None:
    httpx.post(f"{base}/_emulator/faults", json={"status": 503, "model": "other"}).raise_for_status()
    assert chat(base, [{"role": "user", "content": "hello"}]).status_code == 200
    assert len(httpx.get(f"{base}/_emulator/faults").json()["pending"]) == 1


def test_a_scenario_turn_fault_fails_the_first_tries_only(base: str) -> None:
    statuses = [chat(base, [{"role": "user", "content": "flaky"}]).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]


def test_a_slow_answer_is_a_transient_timeout(base: str) -> None:
    with pytest.raises(TransientError, match="ReadTimeout"):
        OpenAICompatibleModel(f"{base}/v1", timeout_seconds=0.5).request(ask("slow"))


def ask(text: str, system: str = "", messages: list[Message] | None = None) -> ModelRequest:
    return ModelRequest(model=MODEL, system=system, messages=messages or [
        Message(role="user", parts=[Part(text=text)])])


def test_what_the_adapter_sends(base: str) -> None:
    model = OpenAICompatibleModel(f"{base}/v1", headers={"X-Tenant": "t1"})
    tools = [ToolSpec(name="lookup_order", description="Finds an order.", parameters={"type": "object"})]
    opening = Message(role="user", parts=[Part(text="refund for order A-9")])
    first = model.request(ModelRequest(model=MODEL, system=SYSTEM, messages=[opening], tools=tools))
    assert first.finish_reason == "tool_calls" and first.model_version == MODEL
    results = Message(role="user", parts=[Part(function_response=FunctionResponse(
        id=c.id, name=c.name, response={"status": "délivré"})) for c in first.message.function_calls])
    final = model.request(ModelRequest(model=MODEL, system=SYSTEM, messages=[opening, first.message, results],
                                       tools=tools))
    assert final.message.text == "Refund for A-9 approved" and final.finish_reason == "stop"

    sent = json.loads(logged(base)[-1]["body"])
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "lookup_order", "description": "Finds an order.", "parameters": {"type": "object"}}}]
    system, user, assistant, *tool_messages = sent["messages"]
    assert system == {"role": "system", "content": SYSTEM}
    assert user == {"role": "user", "content": "refund for order A-9"}
    assert assistant["role"] == "assistant" and assistant["content"] is None
    assert [c["id"] for c in assistant["tool_calls"]] == [c.id for c in first.message.function_calls]
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"order_id": "A-9"}
    assert tool_messages == [{"role": "tool", "tool_call_id": c.id, "content": '{"status": "délivré"}'}
                             for c in first.message.function_calls]


def test_a_windowed_history_keeps_counting_turns(base: str) -> None:
    # The engine opens a long run's window with the input and a note of the steps it hides.
    note = "(The 2 earlier steps of this run are not shown.)"
    opening = Message(role="user", parts=[Part(text="loop 3"), Part(text=note)])
    [call] = OpenAICompatibleModel(f"{base}/v1").request(ask("", messages=[opening])).message.function_calls
    assert call.name == "tick" and call.args == {"n": 2}
    assert logged(base)[-1]["first_user_text"] == "loop 3"


def test_an_api_key_is_checked_when_the_server_has_one(scenarios_dir: Path) -> None:
    with start_python_emulator("agex.dev.emulators.openai", ["--port", "0", "--scenarios", str(scenarios_dir),
                                                             "--api-key", "sekret"]) as proc:
        url = f"http://127.0.0.1:{proc.port}/v1"
        with pytest.raises(ModelError, match=r"\(401\): You didn't provide an API key"):
            OpenAICompatibleModel(url).request(ask("hello"))
        with pytest.raises(ModelError, match=r"\(401\): Incorrect API key"):
            OpenAICompatibleModel(url, api_key="wrong").request(ask("hello"))
        assert OpenAICompatibleModel(url, api_key="sekret").request(ask("hello")).message.text == "Hi there!"


def test_an_invalid_scenario_directory_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\nturns: []\n")
    done = subprocess.run([sys.executable, "-m", "agex.dev.emulators.openai", "--check", "--scenarios",
                           str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "bad.yaml" in done.stderr


def test_a_thread_turn_is_answered_after_the_turns_before_it(base: str) -> None:
    from agex.core.thread import ThreadContext, Turn
    from agex.engine.conversation import rebuild

    earlier = [Turn(run_id=f"r{i}", input=f"loop {i}", answer=f"looped {i} times", at="2026-01-01T00:00:00Z")
               for i in range(2)]
    for context in (ThreadContext(turns=earlier, summary="they looped"), ThreadContext(summary="they looped")):
        messages, _ = rebuild("loop 3", [], 1, context=context)
        [call] = OpenAICompatibleModel(f"{base}/v1").request(ask("", messages=messages)).message.function_calls
        assert call.name == "tick" and call.args == {"n": 0}
        assert logged(base)[-1]["first_user_text"] == "loop 3"
