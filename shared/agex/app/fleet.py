"""The fleet file: the one declaration of a deployment's agents, read by the runtime (``AGEX_FLEET_FILE``)
and by the fleet's Terraform (``yamldecode``), so the identities, grants and limits Terraform creates and
the agents the runtime runs cannot drift apart: the runtime refuses to start when they disagree.

```yaml
agents:
  support:                                   # the agent's name, as in its code
    module: examples.support_agent:agent     # where its code is
    identity: agent-support                  # its service account id (or a full email)
    secrets: [payments-api-key]              # Secret Manager secrets only this identity may read
    tools: [lookup_order, issue_refund]      # optional: checked against the code
    approvers: [manager@example.com]         # optional: checked against its approval policies
    budgets: {max_steps: 10, max_cost_usd: 0.5}   # optional: checked against its limits
    guards:                                  # optional: tighten the code's guardrail chain here (never loosen)
      - {use: provenance, action: block}
    canary: {enabled: true, schedule: "0 6 * * *", max_attack_success: 0.0}  # Terraform's red-team canary
    drift: {baseline_version: "3"}            # optional: pin the drift baseline (default: the previous version)
    previous_versions: [examples.support_agent_v1:agent]   # optional: earlier versions their runs finish on
    migrate: {"0": "1"}                      # optional: runs of version 0 go on with version 1 (recorded)
    queue: {max_dispatches_per_second: 50, max_concurrent_dispatches: 100}  # Terraform's; not checked here
prices:                                      # optional: models the built-in price table lacks, USD per million tokens
  llama3.2: {input_per_mtok: 0, output_per_mtok: 0}
schedules:                                   # optional: agents run on a cron schedule (docs/schedules.md)
  - {name: nightly-digest, agent: support, cron: "0 6 * * *", time_zone: Europe/Paris, tenant: acme,
     input: "Summarise yesterday's refunds"}
budgets:                                     # optional: spend caps across runs (docs/budgets.md)
  - {name: tenant-day, scope: tenant, window: day, max_cost_usd: 20, action: refuse}
  - {name: user-day, scope: user, window: day, max_cost_usd: 2, action: degrade, degrade: {model: gemini-2.5-flash-lite}}
```
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agex.core.agent import Agent, AgentRegistry
from agex.core.errors import ConfigurationError
from agex.core.guard import GuardSpec
from agex.core.pricing import Price
from agex.core.schedule import Schedule
from agex.core.spend import Budget
from agex.core.webhook import Webhook


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentLimits(_Strict):
    """An agent's per-run limits as the fleet declares them (its ``budgets:``), checked against its code."""

    max_steps: int | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_wall_time_s: int | None = None


class QueueSettings(_Strict):
    """The agent's Cloud Tasks queue (Terraform creates it; the runtime does not read it)."""

    max_dispatches_per_second: float = 50
    max_concurrent_dispatches: int = 100
    max_attempts: int = 100


class CanarySettings(_Strict):
    """The scheduled red-team canary of the agent (Terraform runs it; the runtime does not read it)."""

    enabled: bool = False
    schedule: str = "0 6 * * *"
    max_attack_success: float = Field(default=0.0, ge=0.0, le=1.0)


class DriftSettings(_Strict):
    """The drift check of this agent (docs/observability.md): a pinned baseline, instead of the previous
    version's last runs."""

    baseline_version: str | None = Field(default=None, min_length=1, max_length=64)
    baseline_from: datetime | None = None
    baseline_to: datetime | None = None
    """The period of the pinned version's runs to compare with; default: the drift baseline period before
    the window being checked."""


class FleetAgent(_Strict):
    module: str = Field(pattern=r"^[\w.]+:\w+$")
    identity: str = Field(min_length=1)
    secrets: list[str] = Field(default_factory=list)
    tools: list[str] | None = None
    approvers: list[str] | None = None
    budgets: AgentLimits | None = None
    queue: QueueSettings = Field(default_factory=QueueSettings)
    guards: list[GuardSpec] = Field(default_factory=list)
    """Guards this environment adds to the agent's chain, or makes stricter; never looser (refused)."""
    canary: CanarySettings | None = None
    drift: DriftSettings | None = None
    previous_versions: list[str] = Field(default_factory=list)
    """Earlier versions still served, each a ``module:attribute`` of the agent at that version: a run finishes on
    the version it started with (docs/versions.md). Retire one once ``agex versions`` shows no unfinished run on
    it (the deploy's check refuses to drop it sooner)."""
    migrate: dict[str, str] = Field(default_factory=dict)
    """Declared moves: runs of version ``key`` go on with version ``value`` from their next step, recorded on
    the run as a ``run_migrated`` event."""


