"""An agent's fallback models: tried in order when the one before cannot answer (quota, servers, timeout,
safety), the routing decision recorded with the response (a redelivery reuses it), refusals never
retried on another model, and the last model's transient error left to Cloud Tasks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from agex.app.backends import Providers
from agex.core.agent import Agent
from agex.core.errors import ModelBlocked, ModelError, ModelUnavailable
from agex.core.messages import Message, ModelRequest, ModelResponse, Part, TokenUsage
from agex.core.run import EventKind, RunStatus
from agex.core.tool import ToolContext, tool
from agex.testing import FunctionModel
from agex.testing.harness import InMemoryRuntime

PRIMARY, CHEAP = "gemini-2.5-flash", "gemini-2.5-flash-lite"


def agent(**kw: Any) -> Agent:
    return Agent(name="helper", instructions="Answer.", model=PRIMARY, fallbacks=(CHEAP,), guards=(), **kw)


def model(failing: dict[str, Exception], seen: list[str]) -> FunctionModel:
    def answer(request: ModelRequest) -> str:
        seen.append(request.model)
        if request.model in failing:
            raise failing[request.model]
        return f"answered by {request.model}"

    return FunctionModel(answer)


def responses(rt: InMemoryRuntime, run: Any) -> list[dict[str, Any]]:
    return [e.data for e in rt.store.list_events(run.tenant, run.run_id) if e.kind == EventKind.model_response]


@pytest.mark.parametrize("error", [ModelUnavailable("429 quota", "quota"), ModelUnavailable("503", "server"),
                                   ModelUnavailable("timed out", "timeout"), ModelBlocked("blocked by safety")])
def test_a_model_that_cannot_answer_falls_back_and_the_decision_is_recorded(error: Exception) -> None:
    seen: list[str] = []
    rt = InMemoryRuntime([agent()], model({PRIMARY: error}, seen))
    run = rt.run("helper", "hello")
    assert run.status == RunStatus.succeeded and run.result == f"answered by {CHEAP}"
    (data,) = responses(rt, run)
    assert data["model"] == CHEAP and data["route"]["model"] == CHEAP
    assert data["route"]["failed"][0]["model"] == PRIMARY and data["route"]["failed"][0]["reason"] == error.reason  # type: ignore[attr-defined]
    assert seen == [PRIMARY, CHEAP]
    # priced as the model that answered
    assert run.usage.cost_usd == pytest.approx(rt.runtime.pricing.cost(
        CHEAP, run.usage.input_tokens, run.usage.output_tokens))


def test_the_primary_answering_records_no_route() -> None:
    rt = InMemoryRuntime([agent()], model({}, []))
    run = rt.run("helper", "hello")
    (data,) = responses(rt, run)
    assert data["model"] == PRIMARY and "route" not in data


def test_a_refusal_is_not_retried_on_another_model() -> None:
    seen: list[str] = []
    rt = InMemoryRuntime([agent()], model({PRIMARY: ModelError("400 bad request")}, seen))
    run = rt.run("helper", "hello")
    assert run.status == RunStatus.failed and run.error is not None and run.error.code == "model_error"
    assert seen == [PRIMARY]


def test_a_reason_the_agent_does_not_fall_back_on_leaves_the_step_to_cloud_tasks() -> None:
    seen: list[str] = []
    rt = InMemoryRuntime([agent(fallback_on=("quota",))], model({PRIMARY: ModelUnavailable("503", "server")}, seen))
    run = rt.start("helper", "hello")
    rt.drive()  # the delivery answers "retry later", as Cloud Tasks would be told
    assert set(seen) == {PRIMARY} and responses(rt, run) == []
    assert rt.store.get_run(run.tenant, run.run_id).status == RunStatus.running  # type: ignore[union-attr]


def test_when_every_model_is_out_of_quota_the_step_is_retried_later() -> None:
    seen: list[str] = []
    rt = InMemoryRuntime([agent()], model({PRIMARY: ModelUnavailable("429", "quota"),
                                           CHEAP: ModelUnavailable("429", "quota")}, seen))
    run = rt.start("helper", "hello")
    rt.drive()
    assert seen[:2] == [PRIMARY, CHEAP] and responses(rt, run) == []
    assert rt.store.get_run(run.tenant, run.run_id).status == RunStatus.running  # type: ignore[union-attr]


def test_fallbacks_are_distinct_and_priced() -> None:
    from agex.core.errors import ConfigurationError

    with pytest.raises(ValueError, match="distinct"):
        Agent(name="x", instructions="i", model=PRIMARY, fallbacks=(PRIMARY,))
    with pytest.raises(ConfigurationError, match="no price for model 'openai:qwen3'"):
        InMemoryRuntime([Agent(name="x", instructions="i", fallbacks=("openai:qwen3",))], model({}, []))


def test_a_prefixed_model_goes_to_its_provider_by_its_own_name() -> None:
    calls: list[tuple[str, str]] = []

    class Named(FunctionModel):
        def __init__(self, provider: str) -> None:
            super().__init__(lambda r: "ok")
            self.provider = provider

        def request(self, request: ModelRequest) -> ModelResponse:
            calls.append((self.provider, request.model))
            return ModelResponse(message=Message(role="model", parts=[Part(text="ok")]), usage=TokenUsage())

    providers = Providers(default="gemini", build={"gemini": lambda: Named("gemini"), "openai": lambda: Named("openai")})
    for name in ("gemini-2.5-flash", "openai:qwen3", "gemini:gemini-2.5-pro", "unknown:thing"):
        providers.request(ModelRequest(model=name, system="", messages=[]))
    assert calls == [("gemini", "gemini-2.5-flash"), ("openai", "qwen3"), ("gemini", "gemini-2.5-pro"),
                     ("gemini", "unknown:thing")]


def test_a_model_that_keeps_failing_is_skipped_by_every_instance_until_its_cooldown_ends() -> None:
    seen: list[str] = []
    failing: dict[str, Exception] = {PRIMARY: ModelUnavailable("429", "quota")}
    rt = InMemoryRuntime([agent()], model(failing, seen))
    for _ in range(5):  # the default policy: 5 failures within 30 s open the circuit for 60 s
        rt.run("helper", "hello")
    assert seen.count(PRIMARY) == 5
    seen.clear()
    run = rt.run("helper", "hello")  # the primary is not even asked
    assert seen == [CHEAP] and run.status == RunStatus.succeeded
    (data,) = responses(rt, run)
    assert data["route"]["failed"][0]["model"] == PRIMARY and data["route"]["failed"][0]["reason"] == "circuit_open"
    # another instance of the step function, on the same stores, honours the open circuit
    other = rt.runtime.runner
    rt.redeploy([agent()])
    assert rt.runner is not other
    seen.clear()
    rt.run("helper", "hello")
    assert seen == [CHEAP]
    # after the cool-down the primary is asked again, and answers
    failing.clear()
    rt.clock.advance(61)
    seen.clear()
    rt.run("helper", "hello")
    assert seen == [PRIMARY]


def test_a_small_step_goes_to_the_cheaper_model_and_says_why() -> None:
    from agex.core.agent import ModelRule

    seen: list[str] = []
    rt = InMemoryRuntime([agent(model_rules=(ModelRule(when="small_input", model=CHEAP, max_input_tokens=500),))],
                         model({}, seen))
    run = rt.run("helper", "hello")
    (data,) = responses(rt, run)
    assert seen == [CHEAP] and data["model"] == CHEAP and data["route"]["reason"].startswith("rule small_input")
    big = rt.run("helper", "x" * 4000)  # about 1,000 tokens: the agent's own model
    assert responses(rt, big)[0]["model"] == PRIMARY


class Lookup(BaseModel):
    key: str


@tool
def lookup(args: Lookup, ctx: ToolContext) -> dict[str, str]:
    """Look a key up."""
    raise LookupError(f"no {args.key}")


def test_after_a_tool_error_the_stronger_model_takes_the_next_step() -> None:
    from agex.core.agent import ModelRule

    seen: list[str] = []

    def answer(request: ModelRequest) -> Any:
        seen.append(request.model)
        return [("lookup", {"key": "a"})] if len(seen) == 1 else "could not find it"

    strong = "gemini-2.5-pro"
    rt = InMemoryRuntime([agent(tools=(lookup,), model_rules=(ModelRule(when="after_tool_error", model=strong),))],
                         FunctionModel(answer))
    run = rt.run("helper", "find a")
    assert seen == [PRIMARY, strong] and run.status == RunStatus.succeeded
    second = responses(rt, run)[1]
    assert second["model"] == strong and "after_tool_error" in second["route"]["reason"]
