"""The sample agent end to end through the real functions, emulators and client libraries."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from examples import support_backend

from .conftest import E2E

REFUND = "Hi, I'd like a refund for order A-1187: the socks arrived with a hole."


def refunds_of(e2e: E2E, run_id: str) -> list[dict[str, object]]:
    os.environ["AGEX_EXAMPLE_LEDGER"] = e2e.stack.env["AGEX_EXAMPLE_LEDGER"]
    return [r for r in support_backend.refunds() if str(r["idempotency_key"]).startswith(run_id + ":")]


def test_the_support_agent_refunds_once_and_reports_usage(e2e: E2E) -> None:
    run = e2e.client.start_run("support", REFUND, metadata={"ticket": "T-1"})
    final = e2e.wait(run["run_id"])
    assert final["status"] == "succeeded", final
    assert final["step"] == 4
    assert "$24.00" in final["result"]
    assert final["usage"]["model_calls"] == 4 and final["usage"]["input_tokens"] > 0 and final["usage"]["cost_usd"] > 0
    events = e2e.events(run["run_id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    tools = [e["data"]["name"] for e in events if e["kind"] == "tool_result"]
    assert tools == ["lookup_order", "check_refund_policy", "issue_refund"]
    assert len(refunds_of(e2e, run["run_id"])) == 1


def test_a_refused_refund_is_explained_not_paid(e2e: E2E) -> None:
    run = e2e.client.start_run("support", "Please refund order A-2077, it doesn't fit.")
    final = e2e.wait(run["run_id"])
    assert final["status"] == "succeeded" and "final sale" in final["result"]
    assert refunds_of(e2e, run["run_id"]) == []


def test_the_cli_runs_waits_and_shows_status_and_events(e2e: E2E) -> None:
    env = {**os.environ, "AGEX_API_URL": e2e.stack.api_url, "AGEX_TOKEN": "dev-token"}
    agex = [sys.executable, "-m", "agex.cli.main"]
    done = subprocess.run([*agex, "run", "support", REFUND, "--wait"], env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    assert "issue_refund" in done.stdout and "status succeeded" in done.stdout and "cost $" in done.stdout
    run_id = re.search(r"run (run_\w+)", done.stdout).group(1)  # type: ignore[union-attr]
    status = subprocess.run([*agex, "status", run_id, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert '"status": "succeeded"' in status.stdout
    events = subprocess.run([*agex, "events", run_id], env=env, capture_output=True, text=True, timeout=60)
    assert "model     decides lookup_order" in events.stdout and "finished  succeeded" in events.stdout
    failed = subprocess.run([*agex, "run", "support", "refund order A-9999 please", "--wait"], env=env,
                            capture_output=True, text=True, timeout=180)
    assert failed.returncode != 0  # no scenario: the model refuses, the run fails, the exit code says so
