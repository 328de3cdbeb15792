"""The model port: the library's FunctionModel, the Gemini adapter on the Gemini emulator (through the
real google-genai client) and the OpenAI-compatible adapter on the OpenAI emulator, which serves the same
scenario. All must honour the same contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agex.adapters.gcp.gemini import GeminiModel
from agex.adapters.openai_compat import OpenAICompatibleModel
from agex.core.errors import ModelError, TransientError
from agex.core.messages import FunctionResponse, Message, ModelRequest, Part, ToolSpec
from agex.dev.emulators.gcloud import free_port, start_python_emulator
from agex.ports.model import Model
from agex.testing import FunctionModel

SCENARIO = """
name: weather
match: {system_contains: "weather assistant", input_regex: "weather in (\\\\w+)"}
turns:
  - function_calls: [{name: get_weather, args: {city: "{input.1}"}}]
  - text: "It is sunny in {input.1}."
"""
TOOLS = [ToolSpec(name="get_weather", description="Weather of a city.",
                  parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})]
SYSTEM = "You are a weather assistant."


@pytest.fixture(scope="module")
def gemini_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    scenarios: Path = tmp_path_factory.mktemp("scenarios")
    (scenarios / "weather.yaml").write_text(SCENARIO)
    with start_python_emulator("agex.dev.emulators.gemini",
                               ["--host", "127.0.0.1", "--port", "0", "--scenarios", str(scenarios)]) as proc:
        yield f"http://127.0.0.1:{proc.port}"


@pytest.fixture(scope="module")
def openai_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    scenarios: Path = tmp_path_factory.mktemp("openai-scenarios")
    (scenarios / "weather.yaml").write_text(SCENARIO)
    with start_python_emulator("agex.dev.emulators.openai",
                               ["--host", "127.0.0.1", "--port", "0", "--scenarios", str(scenarios)]) as proc:
        yield f"http://127.0.0.1:{proc.port}/v1"


def scripted(request: ModelRequest) -> Any:
    if not any(m.role == "model" for m in request.messages):
        return [("get_weather", {"city": "Paris"})]
    return "It is sunny in Paris."


@pytest.fixture(params=["function", "gemini", "openai"])
def model(request: pytest.FixtureRequest) -> Model:
    if request.param == "function":
        return FunctionModel(scripted)
    if request.param == "openai":
        return OpenAICompatibleModel(request.getfixturevalue("openai_url"), timeout_seconds=10)
    return GeminiModel(api_key="local", base_url=request.getfixturevalue("gemini_url"), timeout_seconds=10)


def ask(text: str) -> ModelRequest:
    return ModelRequest(model="gemini-2.5-flash", system=SYSTEM, messages=[Message(role="user", parts=[Part(text=text)])],
                        tools=TOOLS)


def test_a_tool_call_round_trip(model: Model) -> None:
    first = model.request(ask("What's the weather in Paris?"))
    assert first.message.role == "model"
    [call] = first.message.function_calls
    assert call.name == "get_weather" and call.args == {"city": "Paris"} and call.id
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0
    follow = ask("What's the weather in Paris?").model_copy(update={"messages": [
        *ask("What's the weather in Paris?").messages, first.message,
        Message(role="user", parts=[Part(function_response=FunctionResponse(
            id=call.id, name=call.name, response={"sky": "sunny"}))])]})
    second = model.request(follow)
    assert second.message.function_calls == []
    assert second.message.text == "It is sunny in Paris."


def test_the_same_request_gets_the_same_answer(model: Model) -> None:
    a, b = model.request(ask("What's the weather in Paris?")), model.request(ask("What's the weather in Paris?"))
    assert a.message == b.message and a.usage == b.usage


# --- Gemini adapter only: error translation at the edge -----------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 503])
def test_gemini_quota_and_server_errors_are_transient(gemini_url: str, status: int) -> None:
    httpx.post(f"{gemini_url}/_emulator/faults", json={"status": status, "count": 1}).raise_for_status()
    with pytest.raises(TransientError, match=str(status)):
        GeminiModel(api_key="local", base_url=gemini_url).request(ask("What's the weather in Paris?"))


def test_a_request_gemini_refuses_is_a_model_error(gemini_url: str) -> None:
    with pytest.raises(ModelError, match="400"):
        GeminiModel(api_key="local", base_url=gemini_url).request(ask("Tell me a joke"))


def test_an_unreachable_gemini_is_transient() -> None:
    with pytest.raises(TransientError):
        GeminiModel(api_key="local", base_url=f"http://127.0.0.1:{free_port()}", timeout_seconds=2).request(
            ask("What's the weather in Paris?"))


# --- OpenAI-compatible adapter only: the same translation at its edge ---------------------------------


@pytest.mark.parametrize("status", [429, 500, 503])
def test_openai_quota_and_server_errors_are_transient(openai_url: str, status: int) -> None:
    httpx.post(f"{openai_url.removesuffix('/v1')}/_emulator/faults", json={"status": status, "count": 1}
               ).raise_for_status()
    with pytest.raises(TransientError, match=str(status)):
        OpenAICompatibleModel(openai_url).request(ask("What's the weather in Paris?"))


def test_a_request_the_openai_server_refuses_is_a_model_error(openai_url: str) -> None:
    with pytest.raises(ModelError, match="400.*no scenario matched"):
        OpenAICompatibleModel(openai_url).request(ask("Tell me a joke"))


def test_an_unreachable_openai_server_is_transient() -> None:
    with pytest.raises(TransientError, match="could not be reached"):
        OpenAICompatibleModel(f"http://127.0.0.1:{free_port()}/v1", timeout_seconds=2).request(
            ask("What's the weather in Paris?"))
