"""The model port: the library's FunctionModel, the Gemini adapter on the Gemini emulator (through the
real google-genai client) and the OpenAI-compatible adapter on the OpenAI emulator, which serves the same
scenario. All must honour the same contract. The Gemini adapter's context caching is tested on the same
emulator, whose ``cachedContents`` behave as the Gemini API's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agex.adapters.gcp.gemini import CACHE_NAME_PREFIX, GeminiModel
from agex.adapters.openai_compat import OpenAICompatibleModel
from agex.core.errors import ConfigurationError, ModelError, TransientError
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


def test_a_streamed_answer_is_the_answer_request_gives(model: Model) -> None:
    first = model.request(ask("What's the weather in Paris?"))
    follow = ask("What's the weather in Paris?").model_copy(update={"messages": [
        *ask("What's the weather in Paris?").messages, first.message,
        Message(role="user", parts=[Part(function_response=FunctionResponse(
            id=first.message.function_calls[0].id, name="get_weather", response={"sky": "sunny"}))])]})
    pieces: list[str] = []
    streamed = model.stream(follow, pieces.append)
    assert streamed == model.request(follow)
    assert "".join(pieces) == streamed.message.text == "It is sunny in Paris."
    if isinstance(model, GeminiModel):
        assert len(pieces) > 1  # Gemini streams: the text came in pieces, as it was written
    calls: list[str] = []
    assert model.stream(ask("What's the weather in Paris?"), calls.append) == first and calls == []


def test_gemini_stream_errors_are_translated_like_requests(gemini_url: str) -> None:
    httpx.post(f"{gemini_url}/_emulator/faults", json={"status": 503, "count": 1}).raise_for_status()
    with pytest.raises(TransientError, match="503"):
        GeminiModel(api_key="local", base_url=gemini_url).stream(ask("What's the weather in Paris?"), print)
    with pytest.raises(ModelError, match="400"):
        GeminiModel(api_key="local", base_url=gemini_url).stream(ask("Tell me a joke"), print)


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


# --- Gemini adapter only: context caching -------------------------------------------------------------

# about 3,000 tokens of instructions: over 2.5 Flash's minimum cache (1,024), as an agent's long brief is
LONG_SYSTEM = SYSTEM + " Answer about the weather with care, name your sources and say how sure you are." * 150


def ask_long(text: str, model: str = "gemini-2.5-flash") -> ModelRequest:
    return ask(text).model_copy(update={"system": LONG_SYSTEM, "model": model})


@pytest.fixture
def emulator(gemini_url: str) -> str:
    httpx.post(f"{gemini_url}/_emulator/reset").raise_for_status()
    return gemini_url


def caches(url: str) -> dict[str, Any]:
    shown: dict[str, Any] = httpx.get(f"{url}/_emulator/caches").json()
    return shown


def generations(url: str) -> list[tuple[str | None, int]]:
    """(cached content named, status) of every generateContent request, in order."""
    return [(e["cached_content"], e["status"]) for e in httpx.get(f"{url}/_emulator/requests").json()["requests"]]


def test_gemini_caches_a_long_prefix_once_and_reuses_it(emulator: str) -> None:
    model = GeminiModel(api_key="local", base_url=emulator, timeout_seconds=10)
    first, second = model.request(ask_long("What's the weather in Paris?")), model.request(
        ask_long("What's the weather in Rome?"))
    shown = caches(emulator)
    assert shown["calls"]["create"] == 1 and shown["calls"]["list"] == 1
    (cache,) = shown["caches"]
    assert cache["displayName"].startswith(CACHE_NAME_PREFIX) and len(cache["displayName"]) == len(CACHE_NAME_PREFIX) + 64
    assert generations(emulator) == [(cache["name"], 200), (cache["name"], 200)]
    # the cached part is reported, within the whole prompt, which is still counted in full
    for response in (first, second):
        assert response.usage.cached_input_tokens == cache["cachedTokens"] > 1024
        assert response.usage.input_tokens > response.usage.cached_input_tokens
    # the model saw the cached instruction and tools as if sent: the same answer as without the cache
    plain = GeminiModel(api_key="local", base_url=emulator, cache="off").request(ask_long("What's the weather in Rome?"))
    assert second.message == plain.message and plain.usage.cached_input_tokens == 0
    assert plain.usage.input_tokens == second.usage.input_tokens
    [call] = first.message.function_calls
    assert call.name == "get_weather" and call.args == {"city": "Paris"}


def test_another_instance_finds_the_cache_by_its_name(emulator: str) -> None:
    GeminiModel(api_key="local", base_url=emulator).request(ask_long("What's the weather in Paris?"))
    other = GeminiModel(api_key="local", base_url=emulator)
    assert other.request(ask_long("What's the weather in Oslo?")).usage.cached_input_tokens > 0
    other.request(ask_long("What's the weather in Lima?"))
    shown = caches(emulator)
    assert shown["calls"] == {"create": 1, "list": 2, "get": 0, "update": 0, "delete": 0}
    (cache,) = shown["caches"]
    assert generations(emulator) == [(cache["name"], 200)] * 3


def test_each_model_and_each_prefix_gets_its_own_cache(emulator: str) -> None:
    model = GeminiModel(api_key="local", base_url=emulator)
    model.request(ask_long("What's the weather in Paris?"))
    model.request(ask_long("What's the weather in Paris?", model="gemini-2.5-pro"))  # under Pro's 4,096
    model.request(ask_long("What's the weather in Paris?").model_copy(update={"system": LONG_SYSTEM + " Be brief."}))
    shown = caches(emulator)
    assert shown["calls"]["create"] == 2 and len({c["displayName"] for c in shown["caches"]}) == 2
    assert [name is not None for name, _ in generations(emulator)] == [True, False, True]


def test_an_expired_cache_is_made_again_and_the_request_retried(emulator: str) -> None:
    model = GeminiModel(api_key="local", base_url=emulator)
    model.request(ask_long("What's the weather in Paris?"))
    (old,) = caches(emulator)["caches"]
    assert httpx.post(f"{emulator}/_emulator/caches/expire", json={"name": old["name"]}).json() == {"expired": 1}
    again = model.request(ask_long("What's the weather in Rome?"))
    assert again.message.function_calls[0].args == {"city": "Rome"} and again.usage.cached_input_tokens > 0
    (new,) = caches(emulator)["caches"]
    assert new["name"] != old["name"] and new["displayName"] == old["displayName"]
    assert generations(emulator) == [(old["name"], 200), (old["name"], 403), (new["name"], 200)]


def test_a_cache_that_cannot_be_made_leaves_the_requests_uncached(emulator: str) -> None:
    faults = f"{emulator}/_emulator/faults"
    httpx.post(faults, json={"status": 500, "count": 2, "method": "cachedContents.create"}).raise_for_status()
    model = GeminiModel(api_key="local", base_url=emulator)
    for city in ("Paris", "Rome"):
        response = model.request(ask_long(f"What's the weather in {city}?"))
        assert response.message.function_calls[0].args == {"city": city}
        assert response.usage.cached_input_tokens == 0
    # tried once, then left alone for a while: the second fault is still pending
    assert [f["remaining"] for f in httpx.get(faults).json()["pending"]] == [1]
    assert generations(emulator) == [(None, 200), (None, 200)] and caches(emulator)["caches"] == []


def test_a_cache_lost_twice_leaves_the_request_uncached(emulator: str) -> None:
    model = GeminiModel(api_key="local", base_url=emulator)
    model.request(ask_long("What's the weather in Paris?"))
    (old,) = caches(emulator)["caches"]
    # the cache expires, and the one made again is gone as soon as it is made
    httpx.post(f"{emulator}/_emulator/caches/expire", json={"made_next": 1}).raise_for_status()
    response = model.request(ask_long("What's the weather in Rome?"))
    assert response.message.function_calls[0].args == {"city": "Rome"} and response.usage.cached_input_tokens == 0
    assert caches(emulator)["calls"]["create"] == 2
    (_, first), (lost, second), (again, third), (none, fourth) = generations(emulator)
    assert (first, second, third, fourth) == (200, 403, 403, 200)
    assert lost == old["name"] and again not in (None, old["name"]) and none is None


def test_small_prompts_and_cache_off_are_never_cached(emulator: str) -> None:
    GeminiModel(api_key="local", base_url=emulator).request(ask("What's the weather in Paris?"))
    GeminiModel(api_key="local", base_url=emulator, cache="off").request(ask_long("What's the weather in Paris?"))
    assert caches(emulator) == {"caches": [], "calls": {"create": 0, "get": 0, "list": 0, "update": 0, "delete": 0}}
    assert generations(emulator) == [(None, 200), (None, 200)]
    with pytest.raises(ConfigurationError, match="auto or off"):
        GeminiModel(api_key="local", cache="always")


def test_concurrent_requests_with_one_prefix_make_one_cache(emulator: str) -> None:
    model = GeminiModel(api_key="local", base_url=emulator, timeout_seconds=10)
    answers: list[int] = []

    def one(i: int) -> None:
        answers.append(model.request(ask_long(f"What's the weather in City{i}?")).usage.cached_input_tokens)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 8 and all(n > 0 for n in answers)
    assert caches(emulator)["calls"]["create"] == 1
