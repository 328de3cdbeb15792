"""``AsyncClient``: the public API from asyncio (or trio) code (httpx.AsyncClient)."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from types import TracebackType
from typing import Any, Unpack

import anyio
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


class AsyncClient:
    """``Client`` (see it) for async code: the same methods and policies, awaited, and ``async for`` over
    the iterators (close one you leave early with ``contextlib.aclosing``, to release its connection)."""

    def __init__(self, api: str | None = None, token: str | None = None, *, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 http: httpx.AsyncClient | None = None, wait_chunk_s: float = 30.0,
                 stream_read_timeout_s: float = 60.0) -> None:
        self.api, headers = calls.endpoint(api, token)
        self.timeout, self.retry = timeout, retry or RetryPolicy()
        self.wait_chunk_s, self.stream_read_timeout_s = wait_chunk_s, stream_read_timeout_s
        self.http = http or httpx.AsyncClient(base_url=self.api, headers=headers, timeout=timeout,
                                             transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    # --- sending -----------------------------------------------------------------------------------------

    async def _send(self, call: Call[M]) -> M:
        for attempt in itertools.count(1):
            try:
                response = await self.http.request(call.method, call.path, params=call.params, json=call.body,
                                             headers=call.headers, timeout=self.timeout + call.wait_s)
            except httpx.TransportError as e:
                await anyio.sleep(calls.again(call, attempt, self.retry, self.api, failure=e))
                continue
            if response.is_success:
                return calls.parse(call, response)
            await anyio.sleep(calls.again(call, attempt, self.retry, self.api, response=response))
        raise AssertionError("unreachable")

    async def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      json: Any = None, headers: Mapping[str, str] | None = None,
                      safe: bool | None = None) -> Any:
        """Any route, answering its JSON as is. ``safe`` (default: a GET, or a request with an
        ``Idempotency-Key``): it may be sent again after a failure."""
        return (await self._send(calls.raw(method, path, params, json, headers, safe))).root

    # --- agents and runs -----------------------------------------------------------------------------------

    async def agents(self) -> list[AgentView]:
        return (await self._send(calls.agents())).agents

    async def agent(self, name: str) -> AgentView:
        return await self._send(calls.agent(name))

    async def versions(self, agent: str) -> list[VersionView]:
        """The agent's versions: the current one first, each with the runs of the tenant that have not ended
        on it (docs/versions.md)."""
        return (await self._send(calls.versions(agent))).versions

    async def start_run(self, agent: str, input: str, metadata: Mapping[str, str] | None = None,
                  idempotency_key: str | None = None, wait: float | None = None) -> RunView:
        """Start a run. Without ``idempotency_key`` one is made up, so a retry after a lost answer gets the
        same run. With ``wait`` (seconds, at most the API's limit, 50 by default), answer once the run ended or
        the wait is up."""
        return await self._send(calls.start_run(agent, input, metadata, idempotency_key, wait))

    async def create_thread(self, agent: str, policy: str = "reject", metadata: Mapping[str, str] | None = None,
                      idempotency_key: str | None = None) -> ThreadView:
        """A conversation with ``agent`` (docs/threads.md). ``policy``: what a message sent while a run of the
        thread is going does: ``reject`` (409 ``thread_busy``), ``queue`` or ``interrupt``."""
        return await self._send(calls.create_thread(agent, policy, metadata, idempotency_key))

    async def memory(self, user: str, agent: str | None = None, page_size: int | None = None,
                 page_token: str | None = None) -> MemoryList:
        """What is remembered about ``user`` (docs/memory.md): every scope of theirs, or one (``agent``; ``*`` for
        across agents) paged on with ``page_token``."""
        return await self._send(calls.memory(user, agent, page_size, page_token))

    async def erase_memory(self, user: str) -> MemoryErased:
        """Erase everything remembered about ``user``, in every store."""
        return await self._send(calls.erase_memory(user))

    async def thread(self, thread_id: str) -> ThreadView:
        return await self._send(calls.thread(thread_id))

    async def send(self, thread_id: str, input: str, metadata: Mapping[str, str] | None = None,
             idempotency_key: str | None = None, wait: float | None = None) -> RunView:
        """The thread's next turn: a run of its agent that sees the conversation so far. Like ``start_run``
        otherwise (a made-up key when none is given, so a retry is the same turn)."""
        return await self._send(calls.send(thread_id, input, metadata, idempotency_key, wait))

    async def run(self, run_id: str, wait: float | None = None) -> RunView:
        """The run; with ``wait`` (seconds), as soon as it ended or when the wait is up."""
        return await self._send(calls.run(run_id, wait))

    async def wait(self, run_id: str, timeout: float) -> RunView:
        """The run once it ended, or as it is after ``timeout`` seconds (check ``status``): asks with
        ``?wait=`` in chunks of ``wait_chunk_s``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            run = await self.run(run_id, wait=min(max(left, 0.0), self.wait_chunk_s))
            if run.status.terminal or time.monotonic() >= deadline:
                return run

    async def runs_page(self, page_token: str | None = None, **filters: Unpack[RunFilters]) -> RunsPage:
        return await self._send(calls.runs_page(page_token, **filters))

    async def runs(self, **filters: Unpack[RunFilters]) -> AsyncGenerator[RunView, None]:
        """The tenant's runs, newest first, that match every filter given (``agent``, ``status``,
        ``principal``, ``created_after``, inclusive, ``created_before``, exclusive), page after page as you
        iterate."""
        token = None
        while True:
            page = await self.runs_page(token, **filters)
            for item in page.runs:
                yield item
            if not (token := page.next_page_token):
                return

    async def events_page(self, run_id: str, after: int = 0, page_size: int | None = None) -> EventsPage:
        return await self._send(calls.events_page(run_id, after, page_size))

    async def events(self, run_id: str, after: int = 0) -> AsyncGenerator[EventView, None]:
        """The run's events so far after ``after`` (a ``seq``), in order, page after page."""
        while True:
            page = await self.events_page(run_id, after, 1000)
            for event in page.events:
                yield event
            if not page.next_page_token:
                return
            after = page.events[-1].seq

    async def follow(self, run_id: str, after: int = 0, *, timeout: float | None = None,
                     text: bool = False) -> AsyncGenerator[EventView | ModelText, None]:
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
                async with self.http.stream("GET", f.path, params=params, headers=headers,
                                            timeout=timeouts) as response:
                    if not response.is_success:
                        await response.aread()
                        await anyio.sleep(f.refused(response))
                        continue
                    f.opened()
                    async for line in response.aiter_lines():
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
                        await anyio.sleep(f.dropped(None))
            except httpx.TransportError as e:
                if f.expired():
                    return
                await anyio.sleep(f.dropped(e))

    async def cancel(self, run_id: str) -> RunView:
        """Cancel the run. Sent again after a lost answer, the API answers 409 (cancelled already): then the run
        is read, and returned if it is cancelled."""
        try:
            return await self._send(calls.cancel(run_id))
        except ApiError as e:
            if calls.retried_cancel(e) and (run := await self.run(run_id)).status == RunStatus.cancelled:
                return run
            raise

    # --- approvals ---------------------------------------------------------------------------------------

    async def approvals_page(self, status: str | ApprovalStatus | None = None, page_token: str | None = None,
                       page_size: int | None = None) -> ApprovalsPage:
        return await self._send(calls.approvals_page(status, page_token, page_size))

    async def approvals(self, status: str | ApprovalStatus | None = None) -> AsyncGenerator[ApprovalView, None]:
        """The tenant's approvals (of one status, or all), oldest first, page after page."""
        token = None
        while True:
            page = await self.approvals_page(status, token, 1000)
            for approval in page.approvals:
                yield approval
            if not (token := page.next_page_token):
                return

    async def approval(self, approval_id: str) -> ApprovalView:
        return await self._send(calls.approval(approval_id))

    async def decide(self, approval_id: str, decision: str | Decision, comment: str = "",
               arguments: Mapping[str, Any] | None = None, idempotency_key: str | None = None) -> DecisionView:
        """Submit a decision (``approve``/``reject``, or ``retry``/``done``/``fail`` for a reconciliation); the
        API answers once it is queued, not applied. Always keyed, like ``start_run``."""
        return await self._send(calls.decide(approval_id, decision, comment, arguments, idempotency_key))

    # --- behaviour, usage, drift, evaluations -------------------------------------------------------------

    async def metrics(self, agent: str, *, version: str | None = None, start: Time | None = None,
                      end: Time | None = None, bucket: str | None = None) -> AgentMetrics:
        return await self._send(calls.metrics(agent, version, start, end, bucket))

    async def usage(self, *, group_by: str | Sequence[str] | None = None, agent: str | None = None,
              start: Time | None = None, end: Time | None = None) -> UsageReport:
        return await self._send(calls.usage(group_by, agent, start, end))

    async def alerts(self, *, agent: str | None = None, since: Time | None = None,
               page_size: int | None = None) -> list[AlertView]:
        return (await self._send(calls.alerts(agent, since, page_size))).alerts

    async def evals(self, agent: str, *, version: str | None = None, accepted: bool | None = None,
              page_size: int | None = None) -> list[EvalView]:
        return (await self._send(calls.evals(agent, version, accepted, page_size))).evals

    async def put_eval(self, agent: str, result: EvalSubmission | Mapping[str, Any]) -> EvalView:
        """Store an evaluation result; retried only when it has an ``eval_id`` (the same id replaces it)."""
        return (await self._send(calls.put_eval(agent, result))).eval
