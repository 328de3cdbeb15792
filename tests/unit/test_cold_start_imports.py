"""Cold start: each function, started in a fresh interpreter the way functions-framework starts it and with
its first request's handler built, has not loaded the libraries it loads on first use only: the MCP SDK
(and anyio, httpx2), httpx, Gemini's client, the Pub/Sub and Secret Manager clients. Its agents use MCP
and OpenAPI tools, whose definitions must not load their libraries (the API never calls a tool)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agex.core.decision_signing import new_key_pair

REPO = Path(__file__).resolve().parents[2]

LAZY = ("mcp", "mcp_types", "anyio", "httpx", "httpx2", "google.genai", "google.cloud.pubsub_v1",
        "google.pubsub_v1", "google.cloud.secretmanager", "google.cloud.secretmanager_v1",
        "presidio_analyzer", "spacy", "phonenumbers", "tldextract", "llamafirewall", "scipy", "numpy",
        "opentelemetry.exporter.cloud_trace", "opentelemetry.exporter.cloud_monitoring", "google.cloud.monitoring_v3",
        "google.cloud.trace_v2")

API_ONLY = ("agex.app.http.public_api", "agex.app.http.openapi", "agex.app.http.views", "agex.engine.reports")
"""The public API's modules: the step function, whose cold start a step pays, does not load them."""

PROBE = """
import json, sys
sys.path.insert(0, {folder!r})
import main
from agex.app.runtime import runtime
getattr(runtime(), {handler!r})
print("LOADED" + json.dumps(sorted(m for m in {lazy!r} if m in sys.modules)))
"""

# nothing is dialled: building the handlers opens no connection
ENV = {
    "FIRESTORE_EMULATOR_HOST": "127.0.0.1:9",
    "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
    "AGEX_TASKS_EMULATOR_HOST": "127.0.0.1:9",
    "AGEX_SECRETS_EMULATOR_HOST": "127.0.0.1:9",
    "AGEX_PROJECT": "agex-test",
    "GOOGLE_CLOUD_PROJECT": "agex-test",
    "AGEX_AGENTS": "examples.support_agent:agent,tests.e2e.agents:notes,tests.e2e.agents:fetcher",
    "AGEX_OIDC_CERTS_URL": "http://127.0.0.1:9/certs",
    "AGEX_GEMINI_API_KEY": "unused",
    "AGEX_LOG_LEVEL": "WARNING",
    "AGEX_DECISIONS_PUSH_AUDIENCE": "http://127.0.0.1:9/",
    "AGEX_DRIFT_URL": "http://127.0.0.1:9/",
    "AGEX_TRACE_EXPORTER": "gcp",
    "AGEX_METRICS_EXPORTER": "gcp",
}

FUNCTIONS = {"api": "public_api", "step": "step_endpoint", "approvals": "decision_push", "drift": "drift_endpoint"}


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[str]]:
    """What each function loaded of ``LAZY``, its three interpreters started at once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGEX_")}
    env.update(ENV, AGEX_DECISION_SOURCES=json.dumps({"api": [new_key_pair()[1]]}), PYTHONPATH=str(REPO))
    procs = {name: subprocess.Popen(
        [sys.executable, "-c", PROBE.format(folder=str(REPO / "functions" / name), handler=handler,
                                            lazy=LAZY + API_ONLY)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, handler in FUNCTIONS.items()}
    found: dict[str, list[str]] = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        line = next((x for x in out.splitlines() if x.startswith("LOADED")), None)
        assert proc.returncode == 0 and line is not None, f"the {name} function did not start:\n{err[-3000:]}"
        found[name] = json.loads(line.removeprefix("LOADED"))
    return found


@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_a_function_loads_tool_and_client_libraries_on_first_use_only(loaded: dict[str, list[str]],
                                                                       function: str) -> None:
    assert [m for m in loaded[function] if m not in API_ONLY] == []


def test_the_step_function_does_not_load_the_public_api(loaded: dict[str, list[str]]) -> None:
    assert loaded["step"] == []
    assert "agex.app.http.public_api" in loaded["api"]  # the probe sees them where they are loaded


def test_the_probe_sees_a_library_that_is_loaded() -> None:
    # the check itself works: a definition that does load the SDK is caught
    code = PROBE.replace("import main\n", "import main\nimport mcp\n").format(
        folder=str(REPO / "functions" / "api"), handler="public_api", lazy=LAZY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGEX_")}
    env.update(ENV, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("LOADED")), None)
    assert line is not None, proc.stderr[-3000:]
    assert "mcp" in json.loads(line.removeprefix("LOADED"))
