"""What ``agex dev`` runs: flags, then environment variables, then the current directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agex.dev.project import ProjectError, resolve
from agex.dev.stack import REPO


def make(root: Path, *paths: str) -> Path:
    for p in paths:
        target = root / p
        if p.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("agents: {}\n")
    return root


def test_the_project_s_own_fleet_and_scenarios_come_first(tmp_path: Path) -> None:
    make(tmp_path, "fleet.yaml", "scenarios/", "examples/fleet.yaml", "examples/scenarios/")
    project = resolve(cwd=tmp_path, env={})
    assert project.root == tmp_path.resolve()
    assert project.fleet_file == tmp_path.resolve() / "fleet.yaml" and project.agents == ""
    assert project.scenarios == tmp_path.resolve() / "scenarios"


def test_the_repository_s_sample_is_the_fallback(tmp_path: Path) -> None:
    make(tmp_path, "examples/fleet.yaml", "examples/scenarios/")
    project = resolve(cwd=tmp_path, env={})
    assert project.fleet_file == tmp_path.resolve() / "examples" / "fleet.yaml"
    assert project.scenarios == tmp_path.resolve() / "examples" / "scenarios"


def test_from_the_repository_s_root_the_sample_runs() -> None:
    project = resolve(cwd=REPO, env={})
    assert project.fleet_file == REPO / "examples" / "fleet.yaml"
    assert project.scenarios == REPO / "examples" / "scenarios"


def test_without_a_fleet_file_it_says_which_flag_to_give(tmp_path: Path) -> None:
    make(tmp_path, "scenarios/")
    with pytest.raises(ProjectError, match="give --fleet FILE, or --agents module:attr") as e:
        resolve(cwd=tmp_path, env={})
    assert str(tmp_path.resolve()) in str(e.value) and "agex new" in str(e.value)


def test_flags_name_the_fleet_file_relative_to_the_current_directory(tmp_path: Path) -> None:
    make(tmp_path, "deploy/agents.yaml", "scripts/")
    project = resolve(fleet="deploy/agents.yaml", scenarios="scripts", cwd=tmp_path, env={})
    assert project.fleet_file == tmp_path.resolve() / "deploy" / "agents.yaml"
    assert project.scenarios == tmp_path.resolve() / "scripts"
    with pytest.raises(ProjectError, match="no fleet file .*missing.yaml: give --fleet FILE"):
        resolve(fleet="missing.yaml", scenarios="scripts", cwd=tmp_path, env={})
    with pytest.raises(ProjectError, match="no scenarios directory .*nowhere: give --scenarios DIR"):
        resolve(fleet="deploy/agents.yaml", scenarios="nowhere", cwd=tmp_path, env={})


def test_agents_without_a_fleet_file(tmp_path: Path) -> None:
    make(tmp_path, "fleet.yaml", "scenarios/")
    project = resolve(agents=" mine.agent:agent , other:bot ", cwd=tmp_path, env={})
    assert project.fleet_file is None and project.agents == "mine.agent:agent,other:bot"
    for bad in ("mine.agent", "mine:agent:x", ",", "my-pkg:agent"):
        with pytest.raises(ProjectError, match="module:attribute"):
            resolve(agents=bad, cwd=tmp_path, env={})
    with pytest.raises(ProjectError, match="not both"):
        resolve(fleet="fleet.yaml", agents="mine.agent:agent", cwd=tmp_path, env={})


def test_environment_variables_stand_in_for_flags(tmp_path: Path) -> None:
    make(tmp_path, "fleet.yaml", "scenarios/", "other.yaml", "other-scenarios/")
    env = {"AGEX_FLEET_FILE": "other.yaml", "AGEX_AGENTS": "mine.agent:agent", "AGEX_SCENARIOS": "other-scenarios"}
    project = resolve(cwd=tmp_path, env=env)
    assert project.fleet_file == tmp_path.resolve() / "other.yaml"  # as in the runtime: the fleet file wins
    assert project.scenarios == tmp_path.resolve() / "other-scenarios"
    assert resolve(cwd=tmp_path, env={"AGEX_AGENTS": "mine.agent:agent"}).agents == "mine.agent:agent"
    flagged = resolve(fleet="fleet.yaml", scenarios="scenarios", cwd=tmp_path, env=env)
    assert flagged.fleet_file == tmp_path.resolve() / "fleet.yaml"
    assert flagged.scenarios == tmp_path.resolve() / "scenarios"
    assert resolve(agents="x:y", cwd=tmp_path, env=env).fleet_file is None


def test_no_scenarios_directory_is_an_error(tmp_path: Path) -> None:
    make(tmp_path, "fleet.yaml")
    with pytest.raises(ProjectError, match=r"no scenarios directory in .*: give --scenarios DIR"):
        resolve(cwd=tmp_path, env={})


def test_agex_dev_explains_what_is_missing_and_starts_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGEX_")}
    for args, expected in [(["--backend", "memory"], "give --fleet FILE, or --agents"),
                           (["--fleet", "a.yaml", "--agents", "m:a"], "not allowed with argument"),
                           (["--backend", "memory", "--fleet", "a.yaml"], "no fleet file")]:
        done = subprocess.run([sys.executable, "-m", "agex.cli.main", "dev", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, done
        assert expected in done.stderr, done.stderr
    assert not (tmp_path / ".agex").exists()


def test_agents_or_scenarios_that_do_not_load_stop_the_start_with_a_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGEX_")}
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.yaml").write_text("name: x\nwhat: 1\n")
    for args, expected in [(["--agents", "nope.agent:agent"], "agent spec 'nope.agent:agent' cannot be loaded"),
                           (["--agents", "tests.dev.agents:sleeper", "--scenarios", "bad"], "x.yaml")]:
        done = subprocess.run([sys.executable, "-m", "agex.cli.main", "dev", "--backend", "memory", "--port", "0",
                               *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, done
        assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr
