"""Agent definitions and the registry the functions load them from."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agex.core.approval import ApprovalPolicy
from agex.core.errors import ConfigurationError, FallbackReason, NotFound, TransientError
from agex.core.guard import DEFAULT_GUARDS, Guard, GuardSpec, Hook
from agex.core.memory import MemoryPolicy
from agex.core.metrics import Evaluator, Watch
from agex.core.run import Limits
from agex.core.spend import SLO
from agex.core.tool import Tool


class ModelRule(BaseModel):
    """A cost-aware routing rule: ask ``model`` first for steps that match (docs/models.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    when: Literal["small_input", "after_tool_error", "asks"]
    """``small_input``: the step sends about ``max_input_tokens`` or fewer (a cheaper model will do);
    ``after_tool_error``: a tool call of the previous step failed (a stronger model may recover); ``asks``: the
    latest text the user sent (the run's input) matches ``pattern``, case-insensitively (``summar(y|ise|ize)``:
    a summary needs no strong model)."""
    model: str = Field(min_length=1)
    max_input_tokens: int = Field(default=2000, ge=1)
    pattern: str = ""

    @model_validator(mode="after")
    def _pattern_compiles(self) -> ModelRule:
        if self.when == "asks":
            if not self.pattern:
                raise ValueError("a rule when: asks needs a pattern")
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"rule pattern {self.pattern!r} is not a regular expression: {e}") from e
        return self


