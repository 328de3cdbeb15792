"""Redelivery, crashes and lost tasks on the local stack: the run completes, each effect happens once,
and no event is written twice."""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from agex.adapters.gcp.cloud_tasks import make_client
from agex.app.settings import Settings
from agex.engine.runs import keyed_run_id

from . import agents as test_agents
from .conftest import E2E
from .test_support_agent import REFUND, refunds_of


def _events_are_clean(e2e: E2E, run_id: str) -> list[dict]:
    events = e2e.events(run_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    results = [(e["step"], e["data"]["call_id"]) for e in events if e["kind"] == "tool_result"]
    assert len(results) == len(set(results)), "a tool result was recorded twice"
    models = [e["step"] for e in events if e["kind"] == "model_response"]
    assert len(models) == len(set(models)), "a model response was recorded twice"
    return events


def _enqueue_raw(e2e: E2E, name: str, body: dict) -> None:
    """Deliver a step task the way Cloud Tasks would, under a name of our choosing (a duplicate)."""
    client = make_client(e2e.stack.tasks_host)
    queue = client.queue_path(e2e.stack.config.project, "us-central1", "agex-steps")
    client.create_task(parent=queue, task=tasks_v2.Task(name=f"{queue}/tasks/{name}", http_request=tasks_v2.HttpRequest(
        http_method=tasks_v2.HttpMethod.POST, url=e2e.stack.step_url, body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        oidc_token=tasks_v2.OidcToken(service_account_email=Settings().step_service_account,
                                      audience=e2e.stack.step_url))))


def _queue_drained(e2e: E2E, run_id: str, timeout: float = 60) -> None:
    """No task of the run is left (other tests' runs may wait on scheduled tasks meanwhile)."""
    client = make_client(e2e.stack.tasks_host)
    queue = client.queue_path(e2e.stack.config.project, "us-central1", "agex-steps")
    deadline = time.monotonic() + timeout
    while any(run_id in t.name for t in client.list_tasks(parent=queue)):
        assert time.monotonic() < deadline, "the queue did not drain"
        time.sleep(0.2)


def test_duplicate_and_stale_deliveries_change_nothing(e2e: E2E) -> None:
    run = e2e.client.start_run("support", REFUND)
    run_id = run["run_id"]
    # duplicates of step 1 while it runs: refused while the lease is live, acknowledged once it committed
    for i in range(4):
        _enqueue_raw(e2e, f"dup-live-{run_id}-{i}", {"tenant": "dev", "run_id": run_id, "step": 1})
    final = e2e.wait(run_id)
    assert final["status"] == "succeeded"
    before = _events_are_clean(e2e, run_id)
    # stale tasks for every step of the finished run, delivered again
    for step in range(1, 5):
        _enqueue_raw(e2e, f"dup-stale-{run_id}-{step}", {"tenant": "dev", "run_id": run_id, "step": step})
    _queue_drained(e2e, run_id)
    assert e2e.events(run_id) == before
    assert len(refunds_of(e2e, run_id)) == 1


@pytest.mark.parametrize("points", [
    ("step.after_claim",),
    ("step.after_model",),
    ("step.after_tool",),
    ("step.after_commit",),
    ("step.after_model", "step.after_tool", "step.after_commit"),
])
def test_a_step_killed_mid_way_is_retried_and_the_run_succeeds_with_each_effect_once(
        e2e: E2E, points: tuple[str, ...]) -> None:
    e2e.arm(*points)
    run = e2e.client.start_run("support", REFUND)
    final = e2e.wait(run["run_id"], timeout=180)
    assert e2e.armed() == [], "every failpoint fired (and killed the step worker once)"
    assert final["status"] == "succeeded", final
    events = _events_are_clean(e2e, run["run_id"])
    assert len(refunds_of(e2e, run["run_id"])) == 1
    retries = [e for e in events if e["kind"] == "step_started" and e["data"]["resumed"]]
    # a step killed before it committed is resumed by the retried task; one killed after its commit is
    # acknowledged as done, and that retry re-enqueues the next step the dead attempt never enqueued
    assert bool(retries) == any(p != "step.after_commit" for p in points)
    # a response recorded before the crash is reused: exactly one model call per step
    assert final["usage"]["model_calls"] == 4


def test_a_model_response_recorded_before_a_crash_is_not_paid_for_twice(e2e: E2E) -> None:
    e2e.arm("step.after_model")
    text = "I need a refund for order A-1187, paid twice? no."
    run = e2e.client.start_run("support", text)
    assert e2e.wait(run["run_id"], timeout=180)["status"] == "succeeded"
    calls = [r for r in e2e.model_requests() if r["first_user_text"] == text and r["status"] == 200]
    assert len(calls) == 4


def test_a_model_call_paid_for_by_an_attempt_that_died_is_counted_in_the_runs_metrics(e2e: E2E) -> None:
    from agex.adapters.gcp.firestore_metrics import FirestoreMetricsStore

    e2e.arm("step.before_record")  # the step dies after the model answered, before the answer is recorded
    text = "I need a refund for order A-1187; the second pair has a hole too."
    run = e2e.client.start_run("support", text)
    final = e2e.wait(run["run_id"], timeout=180)
    assert final["status"] == "succeeded" and final["usage"]["model_calls"] == 4
    served = [r for r in e2e.model_requests() if r["first_user_text"] == text and r["status"] == 200]
    assert len(served) == 5  # the provider was paid for one more call than the run recorded
    with e2e.stack.client_env():
        store = FirestoreMetricsStore(project=e2e.stack.config.project)
        deadline = time.monotonic() + 30
        while not store.recorded([("dev", run["run_id"])]):
            assert time.monotonic() < deadline, "the run's metrics were not recorded"
            time.sleep(0.3)
        (record,) = [r for r in store.query_run_metrics(
            ended_from=datetime.fromisoformat(final["created_at"]), ended_to=datetime.now(UTC) + timedelta(minutes=1),
            agent="support", tenant="dev") if r.run_id == run["run_id"]]
    assert record.model_calls == 4 and record.unrecorded_model_calls == 1 and record.retries == 1
    assert record.unrecorded_cost_usd > 0


def test_the_api_dying_before_the_first_enqueue_is_repaired_by_the_clients_retry(e2e: E2E) -> None:
    e2e.arm("service.after_create")
    # the API worker dies after storing the run; the client's retry, with the same Idempotency-Key,
    # gets the stored run back and enqueues its first step
    run = e2e.client.start_run("support", REFUND)
    assert e2e.armed() == []
    final = e2e.wait(run["run_id"], timeout=120)
    assert final["status"] == "succeeded"
    assert len(refunds_of(e2e, run["run_id"])) == 1


def test_a_run_whose_task_was_lost_is_recovered_by_the_sweep(e2e: E2E) -> None:
    e2e.arm("service.after_create")
    with pytest.raises(httpx.HTTPError):  # the API process dies mid-request, and this client gives up
        e2e.http.post("/v1/agents/ticker/runs", json={"input": "tick 2"},
                      headers={"Authorization": "Bearer dev-token", "Idempotency-Key": "lost-enqueue-2"})
    # only the sweep can save the run now
    run_id = keyed_run_id("dev", "lost-enqueue-2")
    final = e2e.wait(run_id, timeout=120)
    assert final["status"] == "succeeded"
    assert any(e["kind"] == "sweep_reenqueued" for e in e2e.events(run_id))


def test_model_quota_errors_are_retried_by_cloud_tasks_without_failing_the_run(e2e: E2E) -> None:
    e2e.inject_model_fault(status=429, count=2)
    e2e.inject_model_fault(status=500, count=1)
    run = e2e.client.start_run("ticker", "tick 2")
    final = e2e.wait(run["run_id"])
    assert final["status"] == "succeeded" and final["usage"]["model_calls"] == 3


def test_a_quota_storm_on_the_primary_model_completes_every_run_on_its_fallback(e2e: E2E) -> None:
    runs = 5
    e2e.inject_model_fault(status=429, count=4 * runs, model="gemini-2.5-flash")  # every call of the primary
    try:
        started = [e2e.client.start_run("support", f"Refund order A-1187 please, the socks tore ({i}).")
                   for i in range(runs)]
        finals = [e2e.wait(r["run_id"], timeout=180) for r in started]
    finally:
        httpx.delete(f"{e2e.stack.gemini_url}/_emulator/faults")
    assert all(f["status"] == "succeeded" for f in finals), finals
    reasons = []
    for run in started:
        answered = [e["data"] for e in e2e.events(run["run_id"]) if e["kind"] == "model_response"]
        assert len(answered) == 4 and {a["model"] for a in answered} == {"gemini-2.5-flash-lite"}
        assert {a["route"]["failed"][0]["model"] for a in answered} == {"gemini-2.5-flash"}
        reasons += [a["route"]["failed"][0]["reason"] for a in answered]
    # the primary answered 429 until its circuit opened (5 failures; a few more from steps already under
    # way); then the steps went straight to the fallback without asking it
    assert set(reasons) == {"quota", "circuit_open"} and 5 <= reasons.count("quota") < 4 * runs


def test_fifty_runs_started_at_once_all_succeed(e2e: E2E) -> None:
    with ThreadPoolExecutor(max_workers=10) as pool:
        runs = list(pool.map(lambda i: e2e.client.start_run("ticker", "tick 3", metadata={"i": str(i)}), range(50)))
        finals = list(pool.map(lambda r: e2e.wait(r["run_id"], timeout=300), runs))
    assert [f["status"] for f in finals] == ["succeeded"] * 50
    assert all(f["step"] == 4 for f in finals)


# --- two live attempts of one step: leases are renewed, taken over only once expired --------------------

def _steps_queue(e2e: E2E) -> tuple[tasks_v2.CloudTasksClient, str]:
    client = make_client(e2e.stack.tasks_host)
    return client, client.queue_path(e2e.stack.config.project, "us-central1", "agex-steps")


def _inside_the_call(run_id: str, timeout: float = 60) -> None:
    """Wait until the step is inside ``slow_transfer`` (the tool marks its start in the effects file)."""
    deadline = time.monotonic() + timeout
    while not test_agents.effects(run_id, "slow_transfer:started"):
        assert time.monotonic() < deadline, "the step never reached the tool call"
        time.sleep(0.1)


def _run_logs(e2e: E2E, run_id: str) -> list[dict]:
    return [e for e in e2e.log_entries("step") if e.get("logging.googleapis.com/labels", {}).get("run") == run_id]


def test_run_task_during_a_non_idempotent_call_is_refused_and_the_live_attempt_finishes(e2e: E2E) -> None:
    """RunTask dispatches the step's task again while its first attempt is inside a 9 s non-idempotent
    call, longer than the 6 s lease: the holder renews its lease, the second attempt is refused (409) and
    opens no reconciliation, the transfer happens once and the run completes."""
    run = e2e.client.start_run("slow-bank", "transfer acme 700 in 9s")
    run_id = run["run_id"]
    _inside_the_call(run_id)
    client, queue = _steps_queue(e2e)
    forced = client.run_task(name=f"{queue}/tasks/dev--{run_id}--s000001")
    assert forced.dispatch_count == 2  # "even if the task is already running"
    final = e2e.wait(run_id, timeout=60)
    assert final["status"] == "succeeded", final
    assert test_agents.effects(run_id, "slow_transfer") == ["acme:700"]
    events = _events_are_clean(e2e, run_id)
    assert not [e for e in events if e["kind"] in ("approval_requested", "tool_late_result")]
    started = [e for e in events if e["kind"] == "step_started" and e["step"] == 1]
    assert len(started) == 1 and started[0]["data"]["attempt"] == 0 and not started[0]["data"]["resumed"]
    refused = [e for e in _run_logs(e2e, run_id) if e.get("outcome") == "lease_held"]
    assert refused and all(e["attempt"] >= 1 for e in refused), "the second attempt was answered 409"
    assert not [e for e in _run_logs(e2e, run_id) if e.get("outcome") in ("lease_lost", "late_result")]
    _queue_drained(e2e, run_id)


def test_a_holder_killed_inside_a_non_idempotent_call_is_taken_over_once_its_lease_expired(e2e: E2E) -> None:
    e2e.arm("step.after_tool")  # the holder dies after the wire, before recording it
    run = e2e.client.start_run("careful", "wire initech 75")
    run_id = run["run_id"]
    e2e.wait_status(run_id, "waiting_approval", timeout=60)
    (approval,) = [a for a in e2e.manager.approvals("pending") if a["run_id"] == run_id]
    assert approval["kind"] == "reconcile"
    assert "has not reported back; its lease expired at" in approval["reason"], approval["reason"]
    events = e2e.events(run_id)
    (intent,) = [e for e in events if e["kind"] == "tool_intent"]
    takeover = [e for e in events if e["kind"] == "step_started" and e["data"]["resumed"]][-1]
    assert takeover["data"]["previous_owner"] == intent["data"]["owner"]
    # the retries of the dead attempt's task were refused until its lease expired, not taken at once
    assert _when(takeover["at"]) >= _when(takeover["data"]["previous_until"])
    assert [e for e in _run_logs(e2e, run_id) if e.get("outcome") == "lease_held"]
    e2e.manager.decide(approval["approval_id"], "done", comment="the bank shows the wire")
    assert e2e.wait(run_id)["status"] == "succeeded"
    assert test_agents.effects(run_id, "wire_money") == ["initech:75"]


def test_an_attempt_that_lost_its_lease_reports_its_call_and_the_reconciliation_is_settled_by_it(e2e: E2E) -> None:
    """The holder stops renewing (a partition, a paused instance) while its 14 s call runs. RunTask
    dispatches the task again every second: refused while the lease lives, the dispatch after its expiry
    takes the step over and opens a reconciliation. Then the call returns, and its result, recorded late,
    settles the reconciliation; the run goes on without a second call."""
    e2e.arm("step.lease_renewal", action="stall")
    run = e2e.client.start_run("slow-bank", "transfer globex 900 in 14s")
    run_id = run["run_id"]
    _inside_the_call(run_id)
    client, queue = _steps_queue(e2e)
    deadline = time.monotonic() + 30
    while not [e for e in e2e.events(run_id) if e["kind"] == "approval_requested"]:
        assert time.monotonic() < deadline, "nobody took the step over"
        with contextlib.suppress(gexc.NotFound):  # gone: the takeover's answer (200) completed the task
            client.run_task(name=f"{queue}/tasks/dev--{run_id}--s000001")
        time.sleep(1)
    assert not test_agents.effects(run_id, "slow_transfer"), "reconciliation opened while the call still ran"
    final = e2e.wait(run_id, timeout=60)
    assert e2e.armed() == []
    assert final["status"] == "succeeded", final
    assert test_agents.effects(run_id, "slow_transfer") == ["globex:900"]
    events = _events_are_clean(e2e, run_id)
    kinds = [e["kind"] for e in events if e["step"] == 1]
    assert kinds.index("approval_requested") < kinds.index("tool_late_result") < kinds.index("tool_result")
    (late,) = [e for e in events if e["kind"] == "tool_late_result"]
    (decided,) = [e for e in events if e["kind"] == "approval_decided"]
    assert decided["data"]["decision"] == "done" and decided["data"]["by"] == "agex"
    (result,) = [e for e in events if e["kind"] == "tool_result"]
    assert result["data"]["output"] == late["data"]["output"] and late["data"]["output"]["to"] == "globex"
    (approval,) = [a for a in e2e.manager.approvals() if a["run_id"] == run_id]
    assert approval["status"] == "resolved" and approval["resolution"] == "done" and approval["decided_by"] == "agex"
    assert approval["late_result"]["ok"] is True and approval["late_result"]["owner"] == late["data"]["owner"]
    assert "has not reported back" in approval["reason"]
    lost = [e for e in _run_logs(e2e, run_id) if e.get("outcome") == "late_result"]
    assert lost and lost[0]["severity"] == "WARNING" and "lost its lease" in lost[0]["message"]


def _when(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))
