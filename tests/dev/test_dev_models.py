"""``agex dev --model``: which model the agents run on locally. The real Gemini API cannot be reached from
the tests; an OpenAI-compatible endpoint can: the OpenAI emulator serving the sample agent's scenarios,
as a local Ollama or vLLM would serve a real model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agex.cli.client import Client
from agex.core.errors import ConfigurationError
from agex.dev import models
from agex.dev.embedded import Embedded, EmbeddedConfig
from agex.dev.emulators.gcloud import start_python_emulator
from agex.dev.stack import REPO


def test_the_emulator_is_the_default_and_needs_nothing() -> None:
    assert models.settings_for("emulator", environ={}) == {}


def test_gemini_needs_a_key_or_vertex_and_says_where_to_get_one() -> None:
    with pytest.raises(models.ModelChoiceError, match="GEMINI_API_KEY"):
        models.settings_for("gemini", environ={})
    chosen = models.settings_for("gemini", environ={"GEMINI_API_KEY": "k"})
    assert chosen["AGEX_GEMINI_API_KEY"] == "k" and chosen["AGEX_GEMINI_BASE_URL"] == ""  # the real endpoint
    assert models.settings_for("gemini", environ={"AGEX_VERTEX": "true"})["AGEX_VERTEX"] == "true"


def test_a_local_model_is_priced_at_zero_and_a_remote_one_must_be_priced() -> None:
    chosen = models.settings_for("openai", environ={})
    assert chosen["AGEX_OPENAI_BASE_URL"] == models.OLLAMA_URL and chosen["AGEX_MODEL"] == "llama3.2"
    assert json.loads(chosen["AGEX_PRICES"]) == {"llama3.2": {"input_per_mtok": 0.0, "output_per_mtok": 0.0}}
    assert "priced at $0" in models.describe("openai", chosen)
    with pytest.raises(models.ModelChoiceError, match="AGEX_PRICES"):
        models.settings_for("openai", "qwen3", environ={"OPENAI_BASE_URL": "https://llm.example.com/v1"})
    priced = models.settings_for("openai", "qwen3", environ={
        "OPENAI_BASE_URL": "https://llm.example.com/v1",
        "AGEX_PRICES": json.dumps({"qwen3": {"input_per_mtok": 0.2, "output_per_mtok": 0.6}})})
    assert json.loads(priced["AGEX_PRICES"])["qwen3"]["output_per_mtok"] == 0.6


def test_an_unpriced_model_is_refused_at_start_with_what_to_set() -> None:
    from agex.app.backends import Backends
    from agex.app.runtime import Runtime
    from agex.app.settings import Settings
    from agex.testing import FunctionModel

    settings = Settings.model_construct(model="llama3.2", agents="examples.support_agent:agent", fleet_file="")
    with pytest.raises(ConfigurationError, match=r"AGEX_PRICES.*0 and 0 for a model you run yourself"):
        _ = Runtime(settings, Backends.in_memory(lambda agent: FunctionModel(lambda r: "hi"))).agents


@pytest.fixture(scope="module")
def openai_url() -> Iterator[str]:
    with start_python_emulator("agex.dev.emulators.openai", [
            "--host", "127.0.0.1", "--port", "0", "--scenarios", str(REPO / "examples" / "scenarios")]) as proc:
        yield f"http://127.0.0.1:{proc.port}/v1"


def test_the_sample_agent_runs_on_an_openai_compatible_endpoint(openai_url: str, tmp_path: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGEX_EXAMPLE_LEDGER", str(tmp_path / "refunds.sqlite"))
    chosen = models.settings_for("openai", environ={"OPENAI_BASE_URL": openai_url})
    config = EmbeddedConfig(api_port=0, model_settings=chosen)
    with Embedded(config) as system:
        client = Client(system.api_url, "dev-token")
        agent = next(a for a in client.agents() if a["name"] == "support")
        assert agent["model"] == "llama3.2"  # the chosen model, priced at zero, recorded as such
        run = client.start_run("support", "Hi, refund order A-1187: the socks have a hole.")
        for _ in range(600):
            final = client.run(run["run_id"])
            if final["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.05)
        assert final["status"] == "succeeded", final
        assert final["usage"]["model_calls"] == 4 and final["usage"]["cost_usd"] == 0.0
        assert "$24.00" in (final["result"] or "")


def test_the_endpoints_key_is_read_from_secret_manager_with_the_functions_own_identity(tmp_path: Any) -> None:
    from agex.adapters.gcp.secret_manager import ensure_secret
    from agex.app.backends import Backends
    from agex.app.settings import Settings
    from agex.core.agent import Agent
    from agex.core.messages import Message, ModelRequest, Part
    from agex.dev.emulators.secretmanager.client import make_client
    from agex.dev.stack import ADMIN

    settings = Settings.model_construct(project="agex-test", model_provider="openai",
                                        openai_api_key_secret="llm-api-key", model_timeout_seconds=10.0)
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "hello.yaml").write_text("name: hello\nmatch: {system_contains: 'greeter'}\nturns: [{text: hi}]\n")
    with start_python_emulator("agex.dev.emulators.secretmanager", ["--host", "127.0.0.1", "--port", "0",
                                                                     "--admin", ADMIN]) as secrets, \
            start_python_emulator("agex.dev.emulators.openai", ["--host", "127.0.0.1", "--port", "0", "--scenarios",
                                                                str(scenarios), "--api-key", "sk-local"]) as llm:
        host = secrets.endpoints["grpc"]
        ensure_secret(make_client(host, ADMIN), "agex-test", "llm-api-key", "sk-local", [settings.step_service_account])
        settings = settings.model_copy(update={"secrets_emulator_host": host,
                                               "openai_base_url": f"http://127.0.0.1:{llm.port}/v1"})
        model = Backends.gcp(settings).models()(Agent(name="greeter", instructions="You are a greeter."))
        answer = model.request(ModelRequest(model="llama3.2", system="You are a greeter.",
                                            messages=[Message(role="user", parts=[Part(text="hello")])]))
        assert answer.message.text == "hi"  # the emulator refuses any other key with 401