class Agent(BaseModel):
    """What a team writes: instructions, a model, typed tools and limits."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    version: str = "1"
    description: str = ""
    instructions: str
    model: str = "gemini-2.5-flash"
    fallbacks: tuple[str, ...] = ()
    """Models tried in order when the one before could not answer for a reason in ``fallback_on``: the same
    provider's (``gemini-2.5-flash-lite``) or the OpenAI-compatible endpoint's (``openai:qwen3``). The
    model that answered is recorded with its response; a redelivery reuses it (docs/models.md)."""
    fallback_on: tuple[FallbackReason, ...] = ("quota", "server", "timeout", "safety")
    model_rules: tuple[ModelRule, ...] = ()
    """Cost-aware routing: the first rule that matches a step puts its model before the agent's own (which,
    with the fallbacks, is still tried if the rule's cannot answer)."""
    tools: tuple[Tool, ...] = ()
    limits: Limits = Field(default_factory=Limits)
    context_window_steps: int = Field(default=20, ge=1, le=1000)
    """The model sees the run's input and the last this-many steps. Bounding the window keeps each
    step's reads and request size flat however long the run gets."""

    identity: str = ""
    """The service account the agent's tools act as (its secrets are read as it). Set from the fleet file;
    empty when agents come from ``AGEX_AGENTS``, which then gives ``agent-{name}@{project}``."""
    approvals: tuple[ApprovalPolicy, ...] = ()
    """Which tool calls wait for a human before they run (see docs/approvals.md). A tool may have several
    policies (tiers: over $50 a lead, over $1,000 finance): the first whose ``when`` holds decides."""
    guards: tuple[GuardSpec | Guard, ...] = DEFAULT_GUARDS
    """The guardrail chain, in order (see docs/guardrails.md): built-in guards by name (``GuardSpec``) and
    the agent's own ``Guard`` objects. On by default; ``()`` turns guarding off. The fleet file may add
    guards and tighten these per environment, never loosen them."""
    hooks: tuple[Hook, ...] = ()
    """Observers called after each step's commit and after the run ends (``agex.core.guard.Hook``)."""
    behaviour: dict[str, Any] = Field(default_factory=dict)
    """Configuration that shapes what the agent does beyond its instructions, model and tools (a retrieval
    setting, a goodwill factor, a prompt variant): part of the version's fingerprint, so changing it
    without bumping ``version`` is flagged (docs/observability.md). Values must be JSON."""
    watch: tuple[Watch, ...] = ()
    """Tool arguments whose values are behavioural metrics (recorded per run, tested for drift)."""
    evaluators: tuple[Evaluator, ...] = ()
    """Online evaluators: each scores a sampled share of the runs that end; scores are metrics too."""
    slo: SLO | None = None
    """A latency or error objective over recent runs; while its burn rate is high, steps degrade as it says
    (docs/models.md, "Degradation")."""
    stream_text: bool = True
    """While someone follows a run (``?follow=true``), its model's answer streams to them as the provider writes
    it, where the provider streams (Gemini). Off: followers see each answer once it is recorded."""
    memory: MemoryPolicy | None = None
    """Long-term memory (docs/memory.md): recall into the context, learning after each run, and conflicts between
    what is learned. None: the agent remembers nothing beyond its run (and its thread)."""
    operators: tuple[str, ...] = ()
    """Who may reconcile a non-idempotent call an attempt may have made before crashing (say it happened,
    retry it, or fail the run). Empty: the approvers of the tool's policy, or else anyone in the tenant."""

    @model_validator(mode="after")
    def _policies_name_tools(self) -> Agent:
        if len(set(self.fallbacks)) != len(self.fallbacks) or self.model in self.fallbacks:
            raise ValueError(f"agent {self.name!r}: fallbacks must be distinct models other than {self.model!r}")
        names = {t.name for t in self.tools}
        for w in self.watch:
            for tool in (w.tool, *([w.per.split(".", 1)[0]] if w.per else [])):
                if tool not in names:
                    raise ValueError(f"watched value {w.metric!r}: agent {self.name!r} has no tool {tool!r} "
                                     f"(tools: {', '.join(sorted(names)) or 'none'})")
        if len({w.metric for w in self.watch}) != len(self.watch):
            raise ValueError("two watched values have the same name; give one a name=")
        for e in self.evaluators:
            if not 0.0 <= e.sample <= 1.0:
                raise ValueError(f"evaluator {e.name!r}: sample must be between 0 and 1")
        for policy in self.approvals:
            if policy.tool not in names:
                raise ValueError(f"approval policy for {policy.tool!r}: agent {self.name!r} has no such tool "
                                 f"(tools: {', '.join(sorted(names)) or 'none'})")
        return self

    def tool(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)

    def reconcile_policy(self, tool: str) -> ApprovalPolicy:
        """How a human is asked what became of an uncertain call of ``tool``."""
        policy = next((p for p in self.approvals if p.tool == tool), None)
        who = self.operators or (policy.approvers if policy else ("*",))
        return ApprovalPolicy(
            tool=tool, approvers=who, four_eyes=False, allow_edits=False, expires_after_s=24 * 3600,
            on_expiry="fail", redact=policy.redact if policy else (),
            reason=f"{tool} is not idempotent and an attempt crashed while calling it: say whether it happened "
                   "(done), should be called again (retry), or the run should stop (fail).")

    def approval_policy(self, tool: str, args: dict[str, Any]) -> ApprovalPolicy | None:
        """The policy that holds this call for a human, if any: the first of the tool's that applies."""
        return next((p for p in self.approvals if p.tool == tool and p.applies(args)), None)


class VersionNotServed(TransientError):
    """A run's agent version is not served by this deployment, and no migration rule moves its runs. Retried:
    during a rolling deploy the next attempt may reach an instance that serves it; after a deploy that dropped a
    version still in use, redeploying it (``previous_versions`` in the fleet file) lets its runs go on. A run is
    never switched to another version silently (docs/versions.md)."""


