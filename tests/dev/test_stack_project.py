"""``agex dev`` on the emulator stack with a project of one's own: the functions import the project's agents
from the current directory, here named by ``--agents`` (no fleet file: nothing is granted)."""

from __future__ import annotations

from pathlib import Path

from agex.cli.client import Client
from agex.dev.scaffold import scaffold
from tests.dev.helpers import agex_dev, wait_for


def test_agex_dev_runs_the_project_s_agent_on_the_emulators(tmp_path: Path) -> None:
    scaffold("greeter", tmp_path)
    (tmp_path / "fleet.yaml").unlink()
    with agex_dev(tmp_path, "--agents", "greeter.agent:agent") as dev:
        assert any(line.split() == ["agents", "greeter.agent:agent"] for line in dev.lines), dev.lines
        client = Client(dev.url, "dev-token")
        [agent] = client.agents()
        assert agent["name"] == "greeter"
        run = client.start_run("greeter", "Please greet Grace")
        final = wait_for(client, run["run_id"], "succeeded", timeout=60)
        assert final["result"] == "Hello, Grace! Have a good day."
    print(f"agex dev (emulators): ready {dev.ready_s:.2f} s after spawn")
