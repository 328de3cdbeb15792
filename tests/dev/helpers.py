"""Helpers of the local-development tests: ``agex dev`` as a subprocess, and waiting on runs over the API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agex.cli.client import Client
from agex.dev.emulators.gcloud import free_port

TERMINAL = ("succeeded", "failed", "cancelled", "expired")


@dataclass
class Dev:
    url: str
    ready_s: float
    """Wall time from spawning ``agex dev`` to its ready line."""
    reported_s: float
    """The start time it printed (from its process's start)."""
    lines: list[str]


@contextmanager
def agex_dev(cwd: Path, *args: str, timeout: float = 120) -> Iterator[Dev]:
    """Run ``agex dev --port FREE *args`` in ``cwd`` until its ready line; stop it with SIGTERM after the block
    and check it stopped cleanly."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGEX_")} | {"PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "agex.cli.main", "dev", "--port", str(port), *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("ready:") or not line:
                break
        ready_s = time.perf_counter() - t0
        assert lines[-1].startswith(f"ready: API at http://127.0.0.1:{port}"), "".join(lines)
        reported = float(lines[-1].split("started in ")[1].split(" s")[0])
        yield Dev(f"http://127.0.0.1:{port}", ready_s, reported, lines)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError("agex dev did not stop within 30 s of SIGTERM") from None
    assert proc.returncode == 0, out
    assert "stopped." in out


def wait_for(client: Client, run_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
    """Poll the run until it is in one of ``statuses`` (or has ended); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.run(run_id)
        if run["status"] in statuses or run["status"] in TERMINAL:
            assert run["status"] in statuses, run
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']} after {timeout} s: {run}"
        time.sleep(0.05)
