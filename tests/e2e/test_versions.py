"""Version pinning across deploys (docs/versions.md): a run waiting for approval while version 2 of its agent is
deployed finishes on version 1; a deploy that would drop a version unfinished runs need is refused by the
deploy's check; a declared migration rule moves a run to version 2, recorded on the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agex.cli import main as cli

from . import agents as test_agents
from .conftest import E2E, HERE
from .test_approvals import approval_of


def _fleet(tmp: Path, name: str, **payer: Any) -> Path:
    fleet = yaml.safe_load((HERE / "fleet.yaml").read_text())
    fleet["agents"]["payer"] = {"identity": "agent-payer", **payer}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(fleet))
    return path


@pytest.fixture
def redeploys(e2e: E2E) -> Iterator[None]:
    yield
    e2e.stack.redeploy(HERE / "fleet.yaml")  # the session's fleet again, whatever the test did


def _retire_check(e2e: E2E, fleet: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with e2e.stack.client_env():
        code = cli.main(["retire-check", str(fleet), "--project", e2e.stack.config.project])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_run_finishes_on_its_version_across_deploys_unless_a_rule_moves_it(
        e2e: E2E, tmp_path: Path, redeploys: None, capsys: pytest.CaptureFixture[str]) -> None:
    kept, moved = (e2e.client.start_run("payer", f"pay acme {amount}")["run_id"] for amount in (310, 320))
    kept_approval, moved_approval = approval_of(e2e, kept), approval_of(e2e, moved)
    assert e2e.client.run(kept)["agent_version"] == "1"

    # version 2 deployed, version 1 still served for the runs that started on it
    both = _fleet(tmp_path, "both", module="tests.e2e.agents:payer_v2", previous_versions=["tests.e2e.agents:payer"])
    only_v2 = _fleet(tmp_path, "only-v2", module="tests.e2e.agents:payer_v2")
    code, text = _retire_check(e2e, only_v2, capsys)
    assert code == 1 and "agent 'payer' version '1'" in text and "unfinished run(s)" in text, text
    code, text = _retire_check(e2e, both, capsys)
    assert code == 0, text
    e2e.stack.redeploy(both)
    versions = {v["version"]: v for v in e2e.client.versions("payer")}
    assert versions["2"]["current"] and not versions["1"]["current"] and versions["1"]["served"]
    assert versions["1"]["unfinished_runs"] >= 2

    e2e.manager.decide(kept_approval["approval_id"], "approve")
    final = e2e.wait(kept)
    assert (final["status"], final["agent_version"]) == ("succeeded", "1")
    assert test_agents.effects(kept, "pay") == ["acme:310"]  # version 1's tool made the payment
    assert not [e for e in e2e.events(kept) if e["kind"] == "run_migrated"]
    newer = e2e.client.start_run("payer", "pay acme 330")
    assert newer["agent_version"] == "2"

    # version 1 retired with a rule that moves its runs to version 2: the waiting run goes on there, recorded
    migrating = _fleet(tmp_path, "migrating", module="tests.e2e.agents:payer_v2", migrate={"1": "2"})
    code, text = _retire_check(e2e, migrating, capsys)
    assert code == 0, text
    e2e.stack.redeploy(migrating)
    e2e.manager.decide(moved_approval["approval_id"], "approve")
    final = e2e.wait(moved)
    assert (final["status"], final["agent_version"]) == ("succeeded", "2")
    (migrated,) = [e for e in e2e.events(moved) if e["kind"] == "run_migrated"]
    assert migrated["data"] == {"from_version": "1", "to_version": "2", "rule": "fleet file migrate"}
    assert test_agents.effects(moved, "pay") == ["v2:acme:320"]
    e2e.client.cancel(newer["run_id"])  # the session's fleet serves version 1 only
