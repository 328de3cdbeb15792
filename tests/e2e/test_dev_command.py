"""`agex dev`: starts everything on loopback, says when it is ready, and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agex.dev.emulators.gcloud import free_port
from agex.dev.stack import REPO


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_agex_dev_starts_serves_and_stops_everything(tmp_path: Path, stop_signal: signal.Signals) -> None:
    port = free_port()
    # run from elsewhere than the repository: the sample fleet is named, and its modules import from the repository
    proc = subprocess.Popen([sys.executable, "-m", "agex.cli.main", "dev", "--port", str(port),
                             "--fleet", str(REPO / "examples" / "fleet.yaml"),
                             "--scenarios", str(REPO / "examples" / "scenarios")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("ready:") or not line:
            break
    assert lines[-1].startswith(f"ready: API at http://127.0.0.1:{port}"), "".join(lines)
    agents = httpx.get(f"http://127.0.0.1:{port}/v1/agents", headers={"Authorization": "Bearer dev-token"})
    assert {a["name"] for a in agents.json()["agents"]} == {"support", "ticker"}
    started = _descendants(proc.pid)
    assert len(started) >= 6, "emulators and functions run as children"
    proc.send_signal(stop_signal)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped." in out
    time.sleep(0.5)
    assert _alive(started) == set(), "no process is left behind"
