"""The typed client (agex.client) against the real API: the in-memory runtime's ``PublicApi`` served over HTTP on
127.0.0.1, behind a WSGI wrapper that can answer 503 or 500, or drop a connection (before or after the API
handled the request, or in the middle of an event stream), so retries and resumption are tested against what
a server really does. Runs move when the test drives the runtime, from a thread while a client follows."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request

from agex.app.runtime import Runtime
from agex.client import (
    ApiError,
    ApiUnreachable,
    AsyncClient,
    BudgetExceeded,
    Client,
    EventView,
    RetryPolicy,
    RunStatus,
    RunView,
)
from agex.client.sse import Parser
from agex.core.agent import Agent
from agex.core.errors import LeaseHeld, NotDue, TransientError
from agex.core.spend import Budget
from agex.testing import FunctionModel, TestModel
from agex.testing.harness import InMemoryRuntime
from examples.support_agent import agent as support
from examples.ticker_agent import agent as sample_ticker

TOKENS = ("dev-token=dev:dev@example.com,manager-token=dev:manager@example.com,acme-token=acme:ops@acme.test,"
          "lister-token=dev:lister@example.com")
TICKS = 6
REFUND = {"lookup_order": {"order_id": "A-1042"}, "check_refund_policy": {"order_id": "A-1042"},
          "issue_refund": {"order_id": "A-1042", "amount_usd": 89.0, "reason": "split sole"}}
ticker = sample_ticker.model_copy(update={"guards": ()})  # the client is under test, not the guardrails
SPENDER = Agent(name="spender", instructions="Answer.", model="gemini-2.5-flash", guards=())
BUDGET = Budget(name="spender-day", scope="user", max_tokens=1, action="refuse", agents=("spender",))
FAST = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.05)


def _ticks(request: Any) -> Any:
    turns = sum(1 for m in request.messages if m.role == "model")
    return [("tick", {"n": turns})] if turns < TICKS else "ticked"


MODELS = {"ticker": FunctionModel(_ticks), "support": TestModel("Refunded.", args_for=lambda name: REFUND[name]),
          "spender": FunctionModel(lambda request: "fine")}


# --- the server --------------------------------------------------------------------------------------

@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]


@dataclass
class Faults:
    """WSGI in front of the API: records every request, and fails the next ones matching a rule as the
    rule says: ``503``/``500``/``429`` answers, ``drop`` (the connection closes before the API sees the
    request), ``lost`` (the API handles it, then the connection closes: the answer is lost), ``cut:N`` (an
    event stream closes after N events)."""

    app: Callable[..., Iterable[bytes]]
    plan: list[tuple[str, str, str]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, method: str, fragment: str, how: str, times: int = 1) -> None:
        with self.lock:
            self.plan += [(method, fragment, how)] * times

    def requests(self, method: str, fragment: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == method and fragment in f"{s.path}?{s.query}"]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path, query = environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", "")
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        with self.lock:
            self.seen.append(Seen(method, path, query, headers))
            rule = next((r for r in self.plan if r[0] == method and r[1] in f"{path}?{query}"), None)
            if rule is not None:
                self.plan.remove(rule)
        how = rule[2] if rule else ""
        sock: socket.socket = environ["werkzeug.socket"]
        if how in ("503", "500", "429"):
            code = {"503": "unavailable", "500": "internal", "429": "budget_exceeded"}[how]
            extra = {"Retry-After": "0"} if how == "429" else {}
            start_response(f"{how} Error", [("Content-Type", "application/json"), *extra.items()])
            return [json.dumps({"error": {"code": code, "message": "injected", "budget": "b"}}).encode()]
        if how == "drop":
            sock.shutdown(socket.SHUT_RDWR)
            return []
        if how == "lost":
            for _ in self.app(environ, lambda *args: None):
                pass
            sock.shutdown(socket.SHUT_RDWR)
            return []
        if how.startswith("cut:"):
            return _cut(self.app(environ, start_response), int(how[4:]), sock)
        return self.app(environ, start_response)


def _cut(chunks: Iterable[bytes], events: int, sock: socket.socket) -> Iterator[bytes]:
    sent = 0
    for chunk in chunks:
        yield chunk
        sent += sum(1 for line in chunk.split(b"\n") if line.startswith(b"id: "))
        if sent >= events:
            sock.shutdown(socket.SHUT_RDWR)
            return


@dataclass
class Served:
    rt: InMemoryRuntime
    url: str
    faults: Faults

    def client(self, token: str = "dev-token", **kwargs: Any) -> Client:
        return Client(self.url, token, retry=kwargs.pop("retry", FAST), **kwargs)

    def aclient(self, token: str = "dev-token", **kwargs: Any) -> AsyncClient:
        return AsyncClient(self.url, token, retry=kwargs.pop("retry", FAST), **kwargs)

    def drive(self) -> None:
        self.rt.drive()

    @contextlib.contextmanager
    def moving(self, pause_s: float = 0.01) -> Iterator[None]:
        """Deliver the runtime's tasks one at a time, ``pause_s`` apart, from another thread."""
        stop = threading.Event()

        def deliver() -> None:
            while not stop.is_set():
                self.rt.deliver_decisions()
                for task in self.rt.queue.pending()[:1]:
                    self.rt.queue.drop(task)
                    with contextlib.suppress(LeaseHeld, NotDue, TransientError):
                        self.rt.deliver(task)
                stop.wait(pause_s)

        thread = threading.Thread(target=deliver, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(5)


@pytest.fixture
def served(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setenv("AGEX_EXAMPLE_LEDGER", str(tmp_path / "refunds.sqlite"))
    rt = InMemoryRuntime([ticker, support, SPENDER], lambda agent: MODELS[agent.name], budgets=[BUDGET])
    # streams last half a second, so following a run also goes through the server's `event: reconnect`
    settings = rt.runtime.settings.model_copy(update={"dev_tokens": TOKENS, "budgets": [BUDGET],
                                                      "stream_max_seconds": 0.5})
    api = Runtime(settings, rt.runtime.backends, agents=rt.agents).public_api
    faults = Faults(Request.application(api))
    server = make_server("127.0.0.1", 0, faults, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Served(rt, f"http://127.0.0.1:{server.server_port}", faults)
    finally:
        server.shutdown()
        thread.join(5)


def _stored_seqs(served: Served, run_id: str) -> list[int]:
    return [e.seq for e in served.rt.store.list_events("dev", run_id, limit=10_000)]


# --- runs ----------------------------------------------------------------------------------------------

def test_start_wait_and_read_a_run(served: Served) -> None:
    with served.client() as client:
        run = client.start_run("ticker", "tick", metadata={"ticket": "77"})
        assert isinstance(run, RunView) and run.status == RunStatus.queued and run.metadata == {"ticket": "77"}
        (start,) = served.faults.requests("POST", "/v1/agents/ticker/runs")
        assert start.headers["idempotency-key"].startswith("agex-client-")  # always keyed
        assert client.run(run.run_id, wait=0.2).status == RunStatus.queued  # the wait is up: as it is
        with served.moving():
            done = Client(served.url, "dev-token", wait_chunk_s=0.3).wait(run.run_id, timeout=10)
        assert done.status == RunStatus.succeeded and done.result == "ticked" and done.usage.model_calls == TICKS + 1
        assert len(served.faults.requests("GET", f"/v1/runs/{run.run_id}?wait=0.3s")) >= 1
        assert client.agent("ticker").name == "ticker"
        assert [a.name for a in client.agents()] == ["spender", "support", "ticker"]


def test_start_with_wait_answers_the_finished_run(served: Served) -> None:
    with served.client() as client, served.moving():
        run = client.start_run("ticker", "tick", wait=10)
    assert run.status == RunStatus.succeeded


def test_a_wait_that_times_out_answers_the_run_as_it_is(served: Served) -> None:
    with served.client(wait_chunk_s=0.2) as client:
        run = client.start_run("ticker", "tick")
        started = time.monotonic()
        assert client.wait(run.run_id, timeout=0.5).status == RunStatus.queued
    assert 0.4 < time.monotonic() - started < 3


def test_runs_are_listed_newest_first_across_pages(served: Served) -> None:
    with served.client("lister-token") as lister, served.client() as dev:
        mine = [lister.start_run("ticker", f"tick {i}").run_id for i in range(5)]
        dev.start_run("ticker", "not the lister's")
        served.rt.clock.advance(60)
        later = lister.start_run("support", "Refund order A-1042, please.").run_id
        listed = list(lister.runs(principal="lister@example.com", page_size=2))
        assert [r.run_id for r in listed] == [later, *sorted(mine, reverse=True)]
        assert len(served.faults.requests("GET", "/v1/runs?")) == 3
        assert [r.run_id for r in lister.runs(principal="lister@example.com", agent="support")] == [later]
        cut = datetime.fromtimestamp(served.rt.clock.now().timestamp() - 30, UTC)
        assert [r.run_id for r in lister.runs(principal="lister@example.com", created_after=cut)] == [later]
        assert len(list(lister.runs(principal="lister@example.com", created_before=cut,
                                    status=RunStatus.queued))) == 5
    with served.client("acme-token") as acme:
        assert list(acme.runs()) == []


def test_events_are_read_page_after_page(served: Served) -> None:
    with served.client() as client:
        run = client.start_run("ticker", "tick")
        served.drive()
        events = list(client.events(run.run_id))
        assert [e.seq for e in events] == _stored_seqs(served, run.run_id) and all(isinstance(e, EventView) for e in events)
        assert events[0].kind == "run_created" and events[-1].kind == "run_finished"
        assert [e.seq for e in client.events(run.run_id, after=5)] == [e.seq for e in events[5:]]
        page = client.events_page(run.run_id, page_size=3)
        assert [e.seq for e in page.events] == [1, 2, 3] and page.next_page_token == "3"


def test_follow_yields_events_as_they_are_committed_until_the_end(served: Served) -> None:
    with served.client() as client:
        run = client.start_run("ticker", "tick")
        with served.moving(pause_s=0.15):  # a second or so: the stream is renewed once or twice
            seqs, kinds = [], []
            for event in client.follow(run.run_id):
                seqs.append(event.seq)
                kinds.append(event.kind)
    assert seqs == _stored_seqs(served, run.run_id) and kinds[-1] == "run_finished"
    follows = served.faults.requests("GET", f"/v1/runs/{run.run_id}/events?follow=true")
    # the server's streams last half a second: each reconnection asked for what came after the last event
    assert len(follows) > 1
    assert [int(f.headers["last-event-id"]) for f in follows] == sorted(int(f.headers["last-event-id"]) for f in follows)


def test_a_stream_cut_mid_run_resumes_with_no_gap_and_no_copy(served: Served) -> None:
    with served.client() as client:
        run = client.start_run("ticker", "tick")
        for task in served.rt.queue.pending()[:1]:  # a few events exist already, the rest come while it follows
            served.rt.queue.drop(task)
            served.rt.deliver(task)
        served.faults.fail("GET", "follow=true", "cut:3")
        served.faults.fail("GET", "follow=true", "drop")
        with served.moving(pause_s=0.03):
            seqs = [e.seq for e in client.follow(run.run_id)]
    assert seqs == _stored_seqs(served, run.run_id) == list(range(1, len(seqs) + 1))
    follows = served.faults.requests("GET", "follow=true")
    assert [f.headers["last-event-id"] for f in follows[:3]] == ["0", "3", "3"]


def test_follow_from_the_middle_and_of_a_finished_run(served: Served) -> None:
    with served.client() as client:
        run = client.start_run("ticker", "tick")
        served.drive()
        everything = _stored_seqs(served, run.run_id)
        assert [e.seq for e in client.follow(run.run_id, after=4)] == everything[4:]


def test_follow_stops_at_its_timeout(served: Served) -> None:
    with served.client() as client:
        run = client.start_run("ticker", "tick")  # nothing drives it: it never moves
        started = time.monotonic()
        assert [e.kind for e in client.follow(run.run_id, timeout=0.8)] == ["run_created"]
    assert time.monotonic() - started < 3


def test_cancel_and_a_cancel_whose_answer_was_lost(served: Served) -> None:
    with served.client() as client:
        run = client.start_run("ticker", "tick")
        assert client.cancel(run.run_id).status == RunStatus.cancelled
        with pytest.raises(ApiError) as finished:
            client.cancel(run.run_id)  # cancelled already, and this is the first attempt: a real 409
        assert finished.value.status == 409 and finished.value.code == "conflict"
        other = client.start_run("ticker", "tick")
        served.faults.fail("POST", ":cancel", "lost")
        assert client.cancel(other.run_id).status == RunStatus.cancelled
        assert len(served.faults.requests("POST", f"{other.run_id}:cancel")) == 2


# --- approvals ---------------------------------------------------------------------------------------

def test_an_approval_is_listed_read_and_decided(served: Served) -> None:
    with served.client() as dev, served.client("manager-token") as manager:
        run = dev.start_run("support", "Refund order A-1042, please.")
        served.drive()
        assert dev.run(run.run_id).status == RunStatus.waiting_approval
        (pending,) = [a for a in manager.approvals("pending") if a.run_id == run.run_id]
        assert pending.tool == "issue_refund" and manager.approval(pending.approval_id) == pending
        with pytest.raises(ApiError) as own:
            dev.decide(pending.approval_id, "approve")  # four eyes: not the one who started the run
        assert own.value.status == 403 and own.value.code == "permission_denied"
        served.faults.fail("POST", f"/v1/approvals/{pending.approval_id}", "503")
        decided = manager.decide(pending.approval_id, "approve", comment="checked", idempotency_key="approve-1")
        assert decided.status == "submitted" and decided.approval.approval_id == pending.approval_id
        sent = served.faults.requests("POST", f"/v1/approvals/{pending.approval_id}")
        assert [s.headers["idempotency-key"] for s in sent[1:]] == ["approve-1", "approve-1"]
        served.drive()
        assert dev.run(run.run_id).status == RunStatus.succeeded
        again = manager.decide(pending.approval_id, "approve", comment="checked", idempotency_key="approve-1")
        assert again.status == "already_applied" and again.decision_id == decided.decision_id
        assert [a.approval_id for a in manager.approvals("approved")] == [pending.approval_id]


# --- errors -----------------------------------------------------------------------------------------

def test_errors_carry_the_status_code_message_and_details(served: Served) -> None:
    with served.client() as client:
        with pytest.raises(ApiError) as missing:
            client.run("run_nope")
        assert (missing.value.status, missing.value.code, missing.value.attempts) == (404, "not_found", 1)
        with pytest.raises(ApiError) as bad:
            client.start_run("ticker", "")
        assert bad.value.status == 400 and bad.value.code == "invalid_argument" and "input" in bad.value.message
        with pytest.raises(ApiError) as bad_time:
            list(client.runs(created_after="yesterday"))
        assert bad_time.value.status == 400
        with pytest.raises(ApiError) as unknown_agent:
            client.start_run("nobody/../ticker", "hi")  # a path segment, never a path
        assert unknown_agent.value.status == 404
    with Client(served.url, "wrong-token") as stranger, pytest.raises(ApiError) as refused:
        stranger.agents()
    assert refused.value.status == 401 and refused.value.code == "unauthenticated"


def test_a_spent_budget_is_a_429_with_its_details_and_is_not_retried(served: Served) -> None:
    with served.client() as client:
        client.start_run("spender", "hello")
        served.drive()
        with pytest.raises(BudgetExceeded) as spent:
            client.start_run("spender", "hello again")
    e = spent.value
    assert e.status == 429 and e.code == "budget_exceeded" and e.budget == "spender-day"
    assert e.details["budget"] == "spender-day" and isinstance(e.resets_at, datetime)
    assert e.retry_after is not None and e.retry_after > 3600 and e.attempts == 1
    assert len(served.faults.requests("POST", "/v1/agents/spender/runs")) == 2


# --- retries ----------------------------------------------------------------------------------------

def test_a_read_is_retried_after_a_503_and_a_dropped_connection(served: Served) -> None:
    with served.client() as client:
        run = client.start_run("ticker", "tick")
        served.faults.fail("GET", f"/v1/runs/{run.run_id}", "503")
        served.faults.fail("GET", f"/v1/runs/{run.run_id}", "drop")
        assert client.run(run.run_id).run_id == run.run_id
        assert len(served.faults.requests("GET", f"/v1/runs/{run.run_id}")) == 3


def test_a_start_whose_answer_was_lost_is_sent_again_and_gets_the_same_run(served: Served) -> None:
    with served.client() as client:
        served.faults.fail("POST", "/v1/agents/ticker/runs", "lost")
        run = client.start_run("ticker", "tick once")
    sent = served.faults.requests("POST", "/v1/agents/ticker/runs")
    assert len(sent) == 2 and sent[0].headers["idempotency-key"] == sent[1].headers["idempotency-key"]
    heads = [h for h in served.rt.store.find_runs(list(RunStatus), datetime(9999, 1, 1, tzinfo=UTC), 100)
             if h.input == "tick once"]
    assert [h.run_id for h in heads] == [run.run_id]


def test_a_short_retry_after_is_waited_for_and_retried(served: Served) -> None:
    with served.client() as client:
        served.faults.fail("POST", "/v1/agents/ticker/runs", "429")
        assert client.start_run("ticker", "tick").status == RunStatus.queued
    assert len(served.faults.requests("POST", "/v1/agents/ticker/runs")) == 2


def test_no_retry_of_a_500_of_another_4xx_or_of_a_call_not_safe_to_repeat(served: Served) -> None:
    with served.client() as client:
        served.faults.fail("GET", "/v1/agents", "500")
        with pytest.raises(ApiError) as crashed:
            client.agents()
        assert crashed.value.status == 500 and len(served.faults.requests("GET", "/v1/agents")) == 1
        # an evaluation result without an eval_id would be stored twice: neither a lost answer nor a 503 is retried
        result = {"version": "1", "evalset": "smoke", "passed": True}
        served.faults.fail("POST", "/v1/agents/ticker/evals", "lost")
        with pytest.raises(ApiUnreachable) as lost:
            client.put_eval("ticker", result)
        served.faults.fail("POST", "/v1/agents/ticker/evals", "503")
        with pytest.raises(ApiError) as unavailable:
            client.put_eval("ticker", result)
        assert lost.value.status == 0 and lost.value.code == "unreachable" and unavailable.value.status == 503
        assert len(served.faults.requests("POST", "/v1/agents/ticker/evals")) == 2
        # with one, it is
        served.faults.fail("POST", "/v1/agents/ticker/evals", "lost")
        stored = client.put_eval("ticker", {**result, "eval_id": "smoke-1"})
        assert stored.eval_id == "smoke-1" and len(client.evals("ticker")) == 2


def test_retries_are_bounded(served: Served) -> None:
    with served.client() as client:
        served.faults.fail("GET", "/v1/agents", "503", times=5)
        with pytest.raises(ApiError) as unavailable:
            client.agents()
    assert unavailable.value.status == 503 and unavailable.value.attempts == FAST.attempts
    assert len(served.faults.requests("GET", "/v1/agents")) == FAST.attempts


def test_an_api_that_is_not_there_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound and never listening: connections are refused
        with Client(f"http://127.0.0.1:{port}", "t", retry=FAST) as client, pytest.raises(ApiUnreachable) as e:
            client.agents()
    assert e.value.attempts == FAST.attempts and str(port) in e.value.message


# --- the asyncio client -------------------------------------------------------------------------------

def test_the_async_client_does_the_same(served: Served) -> None:
    async def main() -> None:
        async with served.aclient() as client, served.aclient("manager-token") as manager:
            assert [a.name for a in await client.agents()] == ["spender", "support", "ticker"]
            served.faults.fail("POST", "/v1/agents/ticker/runs", "lost")
            run = await client.start_run("ticker", "tick")
            served.faults.fail("GET", "follow=true", "cut:2")
            with served.moving(pause_s=0.03):
                seqs = [e.seq async for e in client.follow(run.run_id)]
                assert seqs == _stored_seqs(served, run.run_id)
                finished = await client.wait(run.run_id, 5)
            assert finished.status == RunStatus.succeeded
            assert [e.seq async for e in client.events(run.run_id)] == seqs
            assert [r.run_id async for r in client.runs(agent="ticker", page_size=1)] == [run.run_id]
            refund = await client.start_run("support", "Refund order A-1042, please.")
            served.drive()
            (pending,) = [a async for a in manager.approvals("pending")]
            assert (await manager.approval(pending.approval_id)).run_id == refund.run_id
            served.faults.fail("POST", "/v1/approvals/", "503")
            decided = await manager.decide(pending.approval_id, "reject", comment="not this time")
            assert decided.status == "submitted"
            served.drive()
            assert (await client.run(refund.run_id)).status == RunStatus.succeeded
            with pytest.raises(ApiError) as missing:
                await client.run("run_nope")
            assert missing.value.status == 404
            await client.start_run("spender", "hello")
            served.drive()
            with pytest.raises(BudgetExceeded) as spent:
                await client.start_run("spender", "hello")
            assert spent.value.budget == "spender-day"
            other = await client.start_run("ticker", "tick")
            served.faults.fail("POST", ":cancel", "lost")
            assert (await client.cancel(other.run_id)).status == RunStatus.cancelled

    asyncio.run(main())
    assert len(served.faults.requests("POST", "/v1/agents/ticker/runs")) == 3


# --- pieces -----------------------------------------------------------------------------------------

def test_server_sent_events_are_parsed_as_the_standard_says() -> None:
    parser = Parser()
    lines = ["retry: 1000", "", ": keep-alive", "", "id: 7", "event: tool_result", "data: {\"a\":", "data:1}", "",
             "event: end", "data: {}", ""]
    messages = [m for m in map(parser.feed, lines) if m is not None]
    assert [(m.event, m.data, m.id) for m in messages] == [("tool_result", "{\"a\":\n1}", "7"), ("end", "{}", None)]


def test_the_default_address_and_token_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGEX_API_URL", "http://agex.test/")
    monkeypatch.setenv("AGEX_TOKEN", "secret")
    with Client() as client:
        assert client.api == "http://agex.test" and client.http.headers["Authorization"] == "Bearer secret"
    monkeypatch.delenv("AGEX_API_URL")
    monkeypatch.delenv("AGEX_TOKEN")
    assert os.environ.get("AGEX_TOKEN") is None
    with Client() as client:
        assert client.api == "http://127.0.0.1:8080" and client.http.headers["Authorization"] == "Bearer dev-token"


def test_the_backoff_grows_is_jittered_and_respects_retry_after() -> None:
    policy = RetryPolicy(attempts=5, backoff_s=1.0, max_backoff_s=4.0)
    pauses = [[policy.pause(n) for n in (1, 2, 3, 4)] for _ in itertools.repeat(None, 50)]
    for first, second, third, fourth in pauses:
        assert 0.5 <= first <= 1 and 1 <= second <= 2 and 2 <= third <= 4 and 2 <= fourth <= 4
    assert len({p[0] for p in pauses}) > 1
    assert policy.pause(1, retry_after=3.0) == 3.0


# --- memory --------------------------------------------------------------------------------------------------


def test_a_users_memories_are_listed_and_erased() -> None:
    from agex.core.agent import Agent
    from agex.core.memory import MemoryPolicy
    from agex.testing import FunctionModel
    from agex.tools.memory import memory_tools

    def remembers(request: Any) -> Any:
        if any(p.function_response for m in request.messages for p in m.parts):
            return "noted"
        return [("remember", {"key": "contact_channel", "value": "email", "text": "Prefers email."})]

    rt = InMemoryRuntime([Agent(name="concierge", instructions="help", tools=memory_tools(),
                                memory=MemoryPolicy(learn=False))], FunctionModel(remembers))
    rt.run("concierge", "Please use email.")
    settings = rt.runtime.settings.model_copy(update={"dev_tokens": TOKENS})
    server = make_server("127.0.0.1", 0, Request.application(Runtime(settings, rt.runtime.backends,
                                                                     agents=rt.agents).public_api), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        client = Client(f"http://127.0.0.1:{server.server_port}", "dev-token", retry=FAST)
        listed = client.memory("dev@example.com")
        (mine,) = [s for s in listed.scopes if s.agent == "concierge"]
        assert [m.text for m in mine.memories] == ["Prefers email."] and mine.memories[0].trusted
        assert client.erase_memory("dev@example.com").deleted["memories"] == 1
        assert all(not s.memories for s in client.memory("dev@example.com", agent="concierge").scopes)
    finally:
        server.shutdown()
        thread.join(5)