class Fleet(_Strict):
    agents: dict[str, FleetAgent]
    prices: dict[str, Price] = Field(default_factory=dict)
    """Prices of models the built-in table lacks (or negotiated ones), USD per million tokens."""
    schedules: list[Schedule] = Field(default_factory=list)
    """Agents run on a cron schedule (docs/schedules.md); Terraform makes a Cloud Scheduler job of each."""
    webhooks: list[Webhook] = Field(default_factory=list)
    """Signed HTTP callbacks when runs end (docs/webhooks.md)."""
    budgets: list[Budget] = Field(default_factory=list)
    """Spend caps across runs: per user, agent, tenant or the deployment, over a rolling day or month
    (docs/budgets.md)."""


def load(path: str | Path) -> Fleet:
    try:
        raw = yaml.safe_load(Path(path).read_text())
        return Fleet.model_validate(raw)
    except OSError as e:
        raise ConfigurationError(f"cannot read the fleet file {path}: {e}") from e
    except (yaml.YAMLError, ValidationError) as e:
        raise ConfigurationError(f"fleet file {path} is invalid: {e}") from e


def identity_email(identity: str, project: str) -> str:
    return identity if "@" in identity else f"{identity}@{project}.iam.gserviceaccount.com"


def registry(fleet: Fleet, project: str) -> AgentRegistry:
    """Load each agent's code, check it against its declaration, and give it its identity."""
    agents: list[Agent] = []
    previous: list[Agent] = []
    for name, declared in fleet.agents.items():
        agents.append(_declared(name, declared.module, declared, project))
        previous.extend(_declared(name, module, declared, project, current=agents[-1].version)
                        for module in declared.previous_versions)
    return AgentRegistry(agents, previous=previous,
                         migrations={name: a.migrate for name, a in fleet.agents.items() if a.migrate})


def _declared(name: str, module: str, declared: FleetAgent, project: str, current: str | None = None) -> Agent:
    """The agent at ``module``, checked against its fleet entry and given its identity and guards. ``current``:
    the current version's, when this is an earlier version (which must have a version string of its own)."""
    (agent,) = AgentRegistry.from_specs([module]).all() or (None,)
    if agent is None or agent.name != name:
        raise ConfigurationError(f"fleet file: {module} is not an agent named {name!r}")
    if current is not None and agent.version == current:
        raise ConfigurationError(f"fleet file: {module}, an earlier version of agent {name!r}, has the current "
                                 f"version's version string {current!r}; give each version its own")
    problems = _disagreements(agent, declared, current is not None)
    if problems:
        raise ConfigurationError(f"agent {name!r} ({module}) and its fleet file entry disagree: "
                                 f"{'; '.join(problems)}. Change one of them (the fleet file is what Terraform grants)")
    update: dict[str, Any] = {"identity": identity_email(declared.identity, project)}
    if declared.guards:
        from agex.guards.chain import tightened

        try:
            update["guards"] = tightened(agent.guards, declared.guards)
        except ConfigurationError as e:
            raise ConfigurationError(f"agent {name!r}: {e.message}") from e
    return agent.model_copy(update=update)


def _disagreements(agent: Agent, declared: FleetAgent, earlier: bool = False) -> list[str]:
    """What the code and its fleet entry disagree on. An earlier version is held to the grants only (its
    secrets): the entry's tools, approvers and budgets describe the current version."""
    problems = []
    for tool in agent.tools:
        missing = [s for s in tool.secrets if s not in declared.secrets]
        if missing:
            problems.append(f"tool {tool.name} needs secret(s) {', '.join(missing)}, which the fleet file does not "
                            f"grant to the agent")
    if earlier:
        return problems
    if declared.tools is not None and sorted(declared.tools) != sorted(t.name for t in agent.tools):
        problems.append(f"tools: the fleet file lists {sorted(declared.tools)}, the code has "
                        f"{sorted(t.name for t in agent.tools)}")
    if declared.approvers is not None:
        code = sorted({a for p in agent.approvals for a in p.approvers})
        if sorted(set(declared.approvers)) != code:
            problems.append(f"approvers: the fleet file lists {sorted(set(declared.approvers))}, the policies "
                            f"name {code}")
    if declared.budgets is not None:
        limits: dict[str, Any] = agent.limits.model_dump()
        for key, value in declared.budgets.model_dump(exclude_none=True).items():
            if limits[key] != value:
                problems.append(f"budget {key}: fleet file {value}, code {limits[key]}")
    return problems
