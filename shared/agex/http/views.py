"""What the API returns, as pydantic models: they give both the responses and the OpenAPI schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agex.agent import Agent
from agex.run import Event, RunHead, RunStatus


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UsageView(_View):
    input_tokens: int
    output_tokens: int
    cost_usd: float
    model_calls: int


class ErrorView(_View):
    code: str
    message: str


class RunLinks(_View):
    self: str
    events: str
    cancel: str


class RunView(_View):
    run_id: str
    agent: str
    agent_version: str
    status: RunStatus
    step: int = Field(description="Steps committed so far.")
    input: str
    metadata: dict[str, str]
    usage: UsageView
    result: str | None = Field(description="The agent's final answer, once the run succeeded.")
    error: ErrorView | None = Field(description="Why the run failed, was cancelled or expired.")
    created_at: datetime
    updated_at: datetime
    expire_at: datetime
    links: RunLinks

    @classmethod
    def of(cls, head: RunHead, base: str = "") -> RunView:
        self_link = f"{base}/v1/runs/{head.run_id}"
        return cls(run_id=head.run_id, agent=head.agent, agent_version=head.agent_version, status=head.status,
                   step=head.step, input=head.input, metadata=head.metadata,
                   usage=UsageView(**head.usage.model_dump()), result=head.result,
                   error=ErrorView(**head.error.model_dump()) if head.error else None,
                   created_at=head.created_at, updated_at=head.updated_at, expire_at=head.expire_at,
                   links=RunLinks(self=self_link, events=f"{self_link}/events", cancel=f"{self_link}:cancel"))


class EventView(_View):
    seq: int
    step: int
    kind: str
    at: datetime
    data: dict[str, Any]

    @classmethod
    def of(cls, event: Event) -> EventView:
        return cls(seq=event.seq, step=event.step, kind=event.kind.value, at=event.at, data=event.data)


class EventsPage(_View):
    events: list[EventView]
    next_page_token: str | None = Field(description="Pass as page_token to get the next page; null at the end.")


class ToolView(_View):
    name: str
    description: str
    idempotent: bool
    parameters: dict[str, Any]


class AgentView(_View):
    name: str
    version: str
    description: str
    model: str
    tools: list[ToolView]
    limits: dict[str, Any]

    @classmethod
    def of(cls, agent: Agent) -> AgentView:
        return cls(name=agent.name, version=agent.version, description=agent.description, model=agent.model,
                   tools=[ToolView(name=t.name, description=t.description, idempotent=t.idempotent,
                                   parameters=t.spec().parameters) for t in agent.tools],
                   limits=agent.limits.model_dump())


class AgentList(_View):
    agents: list[AgentView]


class ErrorBody(_View):
    error: ErrorView
