"""The drift story on the local stack, through the real functions, Firestore, Cloud Tasks and Pub/Sub:
version 1 of the sample support agent serves a stream of refund requests; version 2 is deployed with a
behaviour-relevant setting that doubles refunds; under the same traffic, the drift function (run every
few seconds by the local scheduler, and also twice at once by hand) publishes exactly one alert naming
the refund amount, with example runs, within one drift interval. Version 1 alone raised none.

The metrics, usage and alerts are then read back through the API and the CLI."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agex.cli import main as cli
from agex.cli.client import ApiError, Client
from agex.dev.stack import SCHEDULER_IDENTITY, Stack, StackConfig

HERE = Path(__file__).parent / "drift"
INTERVAL_S = 3.0
WINDOW_S = 120.0
"""Each version's runs fit in one window; 40 checks of a window share the false-alarm budget."""
RUNS_PER_VERSION = 20
ORDERS = {"A-1187": 24.0, "A-1042": 89.0, "A-3310": 129.0}
TERMINAL = {"succeeded", "failed", "cancelled", "expired"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("drift")
    config = StackConfig(api_port=0, workdir=workdir, fleet_file=HERE / "fleet-v1.yaml",
                         scenarios=HERE / "scenarios", drift_every_seconds=INTERVAL_S, drift_window_seconds=WINDOW_S,
                         extra_env={"AGEX_DRIFT_MIN_RUNS": str(RUNS_PER_VERSION), "AGEX_DRIFT_SETTLE_SECONDS": "5"})
    from agex.dev.emulators.gcloud import free_port

    config.api_port = free_port()
    with Stack(config) as s:
        yield s


def _traffic(client: Client, seed: int) -> list[str]:
    """The same stream of requests for every version: orders and the refund the policy allows."""
    rng = random.Random(seed)
    ids = []
    for i in range(RUNS_PER_VERSION):
        order = rng.choice(sorted(ORDERS))
        refund = round(rng.uniform(10.0, 20.0), 2)
        text = f"Please refund order {order} (refund {refund:.2f}, goodwill {2 * refund:.2f}), ticket {seed}-{i}."
        ids.append(_start(client, text, key=f"drift-{seed}-{i}-{time.monotonic_ns()}"))
    return ids


def _start(client: Client, text: str, key: str) -> str:
    # a busy machine may keep the API's first request (which loads the guards' models) past its read timeout:
    # the keyed retry is the same run
    for attempt in range(3):
        try:
            return str(client.start_run("support", text, idempotency_key=key)["run_id"])
        except ApiError as e:
            if e.status != 408 or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _finish(client: Client, ids: list[str], timeout: float = 180) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(ids):
        for run_id in ids:
            if run_id not in done:
                run = client.run(run_id)
                if run["status"] in TERMINAL:
                    done[run_id] = run
        assert time.monotonic() < deadline, f"{len(ids) - len(done)} runs did not finish"
        time.sleep(0.3)
    return [done[i] for i in ids]


def _pull(stack: Stack, timeout: float) -> list[dict[str, Any]]:
    """Drift alerts on the local subscription of agex-drift-alerts, as a notifier would read them."""
    from google.cloud import pubsub_v1

    found: list[dict[str, Any]] = []
    with stack.client_env():
        subscriber = pubsub_v1.SubscriberClient()
        path = f"projects/{stack.config.project}/subscriptions/agex-drift-alerts-local"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = subscriber.pull(subscription=path, max_messages=50, timeout=5)
            if response.received_messages:
                subscriber.acknowledge(subscription=path, ack_ids=[m.ack_id for m in response.received_messages])
                found += [json.loads(m.message.data) for m in response.received_messages]
    return found


def _log_tail(stack: Stack, name: str, lines: int = 30) -> str:
    """The last lines of a function's log that are not request lines: what a failed assertion should show."""
    text = (stack.config.workdir / "logs" / f"{name}.log").read_text().splitlines()
    return "\n".join([line for line in text if '"agex.http"' not in line][-lines:])


def _check_now(stack: Stack, times: int) -> None:
    """Call the drift function as Cloud Scheduler does (its OIDC token), ``times`` at once."""
    from agex.adapters.gcp.cloud_tasks import make_client, post_with_oidc

    with stack.client_env():
        client = make_client(stack.tasks_host)
    queue = client.queue_path(stack.config.project, "us-central1", "agex-steps")
    for _ in range(times):
        post_with_oidc(client, queue, url=stack.drift_url, service_account=SCHEDULER_IDENTITY,
                       audience=stack.drift_url)


def test_doubled_refunds_after_a_deploy_raise_one_alert_within_one_interval(stack: Stack,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    client = Client(stack.api_url, "dev-token")
    v1 = _finish(client, _traffic(client, seed=1))
    assert all(r["status"] == "succeeded" for r in v1), [r["error"] for r in v1 if r["status"] != "succeeded"]
    time.sleep(2 * INTERVAL_S)
    assert _pull(stack, timeout=2) == []  # a first version has no baseline: nothing to compare, nothing raised

    stack.redeploy(HERE / "fleet-v2.yaml")
    assert client.agents()[0]["version"] == "2"
    v2 = _finish(client, _traffic(client, seed=1))
    assert all(r["status"] == "succeeded" for r in v2)
    last_end = max(datetime.fromisoformat(r["updated_at"]) for r in v2)
    _check_now(stack, times=2)  # two checks at once, on top of the scheduled ones: still one alert per metric
    alerts = _pull(stack, timeout=4 * INTERVAL_S + 5)

    by_metric: dict[str, list[dict[str, Any]]] = {}
    for a in alerts:
        by_metric.setdefault(a["metric"], []).append(a)
    # one alert per metric and window: a metric still moved when the window rolls over is alerted again in the
    # next one (another alert_id), which the pull may catch on a slow machine
    per_window = [(a["metric"], a["window"]["id"]) for a in alerts]
    assert len(per_window) == len(set(per_window)), by_metric
    assert len({a["alert_id"] for a in alerts}) == len(alerts), by_metric
    assert "watched.issue_refund.amount_usd" in by_metric, (alerts, _log_tail(stack, "drift"), _log_tail(stack, "step"))
    amount = by_metric["watched.issue_refund.amount_usd"][0]
    # the longer instructions of version 2 cost tokens, and a busy machine can move latency: real changes too
    assert set(by_metric) <= {"watched.issue_refund.amount_usd", "watched.refund_share", "cost_usd", "tokens",
                              "latency_s"}, set(by_metric)
    assert amount["type"] == "drift.alert" and amount["schema"] == 1
    assert (amount["agent"], amount["version"], amount["baseline_version"]) == ("support", "2", "1")
    assert amount["current"]["mean"] == pytest.approx(2 * amount["baseline"]["mean"], rel=0.01)
    assert amount["test"] == "ks" and amount["p_value"] < amount["threshold"]
    examples = {e["run_id"] for e in amount["examples"]}
    assert examples and examples <= {r["run_id"] for r in v2}
    # within one drift interval of the last run that made the difference (plus a check's own time)
    detected = datetime.fromisoformat(amount["detected_at"])
    assert (detected - last_end).total_seconds() <= INTERVAL_S + 5 + 3, (detected, last_end)

    # read back through the API and the CLI
    metrics = client.metrics("support", bucket="none")
    versions = {v["version"]: v for v in metrics["versions"]}
    assert versions["1"]["total"]["runs"] == versions["2"]["total"]["runs"] == RUNS_PER_VERSION
    assert versions["2"]["total"]["watched"]["issue_refund.amount_usd"]["mean"] == pytest.approx(
        2 * versions["1"]["total"]["watched"]["issue_refund.amount_usd"]["mean"], rel=0.01)
    assert len(versions["2"]["fingerprints"]) == 1 and versions["1"]["fingerprints"] != versions["2"]["fingerprints"]
    usage = client.usage(group_by="version,model")
    assert sum(g["model_calls"] for g in usage["groups"]) == 8 * RUNS_PER_VERSION
    assert cli.main(["--api", stack.api_url, "alerts", "--agent", "support"]) == 0
    assert cli.main(["--api", stack.api_url, "metrics", "support"]) == 0
    assert cli.main(["--api", stack.api_url, "usage", "--group-by", "user,tool"]) == 0
    out = capsys.readouterr().out
    assert "DRIFT support@2 watched.issue_refund.amount_usd" in out
    assert "issue_refund.amount_usd" in out and "issue_refund" in out
