"""The fingerprint of an agent version: a digest of everything that shapes its behaviour.

Instructions, model, tools (names, descriptions, argument schemas and the flags the runtime acts on),
approval policies, guardrail chain, limits, context window, and the configuration the agent declares as
behaviour-relevant (``Agent.behaviour``). Not what only observes (hooks, watched values, evaluators) nor
where it runs (identity). Two processes running the same agent code compute the same fingerprint; a
change of any part without a version bump is flagged when the version is registered (docs/observability.md).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agex.core.agent import Agent


def parts(agent: Agent) -> dict[str, str]:
    """A digest of each part, so a mismatch can say what changed."""
    from agex.core.guard import GuardSpec

    def digest(value: Any) -> str:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          default=lambda o: f"{type(o).__module__}.{type(o).__qualname__}")
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    tools = [{"name": t.name, "kind": t.kind, "description": t.description,
              "schema": t.spec().parameters, "idempotent": t.idempotent, "sensitive": t.sensitive,
              "trusted": t.trusted, "secrets": list(t.secrets)} for t in agent.tools]
    guards = [g.model_dump(mode="json") if isinstance(g, GuardSpec)
              else {"guard": f"{type(g).__module__}.{type(g).__qualname__}", "name": g.name,
                    "channels": sorted(str(c) for c in g.channels)} for g in agent.guards]
    approvals = [p.model_dump(mode="json", exclude={"check_edit"}) for p in agent.approvals]
    return {
        "instructions": digest(agent.instructions),
        "model": digest(agent.model) if not (agent.fallbacks or agent.model_rules) else digest(
            {"model": agent.model, "fallbacks": list(agent.fallbacks), "on": list(agent.fallback_on),
             "rules": [r.model_dump(mode="json") for r in agent.model_rules]}),
        "tools": digest(tools),
        "approvals": digest(approvals),
        "guards": digest(guards),
        "limits": digest({**agent.limits.model_dump(mode="json"), "context_window_steps": agent.context_window_steps}),
        "behaviour": digest(agent.behaviour),
        # only when declared, so the fingerprints of agents without memory stay what they were
        **({"memory": digest(agent.memory.model_dump(mode="json"))} if agent.memory is not None else {}),
    }


def fingerprint(agent: Agent) -> str:
    """``sha256:`` and 16 hex digits over the parts."""
    joined = json.dumps(parts(agent), sort_keys=True)
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()[:16]
