"""Schedules on the local stack: a firing delivered twice to the step function, as Cloud Scheduler would after
a lost answer, starts one run; a schedule paused through the API skips its firings until resumed."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from agex.adapters.gcp.cloud_tasks import make_client, post_with_oidc
from agex.app.settings import Settings
from agex.cli import main as cli
from tests.e2e.conftest import E2E

DUE = "2027-01-01T00:00:00Z"


def _fire(e2e: E2E, due: str, times: int = 1) -> None:
    """POST /schedules/e2e-yearly:fire with the scheduler's OIDC token and the due time, through Cloud Tasks."""
    stack = e2e.stack
    with stack.client_env():
        client = make_client(stack.tasks_host)
    queue = client.queue_path(stack.config.project, "us-central1", "agex-steps")
    for _ in range(times):
        post_with_oidc(client, queue, url=f"{stack.step_url}schedules/e2e-yearly:fire",
                       service_account=Settings().step_service_account, audience=stack.step_url,
                       headers={"X-CloudScheduler-ScheduleTime": due})


def _api(e2e: E2E, method: str, path: str, token: str = "dev-token") -> Any:
    response = httpx.request(method, f"{e2e.stack.api_url}{path}", headers={"Authorization": f"Bearer {token}"},
                             timeout=30)
    response.raise_for_status()
    return response.json()


def _scheduled(e2e: E2E, due: str) -> list[dict]:
    return [r for r in e2e.client.runs(agent="ticker") if r["metadata"].get("schedule") == "e2e-yearly"
            and r["metadata"].get("due", "").startswith(due[:16])]


def test_a_firing_delivered_twice_starts_one_run(e2e: E2E) -> None:
    _fire(e2e, DUE, times=2)
    deadline = time.monotonic() + 30
    while not _scheduled(e2e, "2027-01-01T00:00"):
        assert time.monotonic() < deadline, "the schedule's firing started no run"
        time.sleep(0.5)
    time.sleep(2)  # time for the second delivery to land
    (run,) = _scheduled(e2e, "2027-01-01T00:00")
    assert run["metadata"]["source"] == "e2e" and e2e.wait(run["run_id"])["status"] == "succeeded"
    listed = _api(e2e, "GET", "/v1/schedules")["schedules"]
    assert [s["name"] for s in listed] == ["e2e-yearly"] and listed[0]["next_due"].startswith("2027-01-01")
    assert _api(e2e, "GET", "/v1/schedules", token="acme-token") == {"schedules": []}


def test_a_paused_schedule_skips_its_firings_until_resumed(e2e: E2E, capsys: pytest.CaptureFixture[str]) -> None:
    paused = _api(e2e, "POST", "/v1/schedules/e2e-yearly:pause")
    assert paused["paused"] and paused["state"]["by"] == "dev@example.com" and paused["next_due"] is None
    assert cli.main(["--api", e2e.stack.api_url, "schedules"]) == 0
    assert "paused by dev@example.com" in capsys.readouterr().out
    try:
        _fire(e2e, "2028-01-01T00:00:00Z")
        time.sleep(3)
        assert _scheduled(e2e, "2028-01-01T00:00") == []
    finally:
        assert cli.main(["--api", e2e.stack.api_url, "schedule", "resume", "e2e-yearly"]) == 0
    resumed = _api(e2e, "GET", "/v1/schedules")["schedules"][0]
    assert not resumed["paused"] and "next 2027-01-01" in capsys.readouterr().out
    _fire(e2e, "2029-01-01T00:00:00Z")
    deadline = time.monotonic() + 30
    while not _scheduled(e2e, "2029-01-01T00:00"):
        assert time.monotonic() < deadline, "the resumed schedule's firing started no run"
        time.sleep(0.5)
