"""The fleet file: the runtime refuses agents whose code disagrees with what the file grants."""

from __future__ import annotations

from pathlib import Path

import pytest

from agex.app import fleet
from agex.core.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def test_the_sample_fleet_loads_with_identities() -> None:
    registry = fleet.registry(fleet.load(REPO / "examples" / "fleet.yaml"), "acme-prod")
    assert registry.get("support").identity == "agent-support@acme-prod.iam.gserviceaccount.com"


def test_the_e2e_fleet_loads() -> None:
    names = {a.name for a in fleet.registry(fleet.load(REPO / "tests" / "e2e" / "fleet.yaml"), "p").all()}
    assert {"support", "vault-a", "fetcher", "notes"} <= names


def test_a_tool_needing_an_ungranted_secret_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'agents:\n  vault-a: {module: "tests.e2e.agents:vault_a", identity: a, secrets: []}\n')
    with pytest.raises(ConfigurationError, match="leak_key needs secret.*vault-a-key.*does not grant"):
        fleet.registry(fleet.load(path), "p")


def test_budgets_tools_and_approvers_must_agree(tmp_path: Path) -> None:
    path = write(tmp_path, 'agents:\n  support:\n    module: "examples.support_agent:agent"\n    identity: s\n'
                           '    tools: [lookup_order]\n    approvers: [someone@example.com]\n'
                           '    budgets: {max_steps: 99}\n')
    with pytest.raises(ConfigurationError) as refused:
        fleet.registry(fleet.load(path), "p")
    message = str(refused.value)
    assert "tools:" in message and "approvers:" in message and "budget max_steps" in message


def test_a_module_that_is_not_the_named_agent_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'agents:\n  other: {module: "examples.support_agent:agent", identity: o}\n')
    with pytest.raises(ConfigurationError, match="not an agent named 'other'"):
        fleet.registry(fleet.load(path), "p")


def test_an_invalid_file_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="invalid"):
        fleet.load(write(tmp_path, "agents:\n  x: {identity: y}\n"))
