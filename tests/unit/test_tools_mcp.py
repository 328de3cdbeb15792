"""MCP tools against a real MCP server (tests/mcp_servers/notes_server.py), over stdio and over
streamable HTTP: the allow-list, the listing, calls, errors, and that nothing connects before use."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agex.core.agent import Agent
from agex.core.errors import ConfigurationError, TransientError
from agex.dev.emulators.gcloud import free_port
from agex.tools import Tool, ToolContext
from agex.tools.mcp import HttpServer, McpServer, StdioServer, mcp_tools

SERVER = Path(__file__).resolve().parents[1] / "mcp_servers" / "notes_server.py"
CTX = ToolContext(tenant="t", run_id="r", step=1, call_id="c", idempotency_key="k")


def stdio_server(marker: Path | None = None) -> StdioServer:
    env = {"NOTES_STARTED_MARKER": str(marker)} if marker else None
    return StdioServer(sys.executable, (str(SERVER), "stdio"), env=env)


def start_http(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, str(SERVER), "http", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"notes server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError("notes server did not answer within 30 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    port = free_port()
    proc = start_http(port)
    yield f"http://127.0.0.1:{port}/mcp"
    stop(proc)


@pytest.fixture(params=["stdio", "http"])
def server(request: pytest.FixtureRequest) -> McpServer:
    if request.param == "stdio":
        return stdio_server()
    return HttpServer(request.getfixturevalue("http_url"))


def by_name(tools: tuple[Tool, ...]) -> dict[str, Tool]:
    return {t.name: t for t in tools}


def test_the_allow_list_filters_the_servers_tools(server: McpServer) -> None:
    tools = mcp_tools(server, ["add_note", "list_notes"], prefix="notes_")
    assert [t.name for t in tools] == ["notes_add_note", "notes_list_notes"]
    # the server also offers fail and secret_echo: listing does not add them
    assert [t.spec().name for t in tools] == ["notes_add_note", "notes_list_notes"]


def test_the_spec_has_the_servers_description_and_schema(server: McpServer) -> None:
    add = mcp_tools(server, ["add_note"])[0]
    spec = add.spec()
    assert spec.description == "Add a note and return how many notes there are now."
    assert spec.parameters["type"] == "object"
    assert spec.parameters["required"] == ["text"]
    assert spec.parameters["properties"]["text"]["type"] == "string"


def test_a_call_returns_the_result(server: McpServer) -> None:
    tools = by_name(mcp_tools(server, ["add_note", "list_notes"], prefix="n_", idempotent=["list_notes"]))
    assert tools["n_list_notes"].idempotent and not tools["n_add_note"].idempotent
    outcome = tools["n_add_note"].call({"text": "buy milk"}, CTX)
    assert outcome.ok, outcome.output
    assert "buy milk" in str(outcome.output["content"])
    assert tools["n_list_notes"].call({}, CTX).ok


def test_arguments_are_checked_loosely_against_the_servers_schema(server: McpServer) -> None:
    add = mcp_tools(server, ["add_note"])[0]
    missing = add.call({}, CTX)
    assert not missing.ok and "text: required" in missing.output["error"]
    wrong = add.call({"text": 3}, CTX)
    assert not wrong.ok and "text: expected string" in wrong.output["error"]


def test_an_error_result_is_a_tool_error_with_the_servers_text(server: McpServer) -> None:
    fail = mcp_tools(server, ["fail"])[0]
    outcome = fail.call({}, CTX)
    assert not outcome.ok
    assert "McpToolError" in outcome.output["error"] and "the notebook is on fire" in outcome.output["error"]


def test_an_allowed_tool_the_server_does_not_offer_is_a_clear_error(server: McpServer) -> None:
    tools = mcp_tools(server, ["add_note", "delete_everything"])
    with pytest.raises(ConfigurationError, match="does not offer the allowed tool.*'delete_everything'.*add_note"):
        tools[0].spec()
    outcome = tools[1].call({}, CTX)
    assert not outcome.ok and "delete_everything" in outcome.output["error"]


def test_defining_the_tools_and_the_agent_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    tools = mcp_tools(stdio_server(marker), ["add_note", "list_notes"])
    Agent(name="notes", instructions="Keep notes.", tools=tools)
    assert not marker.exists()
    tools[0].spec()
    tools[1].spec()
    assert marker.read_text().count("started") == 1  # listed once for both tools, cached
    assert tools[1].call({}, CTX).ok
    assert marker.read_text().count("started") == 2  # a call is a process of its own


def test_defining_http_tools_opens_no_connection() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.3)
        mcp_tools(HttpServer(f"http://127.0.0.1:{listener.getsockname()[1]}/mcp"), ["add_note"])
        with pytest.raises(TimeoutError):
            listener.accept()


def test_the_bearer_secret_is_declared_and_sent_at_call_time(http_url: str) -> None:
    echo = mcp_tools(HttpServer(http_url, bearer_secret="notes-token"), ["secret_echo"])[0]
    assert echo.secrets == ("notes-token",)
    outcome = echo.call({}, ToolContext(tenant="t", run_id="r", step=1, call_id="c", idempotency_key="k",
                                        secrets={"notes-token": "s3cret"}))
    assert outcome.ok, outcome.output
    # the server saw the secret; what comes back may be scrubbed of it by Tool.call
    assert any(f"Bearer {v}" in str(outcome.output["content"]) for v in ("s3cret", "[secret:notes-token]"))
    assert not echo.call({}, CTX).ok  # the secret was not provided


@pytest.mark.parametrize("server", [StdioServer("/nonexistent/mcp-server"),
                                    HttpServer(f"http://127.0.0.1:{free_port()}/mcp")],
                         ids=["stdio", "http"])
def test_an_unreachable_server_is_transient(server: McpServer) -> None:
    tools = mcp_tools(server, ["add_note"])
    outcome = tools[0].call({"text": "x"}, CTX)
    assert not outcome.ok and outcome.output["error"].startswith("TransientToolError")
    with pytest.raises(TransientError):
        tools[0].spec()


def test_a_server_gone_after_listing_is_a_transient_error_retried_in_the_step() -> None:
    port = free_port()
    proc = start_http(port)
    try:
        listing = mcp_tools(HttpServer(f"http://127.0.0.1:{port}/mcp"), ["list_notes"], idempotent=["list_notes"])[0]
        listing.spec()
    finally:
        stop(proc)
    outcome = listing.call({}, CTX)
    assert not outcome.ok
    assert outcome.output["error"].startswith("TransientToolError") and "after 3 attempts" in outcome.output["error"]


def test_bad_definitions_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        mcp_tools(stdio_server(), "add_note")
    with pytest.raises(ConfigurationError):
        mcp_tools(stdio_server(), ["add_note"], idempotent=["fail"])
    with pytest.raises(ConfigurationError):
        HttpServer("localhost:8000/mcp")


def test_a_call_past_its_timeout_is_cut_off_and_its_server_stopped(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    nap = mcp_tools(stdio_server(marker), ["nap"], timeout_s=3)[0]
    nap.spec()
    started = time.monotonic()
    outcome = nap.call({"seconds": 30}, CTX)
    assert not outcome.ok and "timed out" in outcome.output["error"]
    assert time.monotonic() - started < 10
    pid = int(marker.read_text().splitlines()[-1].split()[1])  # the call's server, not the listing's
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid), "the timed-out call left its server process running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too: it only waits for its parent to reap it; and it may be reaped while we look
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"
