"""``Client``: the public API from blocking code (httpx.Client)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Unpack

import httpx

from agex.app.http.views import (
    AgentView,
    ApprovalsPage,
    ApprovalView,
    DecisionView,
    EventsPage,
    EventView,
    MemoryErased,
    MemoryList,
    RunsPage,
    RunView,
    ThreadView,
    VersionView,
)
from agex.client import calls
from agex.client.calls import Call, M, RunFilters, Time
from agex.client.errors import ApiError
from agex.client.follow import Following, ModelText, Turn
from agex.client.retry import RetryPolicy
from agex.core.approval import ApprovalStatus, Decision
from agex.core.run import RunStatus
from agex.engine.reports import AgentMetrics, AlertView, EvalSubmission, EvalView, UsageReport


class Client:
    """A client of one deployment's API (docs/client.md), as one principal (``token``).

    ``api`` and ``token`` default to ``$AGEX_API_URL`` and ``$AGEX_TOKEN``, else the local stack's. Every method
    answers the API's own models, validated. Requests that are safe to repeat (reads, and writes sent with an
    ``Idempotency-Key``, which ``start_run`` and ``decide`` always send) are retried as ``retry`` says; the
    others never are. ``transport`` or a whole ``http`` client (with its own base URL and headers) replace
    the default one, for tests and proxies."""

    def __init__(self, api: str | None = None, token: str | None = None, *, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, transport: httpx.BaseTransport | None = None,
                 http: httpx.Client | None = None, wait_chunk_s: float = 30.0,
                 stream_read_timeout_s: float = 60.0) -> None:
        self.api, headers = calls.endpoint(api, token)
        self.timeout, self.retry = timeout, retry or RetryPolicy()
        self.wait_chunk_s, self.stream_read_timeout_s = wait_chunk_s, stream_read_timeout_s
        self.http = http or httpx.Client(base_url=self.api, headers=headers, timeout=timeout,
                                        transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # --- sending -----------------------------------------------------------------------------------------

    def _send(self, call: Call[M]) -> M:
        for attempt in itertools.count(1):
            try:
                response = self.http.request(call.method, call.path, params=call.params, json=call.body,
                                             headers=call.headers, timeout=self.timeout + call.wait_s)
            except httpx.TransportError as e:
                time.sleep(calls.again(call, attempt, self.retry, self.api, failure=e))
                continue
            if response.is_success:
                return calls.parse(call, response)
            time.sleep(calls.again(call, attempt, self.retry, self.api, response=response))
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                json: Any = None, headers: Mapping[str, str] | None = None, safe: bool | None = None) -> Any:
        """Any route, answering its JSON as is. ``safe`` (default: a GET, or a request with an
        ``Idempotency-Key``): it may be sent again after a failure."""
        return self._send(calls.raw(method, path, params, json, headers, safe)).root

    # --- agents and runs -----------------------------------------------------------------------------------

    def agents(self) -> list[AgentView]:
        return self._send(calls.agents()).agents

    def agent(self, name: str) -> AgentView:
        return self._send(calls.agent(name))

    def versions(self, agent: str) -> list[VersionView]:
        """The agent's versions: the current one first, each with the runs of the tenant that have not ended
        on it (docs/versions.md)."""
        return self._send(calls.versions(agent)).versions

    def start_run(self, agent: str, input: str, metadata: Mapping[str, str] | None = None,
                  idempotency_key: str | None = None, wait: float | None = None) -> RunView:
        """Start a run. Without ``idempotency_key`` one is made up, so a retry after a lost answer gets the
        same run. With ``wait`` (seconds, at most the API's limit, 50 by default), answer once the run ended or
        the wait is up."""
        return self._send(calls.start_run(agent, input, metadata, idempotency_key, wait))

    def create_thread(self, agent: str, policy: str = "reject", metadata: Mapping[str, str] | None = None,
                      idempotency_key: str | None = None) -> ThreadView:
        """A conversation with ``agent`` (docs/threads.md). ``policy``: what a message sent while a run of the
        thread is going does: ``reject`` (409 ``thread_busy``), ``queue`` or ``interrupt``."""
        return self._send(calls.create_thread(agent, policy, metadata, idempotency_key))

    def memory(self, user: str, agent: str | None = None, page_size: int | None = None,
                 page_token: str | None = None) -> MemoryList:
        """What is remembered about ``user`` (docs/memory.md): every scope of theirs, or one (``agent``; ``*`` for
        across agents) paged on with ``page_token``."""
        return self._send(calls.memory(user, agent, page_size, page_token))

    def erase_memory(self, user: str) -> MemoryErased:
        """Erase everything remembered about ``user``, in every store."""
        return self._send(calls.erase_memory(user))

    def thread(self, thread_id: str) -> ThreadView:
        return self._send(calls.thread(thread_id))

    def send(self, thread_id: str, input: str, metadata: Mapping[str, str] | None = None,
             idempotency_key: str | None = None, wait: float | None = None) -> RunView:
        """The thread's next turn: a run of its agent that sees the conversation so far. Like ``start_run``
        otherwise (a made-up key when none is given, so a retry is the same turn)."""
        return self._send(calls.send(thread_id, input, metadata, idempotency_key, wait))

    def run(self, run_id: str, wait: float | None = None) -> RunView:
        """The run; with ``wait`` (seconds), as soon as it ended or when the wait is up."""
        return self._send(calls.run(run_id, wait))

    def wait(self, run_id: str, timeout: float) -> RunView:
        """The run once it ended, or as it is after ``timeout`` seconds (check ``status``): asks with
        ``?wait=`` in chunks of ``wait_chunk_s``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            run = self.run(run_id, wait=min(max(left, 0.0), self.wait_chunk_s))
            if run.status.terminal or time.monotonic() >= deadline:
                return run

    def runs_page(self, page_token: str | None = None, **filters: Unpack[RunFilters]) -> RunsPage:
        return self._send(calls.runs_page(page_token, **filters))

    def runs(self, **filters: Unpack[RunFilters]) -> Iterator[RunView]:
        """The tenant's runs, newest first, that match every filter given (``agent``, ``status``,
        ``principal``, ``created_after``, inclusive, ``created_before``, exclusive), page after page as you
        iterate."""
        token = None
        while True:
            page = self.runs_page(token, **filters)
            yield from page.runs
            if not (token := page.next_page_token):
                return

    def events_page(self, run_id: str, after: int = 0, page_size: int | None = None) -> EventsPage:
        return self._send(calls.events_page(run_id, after, page_size))

    def events(self, run_id: str, after: int = 0) -> Iterator[EventView]:
        """The run's events so far after ``after`` (a ``seq``), in order, page after page."""
        while True:
            page = self.events_page(run_id, after, 1000)
            yield from page.events
            if not page.next_page_token:
                return
            after = page.events[-1].seq

    def follow(self, run_id: str, after: int = 0, *, timeout: float | None = None,
               text: bool = False) -> Iterator[EventView | ModelText]:
        """The run's events after ``after`` as they are committed, until the run ended (or ``timeout``
        seconds passed: checked as events and the server's keep-alives arrive). A broken connection, and the
        server's ``reconnect``, are resumed after the last event received, with nothing lost or repeated. With
        ``text``, the model's text as it is written comes too (``ModelText``, where the provider streams)."""
        f = Following(calls.events_page(run_id).path, after, self.retry, self.api, self.stream_read_timeout_s,
                      min(self.timeout, 10.0), None if timeout is None else time.monotonic() + timeout,
                      with_text=text)
        while not f.expired():
            params, headers, timeouts = f.connection()
            try:
                with self.http.stream("GET", f.path, params=params, headers=headers,
                                      timeout=timeouts) as response:
                    if not response.is_success:
                        response.read()
                        time.sleep(f.refused(response))
                        continue
                    f.opened()
                    for line in response.iter_lines():
                        step = f.take(line)
                        if step is Turn.END:
                            return
                        if step is Turn.RECONNECT:
                            break
                        if step is not None:
                            yield step
                        if f.expired():
                            return
                    else:
                        time.sleep(f.dropped(None))
            except httpx.TransportError as e:
                if f.expired():
                    return
                time.sleep(f.dropped(e))

    def cancel(self, run_id: str) -> RunView:
        """Cancel the run. Sent again after a lost answer, the API answers 409 (cancelled already): then the run
        is read, and returned if it is cancelled."""
        try:
            return self._send(calls.cancel(run_id))
        except ApiError as e:
            if calls.retried_cancel(e) and (run := self.run(run_id)).status == RunStatus.cancelled:
                return run
            raise

    # --- approvals ---------------------------------------------------------------------------------------

    def approvals_page(self, status: str | ApprovalStatus | None = None, page_token: str | None = None,
                       page_size: int | None = None) -> ApprovalsPage:
        return self._send(calls.approvals_page(status, page_token, page_size))

    def approvals(self, status: str | ApprovalStatus | None = None) -> Iterator[ApprovalView]:
        """The tenant's approvals (of one status, or all), oldest first, page after page."""
        token = None
        while True:
            page = self.approvals_page(status, token, 1000)
            yield from page.approvals
            if not (token := page.next_page_token):
                return

    def approval(self, approval_id: str) -> ApprovalView:
        return self._send(calls.approval(approval_id))

    def decide(self, approval_id: str, decision: str | Decision, comment: str = "",
               arguments: Mapping[str, Any] | None = None, idempotency_key: str | None = None) -> DecisionView:
        """Submit a decision (``approve``/``reject``, or ``retry``/``done``/``fail`` for a reconciliation); the
        API answers once it is queued, not applied. Always keyed, like ``start_run``."""
        return self._send(calls.decide(approval_id, decision, comment, arguments, idempotency_key))

    # --- behaviour, usage, drift, evaluations -------------------------------------------------------------

    def metrics(self, agent: str, *, version: str | None = None, start: Time | None = None,
                end: Time | None = None, bucket: str | None = None) -> AgentMetrics:
        return self._send(calls.metrics(agent, version, start, end, bucket))

    def usage(self, *, group_by: str | Sequence[str] | None = None, agent: str | None = None,
              start: Time | None = None, end: Time | None = None) -> UsageReport:
        return self._send(calls.usage(group_by, agent, start, end))

    def alerts(self, *, agent: str | None = None, since: Time | None = None,
               page_size: int | None = None) -> list[AlertView]:
        return self._send(calls.alerts(agent, since, page_size)).alerts

    def evals(self, agent: str, *, version: str | None = None, accepted: bool | None = None,
              page_size: int | None = None) -> list[EvalView]:
        return self._send(calls.evals(agent, version, accepted, page_size)).evals

    def put_eval(self, agent: str, result: EvalSubmission | Mapping[str, Any]) -> EvalView:
        """Store an evaluation result; retried only when it has an ``eval_id`` (the same id replaces it)."""
        return self._send(calls.put_eval(agent, result)).eval
