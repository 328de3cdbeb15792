"""The local stack for end-to-end tests: every emulator and both functions, started once per session."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from agex.cli.client import Client
from agex.core.decision_signing import new_key_pair
from agex.dev.emulators.gcloud import free_port
from agex.dev.stack import REPO, Stack, StackConfig

TERMINAL = {"succeeded", "failed", "cancelled", "expired"}
CHATBOT_KEY, CHATBOT_PUBLIC_KEY = new_key_pair()
"""A chat bot declared as a decision source of the stack: tests publish decisions signed with its key."""


class E2E:
    """The running stack plus what tests need to poke at it."""

    weather: WeatherApi

    def __init__(self, stack: Stack, failpoints: Path) -> None:
        self.stack = stack
        self.failpoints = failpoints
        self.client = Client(stack.api_url, "dev-token")
        self.acme = Client(stack.api_url, "acme-token")
        self.manager = Client(stack.api_url, "manager-token")
        self.clerk = Client(stack.api_url, "clerk-token")
        # the test agents' effects file, read by tests in this process too
        os.environ["AGEX_E2E_EFFECTS"] = stack.env["AGEX_E2E_EFFECTS"]
        # no keep-alive: tests kill API workers, and a pooled connection to a dead worker would be reset
        self.http = httpx.Client(base_url=stack.api_url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0))

    def wait(self, run_id: str, timeout: float = 120, client: Client | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = (client or self.client).run(run_id)
            if run["status"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['status']} after {timeout} s: {run}")
            time.sleep(0.2)

    def wait_status(self, run_id: str, status: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.client.run(run_id)
            if run["status"] == status:
                return run
            if run["status"] in TERMINAL or time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} is {run['status']}, not {status}: {run}")
            time.sleep(0.2)

    def events(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.client.events(run_id))

    def arm(self, *points: str, action: str = "kill") -> None:
        """Make the step or api function SIGKILL itself once at each failpoint (or do ``action`` there:
        ``step.lease_renewal stall`` stops a step's lease renewals)."""
        self.failpoints.write_text("".join(f"{p} {action}\n" for p in points))

    def armed(self) -> list[str]:
        return [line.split()[0] for line in self.failpoints.read_text().splitlines() if line.strip()]

    def model_requests(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.stack.gemini_url}/_emulator/requests").json()["requests"]

    def inject_model_fault(self, **fault: Any) -> None:
        httpx.post(f"{self.stack.gemini_url}/_emulator/faults", json=fault).raise_for_status()

    def pull(self, subscription: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 60,
             settle: float = 3.0) -> list[dict[str, Any]]:
        """Messages of a local subscription (``agex.dev.stack.INSPECT_SUBSCRIPTIONS``), acknowledged, until
        ``done(found)`` or ``timeout``; then ``settle`` seconds more, so a duplicate would show."""
        from google.cloud import pubsub_v1

        found: list[dict[str, Any]] = []
        with self.stack.client_env():
            subscriber = pubsub_v1.SubscriberClient()
            path = f"projects/{self.stack.config.project}/subscriptions/{subscription}"
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                wait = settle if done(found) else 10
                response = subscriber.pull(subscription=path, max_messages=50, timeout=wait)
                if response.received_messages:
                    subscriber.acknowledge(subscription=path, ack_ids=[m.ack_id for m in response.received_messages])
                found += [json.loads(m.message.data) for m in response.received_messages]
                if done(found) and wait == settle:
                    break
            subscriber.close()
        return found

    def log_entries(self, function: str) -> list[dict[str, Any]]:
        path = self.stack.config.workdir / "logs" / f"{function}.log"
        entries = []
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return entries


HERE = Path(__file__).parent
SECRETS = {"vault-a-key": "sk-live-4f9a2c7e1b", "vault-b-key": "sk-live-b0b0b0b0b0",
           "weather-token": "wx-7d1c0ffee2b9"}
TOKENS = {"dev-token": "dev@example.com", "manager-token": "manager@example.com", "clerk-token": "clerk@example.com"}


class WeatherApi:
    """The HTTP API the ``fetcher`` agent's OpenAPI tool calls; it demands the token from Secret Manager and,
    carelessly, echoes it back."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        request = Request(environ)
        self.requests.append({"path": request.path, "args": dict(request.args),
                              "auth": request.headers.get("Authorization", ""),
                              "idempotency_key": request.headers.get("Idempotency-Key", "")})
        if request.headers.get("Authorization") != f"Bearer {SECRETS['weather-token']}":
            response = Response(json.dumps({"error": "bad token"}), 401, content_type="application/json")
        else:
            city = request.path.rsplit("/", 1)[-1]
            response = Response(json.dumps({"city": city, "forecast": "sunny, 24 C",
                                            "debug": {"authorization": request.headers["Authorization"]}}),
                                content_type="application/json")
        return response(environ, start_response)


@pytest.fixture(scope="session")
def weather() -> Iterator[tuple[WeatherApi, str]]:
    api = WeatherApi()
    server = make_server("127.0.0.1", 0, api, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield api, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="session")
def mcp_url() -> Iterator[str]:
    from tests.unit.test_tools_mcp import start_http, stop

    port = free_port()
    proc = start_http(port)
    yield f"http://127.0.0.1:{port}/mcp"
    stop(proc)


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory, weather: tuple[WeatherApi, str], mcp_url: str) -> Iterator[E2E]:
    yield from stack_of(tmp_path_factory, weather, mcp_url)


def stack_of(tmp_path_factory: pytest.TempPathFactory, weather: tuple[WeatherApi, str], mcp_url: str,
             env: dict[str, str] | None = None) -> Iterator[E2E]:
    """The e2e stack, with ``env`` more settings of its functions (``AGEX_STORE``: run state on Postgres)."""
    workdir = tmp_path_factory.mktemp("stack")
    failpoints = workdir / "failpoints"
    failpoints.write_text("")
    # the examples' scenarios plus those of the test agents (tests/e2e/agents.py)
    scenarios = workdir / "scenarios"
    scenarios.mkdir()
    for source in [*(REPO / "examples" / "scenarios").glob("*.yaml"), *(HERE / "scenarios").glob("*.yaml")]:
        shutil.copy(source, scenarios / source.name)
    tokens = ",".join(f"{t}=dev:{p}" for t, p in TOKENS.items()) + ",acme-token=acme:ops@acme.test"
    config = StackConfig(api_port=free_port(), workdir=workdir, sweep_every_seconds=1.0, sweep_after_seconds=4.0,
                         step_lease_seconds=6.0, scenarios=scenarios, dev_tokens=tokens,
                         fleet_file=HERE / "fleet.yaml", step_workers=2, secrets=SECRETS,
                         keep_model_requests=True, decision_sources={"chatbot": CHATBOT_PUBLIC_KEY},
                         extra_env={"AGEX_FAILPOINTS_FILE": str(failpoints),
                                    "AGEX_E2E_EFFECTS": str(workdir / "effects.sqlite"),
                                    "AGEX_SECRET_CACHE_SECONDS": "2", "AGEX_TRACE_EXPORTER": "console", "AGEX_E2E_HTTP_URL": weather[1],
                                    "AGEX_E2E_MCP_URL": mcp_url, **(env or {})})
    effects = os.environ.get("AGEX_E2E_EFFECTS")
    with Stack(config) as stack:
        e2e = E2E(stack, failpoints)
        e2e.weather = weather[0]
        try:
            yield e2e
        finally:  # a second stack of the session points this process at its effects only while it runs
            if effects is not None:
                os.environ["AGEX_E2E_EFFECTS"] = effects