class AgentRegistry:
    """The agents a deployment serves: for each name, its current version (what new runs start on) and the
    earlier versions still served to the runs that started on them, with the migration rules that move runs of
    one version to another."""

    def __init__(self, agents: Iterable[Agent] = (), *, previous: Iterable[Agent] = (),
                 migrations: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._agents: dict[str, Agent] = {}
        self._versions: dict[tuple[str, str], Agent] = {}
        for agent in agents:
            if agent.name in self._agents:
                raise ConfigurationError(f"two agents are named {agent.name!r}; agent names must be unique")
            self._agents[agent.name] = self._versions[(agent.name, agent.version)] = agent
        for agent in previous:
            if agent.name not in self._agents:
                raise ConfigurationError(f"an earlier version of agent {agent.name!r} is served, but not the agent")
            if (agent.name, agent.version) in self._versions:
                raise ConfigurationError(f"agent {agent.name!r} version {agent.version!r} is served twice; each "
                                         "earlier version must have its own version string")
            self._versions[(agent.name, agent.version)] = agent
        self._migrations = {name: dict(rules) for name, rules in (migrations or {}).items()}
        for name, rules in self._migrations.items():
            if name not in self._agents:
                raise ConfigurationError(f"migrations are declared for agent {name!r}, which is not served")
            for source, target in rules.items():
                if (name, target) not in self._versions:
                    raise ConfigurationError(f"agent {name!r}: the migration of version {source!r} names version "
                                             f"{target!r}, which is not served")
                if source == self._agents[name].version:
                    raise ConfigurationError(f"agent {name!r}: a migration moves runs of version {source!r}, the "
                                             "current one, which new runs start on")
                seen: set[str] = {source}
                step: str | None = target
                while step is not None:
                    if step in seen:
                        raise ConfigurationError(f"agent {name!r}: the migrations from version {source!r} go round "
                                                 "in a circle")
                    seen.add(step)
                    step = rules.get(step)

    def get(self, name: str) -> Agent:
        """The current version of the agent: the one new runs start on."""
        agent = self._agents.get(name)
        if agent is None:
            known = ", ".join(sorted(self._agents)) or "none"
            raise NotFound(f"unknown agent {name!r}; agents here: {known}")
        return agent

    def version(self, name: str, version: str) -> Agent | None:
        """That version of the agent, if this deployment serves it."""
        return self._versions.get((name, version))

    def versions(self, name: str) -> list[Agent]:
        """Every version of the agent served here, the current one first."""
        current = self.get(name)
        return [current, *(a for (n, v), a in self._versions.items() if n == name and v != current.version)]

    def migration(self, name: str, version: str) -> str | None:
        """The version a declared rule moves runs of ``version`` to, if there is one."""
        return self._migrations.get(name, {}).get(version)

    def for_run(self, name: str, version: str) -> tuple[Agent, str | None]:
        """The version a run started on ``version`` goes on with, and the version it migrates from when a rule
        moves it (the caller records the move). ``NotFound`` for an agent no longer deployed at all;
        ``VersionNotServed`` when the version is gone and no rule moves its runs."""
        current = self.get(name)
        target = self.migration(name, version)
        if target is not None:
            # rules chain (1 -> 2 -> 3) until a version with no rule (a cycle is refused at start)
            while (further := self.migration(name, target)) is not None:
                target = further
            return self._versions[(name, target)], version
        agent = self._versions.get((name, version))
        if agent is None:
            served = ", ".join(a.version for a in self.versions(name))
            raise VersionNotServed(f"agent {name!r} version {version!r} is not served here (served: {served}) and "
                                   f"no migration rule moves its runs; serve it again (previous_versions in the "
                                   f"fleet file) or declare a migration (migrate: {{{version!r}: "
                                   f"{current.version!r}}})")
        return agent, None

    def migrations(self) -> dict[str, dict[str, str]]:
        """The declared migration rules, by agent."""
        return {name: dict(rules) for name, rules in self._migrations.items()}

    def all(self) -> list[Agent]:
        """The current version of each agent, by name."""
        return [self._agents[n] for n in sorted(self._agents)]

    def every_version(self) -> list[Agent]:
        """Every version served, of every agent."""
        return [self._versions[k] for k in sorted(self._versions)]

    @classmethod
    def from_specs(cls, specs: Sequence[str]) -> AgentRegistry:
        """Load agents from ``module:attribute`` specs (an Agent or a list of them)."""
        agents: list[Agent] = []
        for spec in specs:
            module_name, _, attr = spec.partition(":")
            if not attr:
                raise ConfigurationError(f"agent spec {spec!r}: expected 'module:attribute'")
            try:
                value = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as e:
                raise ConfigurationError(f"agent spec {spec!r} cannot be loaded: {e}") from e
            agents.extend(value if isinstance(value, list | tuple) else [value])
        return cls(agents)
