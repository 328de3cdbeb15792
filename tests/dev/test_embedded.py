"""``agex dev --backend memory``: the API, steps, approvals and timers in one process on the in-memory adapters,
with the Gemini emulator's scenarios; and ``agex new``'s agent run on it end to end."""

from __future__ import annotations

import shutil
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agex.adapters.inmemory.event_bus import InMemoryEventBus
from agex.cli.client import ApiError, Client
from agex.core.approval import DECISIONS_DEAD_LETTER_TOPIC, DECISIONS_TOPIC
from agex.dev.embedded import Embedded, EmbeddedConfig
from agex.dev.scaffold import scaffold
from agex.dev.stack import REPO
from tests.dev.helpers import agex_dev, wait_for

HERE = Path(__file__).parent
REFUND = "Hi, I'd like a refund for order A-1042: the boots arrived with a split sole."


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    scenarios = tmp_path_factory.mktemp("scenarios")
    for source in [*(REPO / "examples" / "scenarios").glob("*.yaml"), *(HERE / "scenarios").glob("*.yaml")]:
        shutil.copy(source, scenarios / source.name)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AGEX_EXAMPLE_LEDGER", str(tmp_path_factory.mktemp("ledger") / "refunds.sqlite"))
        config = EmbeddedConfig(api_port=0, fleet_file=None, scenarios=scenarios,
                                agents="examples.support_agent:agent,tests.dev.agents:sleeper,tests.dev.agents:hasty")
        with Embedded(config) as system:
            yield system


def test_a_refund_waits_for_the_lead_and_succeeds_once_approved(system: Embedded) -> None:
    dev, lead = Client(system.api_url, "dev-token"), Client(system.api_url, "manager-token")
    run = dev.start_run("support", REFUND)
    wait_for(dev, run["run_id"], "waiting_approval")
    [approval] = [a for a in lead.approvals("pending") if a["run_id"] == run["run_id"]]
    assert approval["tool"] == "issue_refund" and approval["arguments"]["amount_usd"] == 89.0
    with pytest.raises(ApiError) as refused:  # four eyes: not the one who started the run
        dev.decide(approval["approval_id"], "approve")
    assert refused.value.status == 403
    lead.decide(approval["approval_id"], "approve", comment="Regular customer, defect confirmed.")
    final = wait_for(dev, run["run_id"], "succeeded")
    assert final["step"] == 4 and "refunded the full $89.00" in final["result"]
    assert lead.approval(approval["approval_id"])["decided_by"] == "manager@example.com"
    kinds = [e["kind"] for e in dev.events(run["run_id"])]
    assert kinds.count("tool_result") == 3 and kinds[-1] == "run_finished"


def test_a_timer_resumes_the_run_when_it_is_due(system: Embedded) -> None:
    dev = Client(system.api_url, "dev-token")
    run = dev.start_run("sleeper", "wait a second")
    waiting = wait_for(dev, run["run_id"], "waiting_timer")
    started = time.monotonic()
    final = wait_for(dev, run["run_id"], "succeeded")
    assert time.monotonic() - started <= 5 and final["result"] == "Woke up."
    assert "timer_set" in [e["kind"] for e in dev.events(run["run_id"])] and waiting["step"] == 1


def test_an_approval_nobody_decides_expires_and_the_run_goes_on(system: Embedded) -> None:
    dev = Client(system.api_url, "dev-token")
    run = dev.start_run("hasty", "ship P1")
    wait_for(dev, run["run_id"], "waiting_approval")
    final = wait_for(dev, run["run_id"], "succeeded")
    assert final["result"] == "Parcel P1 was not shipped: nobody signed off in time."
    [approval] = [a for a in dev.approvals("expired") if a["run_id"] == run["run_id"]]
    assert approval["status"] == "expired"


def test_another_tenant_sees_nothing_and_a_bad_token_is_refused(system: Embedded) -> None:
    run = Client(system.api_url, "dev-token").start_run("sleeper", "wait")
    with pytest.raises(ApiError) as hidden:
        Client(system.api_url, "acme-token").run(run["run_id"])
    assert hidden.value.status == 404
    answer = httpx.get(f"{system.api_url}/v1/agents", headers={"Authorization": "Bearer nope"})
    assert answer.status_code == 401 and answer.json()["error"]["code"]


def test_the_api_s_body_limits_stand_in_front(system: Embedded) -> None:
    answer = httpx.post(f"{system.api_url}/v1/agents/support/runs", content=b"x" * 200_000,
                        headers={"Authorization": "Bearer dev-token", "Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"]["code"]


def test_a_decision_nobody_signed_is_dead_lettered(system: Embedded) -> None:
    assert system.runtime is not None
    bus = system.runtime.bus
    assert isinstance(bus, InMemoryEventBus)
    bus.publish(DECISIONS_TOPIC, {"not": "a decision"})
    deadline = time.monotonic() + 5
    while not bus.on(DECISIONS_DEAD_LETTER_TOPIC):
        assert time.monotonic() < deadline, "not dead-lettered"
        time.sleep(0.05)
    assert bus.on(DECISIONS_DEAD_LETTER_TOPIC)[-1].message == {"not": "a decision"}


def test_stop_leaves_no_server_or_thread_behind(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    system = Embedded(EmbeddedConfig(api_port=0)).start()
    ports = [int(url.rsplit(":", 1)[1]) for url in (system.api_url, system.gemini_url)]
    assert Client(system.api_url, "dev-token").agents()
    system.stop()
    for port in ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"
    deadline = time.monotonic() + 10  # the model's warm-up import may still be finishing
    while [t for t in set(threading.enumerate()) - before if t.is_alive()]:
        assert time.monotonic() < deadline, [t.name for t in set(threading.enumerate()) - before]
        time.sleep(0.05)


def test_a_port_in_use_is_said(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot serve on 127.0.0.1:{port}.*--port"):
            Embedded(EmbeddedConfig(api_port=port)).start()


def test_agex_new_then_agex_dev_memory_runs_the_new_agent(tmp_path: Path) -> None:
    scaffold("greeter", tmp_path)
    with agex_dev(tmp_path, "--backend", "memory") as dev:
        client = Client(dev.url, "dev-token")
        assert [a["name"] for a in client.agents()] == ["greeter"]
        run = client.start_run("greeter", "Please greet Ada")
        final = wait_for(client, run["run_id"], "succeeded")
        assert final["result"] == "Hello, Ada! Have a good day."
        [result] = [e for e in client.events(run["run_id"]) if e["kind"] == "tool_result"]
        assert result["data"]["output"] == {"greeting": "Hello, Ada!"}
    assert (tmp_path / ".agex" / "logs" / "agex.log").read_text().count('"run succeeded"') == 1


def test_embedded_start_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Reported, not asserted (the bound only catches a hang): spawn to ready line, and what it printed."""
    walls, reported = [], []
    for _ in range(3):
        with agex_dev(tmp_path, "--backend", "memory", "--fleet", str(REPO / "examples" / "fleet.yaml"),
                      "--scenarios", str(REPO / "examples" / "scenarios")) as dev:
            walls.append(dev.ready_s)
            reported.append(dev.reported_s)
            assert {a["name"] for a in Client(dev.url, "dev-token").agents()} == {"support", "ticker"}
    with capsys.disabled():
        print(f"\nagex dev --backend memory: ready {statistics.median(walls):.2f} s after spawn (median of "
              f"{', '.join(f'{w:.2f}' for w in walls)}); it printed {', '.join(f'{r:.2f}' for r in reported)} s "
              f"(python {sys.version.split()[0]})")
    assert max(walls) < 20
