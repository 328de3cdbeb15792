"""``agex new NAME``: an agent package, its fleet entry, scenario and unit test, which passes as generated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agex.app import fleet
from agex.dev.scaffold import ScaffoldError, scaffold


def agex(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agex.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=_clean_env())


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AGEX_") and k != "PYTHONPATH"}


def pytest_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The project's tests, as its author runs them: the ``pytest`` command, from the project's directory."""
    command = Path(sys.executable).parent / "pytest"
    argv = [str(command)] if command.exists() else [sys.executable, "-m", "pytest"]
    return subprocess.run([*argv, "-q", "-p", "no:cacheprovider", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=_clean_env())


def test_agex_new_scaffolds_an_agent_whose_test_passes(tmp_path: Path) -> None:
    done = agex(tmp_path, "new", "greeter")
    assert done.returncode == 0, done.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["conftest.py", "fleet.yaml", "greeter/__init__.py", "greeter/agent.py",
                       "scenarios/greeter.yaml", "tests/test_greeter.py"]
    for path in written:
        assert path in done.stdout
    assert "agex dev --backend memory" in done.stdout

    tested = pytest_in(tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "2 passed" in tested.stdout

    checked = subprocess.run([sys.executable, "-m", "agex.dev.emulators.gemini", "--scenarios",
                              str(tmp_path / "scenarios"), "--check"], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "OK 1 scenario" in checked.stdout, checked.stderr

    # the fleet entry agrees with the code, as the runtime checks at start
    declared = fleet.load(tmp_path / "fleet.yaml")
    assert list(declared.agents) == ["greeter"] and declared.agents["greeter"].module == "greeter.agent:agent"
    sys.path.insert(0, str(tmp_path))
    try:
        [agent] = fleet.registry(declared, "agex-local").all()
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "greeter" or m.startswith("greeter.")]:
            del sys.modules[name]
    assert agent.identity == "agent-greeter@agex-local.iam.gserviceaccount.com"
    assert [t.name for t in agent.tools] == ["greet"] and agent.limits.max_steps == 5


def test_it_never_overwrites(tmp_path: Path) -> None:
    assert agex(tmp_path, "new", "greeter").returncode == 0
    (tmp_path / "greeter" / "agent.py").write_text("# mine\n")
    again = agex(tmp_path, "new", "greeter")
    assert again.returncode == 2
    assert "not overwriting what is there: greeter, greeter/__init__.py, greeter/agent.py" in again.stderr
    assert (tmp_path / "greeter" / "agent.py").read_text() == "# mine\n"

    # only the test exists: still nothing is written
    other = tmp_path / "other"
    (other / "tests").mkdir(parents=True)
    (other / "tests" / "test_greeter.py").write_text("# mine\n")
    with pytest.raises(ScaffoldError, match="tests/test_greeter.py"):
        scaffold("greeter", other)
    assert sorted(p.name for p in other.rglob("*")) == ["test_greeter.py", "tests"]


def test_a_second_agent_leaves_the_fleet_file_and_prints_its_entry(tmp_path: Path) -> None:
    assert agex(tmp_path, "new", "greeter").returncode == 0
    fleet_before = (tmp_path / "fleet.yaml").read_text()
    done = agex(tmp_path, "new", "order-status")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fleet.yaml").read_text() == fleet_before
    assert "fleet.yaml exists, and was left as it is" in done.stdout
    entry = done.stdout.split("add the agent to its agents:\n")[1].split("\n\n")[0]
    assert yaml.safe_load(entry) == {"order-status": {
        "module": "order_status.agent:agent", "identity": "agent-order-status", "secrets": [], "tools": ["greet"],
        "budgets": {"max_steps": 5, "max_tokens": 20000, "max_cost_usd": 0.05, "max_wall_time_s": 3600}}}
    assert (tmp_path / "order_status" / "agent.py").is_file()
    assert (tmp_path / "scenarios" / "order-status.yaml").is_file()
    # the fleet file with both agents, and both tests
    (tmp_path / "fleet.yaml").write_text(fleet_before + entry + "\n")
    assert list(fleet.load(tmp_path / "fleet.yaml").agents) == ["greeter", "order-status"]
    tested = pytest_in(tmp_path)
    assert tested.returncode == 0 and "4 passed" in tested.stdout, tested.stdout + tested.stderr


@pytest.mark.parametrize("name, why", [
    ("Greeter", "cannot name an agent"), ("9lives", "cannot name an agent"), ("a--b", "cannot name an agent"),
    ("x" * 25, "at most 24 characters"), ("json", "already the name of a module"),
    ("yaml", "already the name of a module"), ("tests", "already the name of a module"),
])
def test_unusable_names_are_refused(tmp_path: Path, name: str, why: str) -> None:
    done = agex(tmp_path, "new", name)
    assert done.returncode == 2 and why in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_generated_code_is_lint_clean(tmp_path: Path) -> None:
    ruff = Path(sys.executable).parent / "ruff"  # a pinned dev dependency, beside this interpreter
    scaffold("greeter", tmp_path)
    # ruff's defaults (line length 88), with the project's rule families; isort sees the project's layout
    done = subprocess.run([str(ruff), "check", "--isolated", "--select",
                           "E,F,W,I,B,UP,SIM", "."], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout
