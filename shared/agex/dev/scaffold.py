"""``agex new NAME``: a new agent in the current directory, ready to run with ``agex dev`` and to test with pytest.

Writes ``NAME/__init__.py`` and ``NAME/agent.py`` (an agent with one typed tool, instructions and limits),
``fleet.yaml`` (the agent and its identity), ``scenarios/NAME.yaml`` (the Gemini emulator's script: the model
calls the tool, then answers), ``tests/test_NAME.py`` (a unit test on ``agex.testing``, no model or emulator)
and ``conftest.py`` (empty: it puts the directory on pytest's ``sys.path``, so the test imports the agent).
Nothing is overwritten: an existing agent package, scenario or test stops it before anything is written; an
existing ``fleet.yaml`` or ``conftest.py`` is left as it is (the fleet entry to add is returned instead).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
MAX_NAME = 24
"""The agent's identity is ``agent-NAME``, and a service account id has at most 30 characters."""
_RESERVED = {"tests", "test", "scenarios", "conftest", "fleet", "examples", "functions", "agex", "main"}


class ScaffoldError(ValueError):
    """The name is unusable, or files it would write exist."""


@dataclass(frozen=True)
class Scaffolded:
    agent: str
    """The agent's name (``-`` where the package has ``_``)."""
    package: str
    written: list[Path]
    fleet_entry: str | None
    """When ``fleet.yaml`` existed: the entry to add to it by hand."""


def scaffold(name: str, directory: Path | None = None) -> Scaffolded:
    root = (directory or Path.cwd()).resolve()
    if len(name) > MAX_NAME or not NAME.match(name):
        raise ScaffoldError(f"{name!r} cannot name an agent: use lower-case letters, digits, and '-' or '_' "
                            f"between them, starting with a letter, at most {MAX_NAME} characters (like "
                            "'helpdesk' or 'order-status')")
    package, agent = name.replace("-", "_"), name.replace("_", "-")
    values = {"agent": agent, "package": package}
    files = {
        root / package / "__init__.py": _INIT,
        root / package / "agent.py": _AGENT,
        root / "scenarios" / f"{agent}.yaml": _SCENARIO,
        root / "tests" / f"test_{package}.py": _TEST,
    }
    existing = [p for p in [root / package, *files] if p.exists()]
    if existing:
        raise ScaffoldError("not overwriting what is there: " + ", ".join(str(p.relative_to(root)) for p in existing))
    if package in _RESERVED or package in sys.stdlib_module_names or _importable(package):
        raise ScaffoldError(f"{package!r} is already the name of a module: the agent's package and it would hide "
                            "one another; choose another name")
    fleet_entry = Template(_FLEET_ENTRY).substitute(values)
    optional = {root / "fleet.yaml": _FLEET_HEAD + fleet_entry, root / "conftest.py": _CONFTEST}
    written = []
    for path, text in [*files.items(), *((p, t) for p, t in optional.items() if not p.exists())]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x") as f:  # "x": never over a file that appeared meanwhile
            f.write(Template(text).substitute(values))
        written.append(path)
    return Scaffolded(agent=agent, package=package, written=written,
                      fleet_entry=None if root / "fleet.yaml" in written else fleet_entry)


