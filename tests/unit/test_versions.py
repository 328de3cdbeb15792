"""Agent versions side by side (docs/versions.md): a run finishes on the version it started with across a
redeploy, waits (retried, untouched) while its version is not served, and changes version only by a declared
migration rule, recorded on the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agex.app import fleet
from agex.app.retirement import stranded
from agex.core.agent import Agent, AgentRegistry, VersionNotServed
from agex.core.errors import ConfigurationError
from agex.core.run import EventKind, RunStatus
from agex.testing import FunctionModel, InMemoryRuntime

V1 = Agent(name="helper", version="1", instructions="You help.")
V2 = V1.model_copy(update={"version": "2", "instructions": "You help, version two."})
V3 = V1.model_copy(update={"version": "3", "instructions": "You help, version three."})


def _model() -> FunctionModel:
    """Answers with the instructions it was given: which version's code made each call."""
    return FunctionModel(lambda request: request.system)


def _timer_run(rt: InMemoryRuntime) -> str:
    """A run left between steps: started, its first step not yet delivered."""
    return rt.start("helper", "hello").run_id


def test_a_run_finishes_on_its_version_when_it_is_still_served() -> None:
    rt = InMemoryRuntime([V1], _model())
    run_id = _timer_run(rt)
    rt.redeploy([V2], previous=[V1])
    rt.drive()
    head = rt.store.get_run("dev", run_id)
    assert head is not None and (head.status, head.agent_version, head.result) == (RunStatus.succeeded, "1", "You help.")
    assert rt.run("helper", "again").result == "You help, version two."


def test_a_run_whose_version_is_not_served_waits_untouched_until_it_is() -> None:
    rt = InMemoryRuntime([V1], _model())
    run_id = _timer_run(rt)
    rt.redeploy([V2])
    (task,) = rt.queue.pending()
    with pytest.raises(VersionNotServed, match="version '1' is not served"):
        rt.deliver(task)
    head = rt.store.get_run("dev", run_id)
    assert head is not None and (head.status, head.seq, head.lease) == (RunStatus.queued, 1, None)
    rt.redeploy([V2], previous=[V1])  # served again: the retried task goes on
    rt.drive()
    assert rt.store.get_run("dev", run_id).result == "You help."  # type: ignore[union-attr]


def test_a_migration_rule_moves_a_run_and_records_it() -> None:
    rt = InMemoryRuntime([V1], _model())
    run_id = _timer_run(rt)
    rt.redeploy([V3], previous=[V2], migrations={"helper": {"1": "2", "2": "3"}})
    rt.drive()
    head = rt.store.get_run("dev", run_id)
    assert head is not None and (head.agent_version, head.result) == ("3", "You help, version three.")
    (moved,) = [e for e in rt.store.list_events("dev", run_id) if e.kind == EventKind.run_migrated]
    assert moved.data == {"from_version": "1", "to_version": "3", "rule": "fleet file migrate"}


@pytest.mark.parametrize(("previous", "migrations", "problem"), [
    ([V1.model_copy(update={"name": "other"})], None, "not the agent"),
    ([V2], None, "served twice"),
    ([V1], {"helper": {"1": "9"}}, "not served"),
    ([V1], {"helper": {"2": "1"}}, "the current one"),
    ([V1, V3], {"helper": {"1": "3", "3": "1"}}, "circle"),
    ([], {"nobody": {"1": "2"}}, "not served"),
])
def test_the_registry_refuses_inconsistent_versions(previous: list[Agent], migrations: Any, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        AgentRegistry([V2], previous=previous, migrations=migrations)


def test_the_fleet_file_serves_earlier_versions_and_the_check_finds_stranded_runs(tmp_path: Path) -> None:
    import sys
    import types

    module = types.ModuleType("helper_versions")
    module.v1, module.v2 = V1, V2  # type: ignore[attr-defined]
    sys.modules["helper_versions"] = module
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"agents": {"helper": {
        "module": "helper_versions:v2", "identity": "agent-helper", "previous_versions": ["helper_versions:v1"]}}}))
    registry = fleet.registry(fleet.load(path), "p")
    assert [a.version for a in registry.versions("helper")] == ["2", "1"]
    assert registry.version("helper", "1").identity == "agent-helper@p.iam.gserviceaccount.com"  # type: ignore[union-attr]

    rt = InMemoryRuntime([V1], _model())
    _timer_run(rt)
    assert stranded(registry, rt.store) == []
    only_v2 = AgentRegistry([V2])
    (found,) = stranded(only_v2, rt.store)
    assert (found.agent, found.version, found.runs) == ("helper", "1", 1)
    assert stranded(AgentRegistry([V2], migrations={"helper": {"1": "2"}}), rt.store) == []