def _importable(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


_INIT = '''"""The ${agent} agent (see agent.py)."""
'''

_AGENT = '''"""The ${agent} agent: greets people by name. A starting point: change its instructions,
its tools and its limits, then its scenario (scenarios/${agent}.yaml) and its test
(tests/test_${package}.py).

Run it locally with `agex dev --backend memory` (or `agex dev`, on the emulators), then
`agex run ${agent} "Please greet Ada" --wait`.
"""

from __future__ import annotations

from agex.core.agent import Agent
from agex.core.run import Limits
from agex.tools import ToolContext, tool
from pydantic import BaseModel, Field


class Person(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="Who to greet.")


@tool
def greet(args: Person, ctx: ToolContext) -> dict[str, object]:
    """Greet a person by name; returns the greeting to give them."""
    # the model reads the docstring to choose the tool, and Person's schema to call it;
    # ctx.idempotency_key is the same on every retry of a call: pass it to APIs that
    # take one. A tool that moves money, sends messages or deletes is declared
    # @tool(sensitive=True): the guardrail chain holds it when it follows suspicious
    # content with arguments the user did not give (docs/guardrails.md)
    return {"greeting": f"Hello, {args.name}!"}


agent = Agent(
    name="${agent}",
    version="1",
    description="Greets people by name.",
    instructions=(
        "You are the ${agent} agent. When asked to greet someone, call greet with "
        "their name, then answer with the greeting it returns."
    ),
    model="gemini-2.5-flash",
    tools=(greet,),
    limits=Limits(
        max_steps=5, max_tokens=20_000, max_cost_usd=0.05, max_wall_time_s=3600
    ),
    # the default guardrail chain is on: injection detector, provenance policy,
    # personal-data redaction, output guard. guards=() turns it off
)
'''

_FLEET_HEAD = '''# The agents of this project: their code, identities (service accounts), granted secrets and budgets.
# `agex dev` reads ./fleet.yaml; the runtime reads it as AGEX_FLEET_FILE, and the fleet's Terraform creates the
# identities and grants from it (docs/tools.md, docs/deploy.md). The runtime refuses to start if an agent's
# code and its entry disagree.
agents:
'''

_FLEET_ENTRY = '''  ${agent}:
    module: ${package}.agent:agent
    identity: agent-${agent}
    secrets: []
    tools: [greet]
    budgets: {max_steps: 5, max_tokens: 20000, max_cost_usd: 0.05, max_wall_time_s: 3600}
'''

_SCENARIO = '''# What the Gemini emulator answers the ${agent} agent under `agex dev` (the scenario format:
# agex/dev/emulators/gemini/scenarios/README.md). Asked to greet someone, the model calls greet with the
# name, then answers. An input that no scenario matches fails the run's model call (400): add scenarios
# for the conversations you want to try.
name: ${agent}
match:
  system_contains: "You are the ${agent} agent"
  input_regex: "(?i)greet (\\\\w+)"
turns:
  - function_calls: [{name: greet, args: {name: "{input.1}"}}]
  - text: "Hello, {input.1}! Have a good day."
'''

_TEST = '''"""Unit tests of the ${agent} agent, without a model or emulators: agex.testing's
InMemoryRuntime runs the whole step protocol in memory, TestModel stands in for the
model."""

from __future__ import annotations

from agex.core.run import EventKind, RunStatus
from agex.testing import InMemoryRuntime, TestModel

from ${package}.agent import agent


def tool_results(rt: InMemoryRuntime, run_id: str) -> list[dict[str, object]]:
    events = rt.store.list_events("dev", run_id, limit=100)
    return [e.data for e in events if e.kind == EventKind.tool_result]


def test_it_greets_through_its_tool() -> None:
    # TestModel calls every tool once, with these arguments, then answers the final text
    model = TestModel("Hello, Ada!", args_for=lambda tool: {"name": "Ada"})
    rt = InMemoryRuntime([agent], model)
    run = rt.run("${agent}", "Please greet Ada")
    assert run.status == RunStatus.succeeded, run.error
    assert run.result == "Hello, Ada!"
    [result] = tool_results(rt, run.run_id)
    assert (result["name"], result["ok"]) == ("greet", True)
    assert result["output"] == {"greeting": "Hello, Ada!"}


def test_it_refuses_an_empty_name() -> None:
    model = TestModel("done", args_for=lambda tool: {"name": ""})
    rt = InMemoryRuntime([agent], model)
    run = rt.run("${agent}", "Please greet nobody")
    [result] = tool_results(rt, run.run_id)
    # the arguments are checked against Person before the tool runs
    assert result["ok"] is False
'''

_CONFTEST = '''# Empty on purpose: a conftest.py here puts this directory on pytest's sys.path,
# so the tests import the agents.
'''
