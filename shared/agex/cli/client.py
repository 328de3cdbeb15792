"""The command line's view of the API: ``agex.client.Client`` with its answers as JSON-ready dicts, as the
commands print them (``--json``) and read them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx

from agex import client as agex_client
from agex.client import ApiError, ApiUnreachable, BudgetExceeded

__all__ = ["DEFAULT_API", "DEFAULT_TOKEN", "ApiError", "ApiUnreachable", "BudgetExceeded", "Client"]

DEFAULT_API, DEFAULT_TOKEN = agex_client.DEFAULT_API, agex_client.DEFAULT_TOKEN


def _json(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True)  # type: ignore[no-any-return]


class Client:
    def __init__(self, api: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.typed = agex_client.Client(api, token, timeout=timeout)

    @property
    def api(self) -> str:
        return self.typed.api

    @property
    def http(self) -> httpx.Client:
        return self.typed.http

    @http.setter
    def http(self, value: httpx.Client) -> None:
        self.typed.http = value

    def _call(self, method: str, path: str, *, retry: bool = False, **kwargs: Any) -> Any:
        return self.typed.request(method, path, params=kwargs.get("params"), json=kwargs.get("json"),
                                  headers=kwargs.get("headers"), safe=True if retry else None)

    def start_run(self, agent: str, input: str, metadata: dict[str, str] | None = None,
                  idempotency_key: str | None = None) -> dict[str, Any]:
        return _json(self.typed.start_run(agent, input, metadata, idempotency_key))

    def run(self, run_id: str) -> dict[str, Any]:
        return _json(self.typed.run(run_id))

    def create_thread(self, agent: str, policy: str = "reject") -> dict[str, Any]:
        return _json(self.typed.create_thread(agent, policy))

    def thread(self, thread_id: str) -> dict[str, Any]:
        return _json(self.typed.thread(thread_id))

    def send(self, thread_id: str, input: str) -> dict[str, Any]:
        return _json(self.typed.send(thread_id, input))

    def events_page(self, run_id: str, after: int = 0, size: int = 100) -> dict[str, Any]:
        return _json(self.typed.events_page(run_id, after, size))

    def events(self, run_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
        return map(_json, self.typed.events(run_id, after))

    def follow(self, run_id: str, after: int = 0, deadline: float | None = None,
               text: bool = False) -> Iterator[dict[str, Any]]:
        """The run's events as they are committed, until the run ended or ``deadline`` (``time.monotonic()``)
        passed; with ``text``, the model's text as it is written too, as ``{"kind": "model_text", "step",
        "offset", "text"}``."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        for item in self.typed.follow(run_id, after, timeout=timeout, text=text):
            if isinstance(item, agex_client.ModelText):
                yield {"kind": "model_text", "step": item.step, "offset": item.offset, "text": item.text}
            else:
                yield _json(item)

    def runs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """The tenant's runs, newest first, filtered by ``agent``, ``status``, ``principal``, ``thread``,
        ``created_after`` and ``created_before``, with ``page_size``."""
        return map(_json, self.typed.runs(**filters))

    def schedules(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/schedules", retry=True)["schedules"]  # type: ignore[no-any-return]

    def set_schedule(self, name: str, paused: bool) -> dict[str, Any]:
        # pausing or resuming twice leaves the schedule as once: safe to retry
        return self._call("POST", f"/v1/schedules/{name}:{'pause' if paused else 'resume'}", retry=True)  # type: ignore[no-any-return]

    def cancel(self, run_id: str) -> dict[str, Any]:
        return _json(self.typed.cancel(run_id))

    def agents(self) -> list[dict[str, Any]]:
        return [_json(a) for a in self.typed.agents()]

    def versions(self, agent: str) -> list[dict[str, Any]]:
        return [_json(v) for v in self.typed.versions(agent)]

    def approvals_page(self, status: str | None = None, page_token: str | None = None,
                       size: int = 100) -> dict[str, Any]:
        return _json(self.typed.approvals_page(status, page_token, size))

    def approvals(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every approval of the tenant (of one status, or all when ``status`` is None), oldest first."""
        return [_json(a) for a in self.typed.approvals(status)]

    def approval(self, approval_id: str) -> dict[str, Any]:
        return _json(self.typed.approval(approval_id))

    def decide(self, approval_id: str, decision: str, comment: str = "", arguments: dict[str, Any] | None = None,
               idempotency_key: str | None = None) -> dict[str, Any]:
        return _json(self.typed.decide(approval_id, decision, comment, arguments, idempotency_key))

    def metrics(self, agent: str, **params: str | None) -> dict[str, Any]:
        return _json(self.typed.metrics(agent, version=params.get("version"), bucket=params.get("bucket"),
                                        start=params.get("from"), end=params.get("to")))

    def usage(self, **params: str | None) -> dict[str, Any]:
        return _json(self.typed.usage(group_by=params.get("group_by"), agent=params.get("agent"),
                                      start=params.get("from"), end=params.get("to")))

    def alerts(self, **params: str | None) -> list[dict[str, Any]]:
        size = params.get("page_size")
        return [_json(a) for a in self.typed.alerts(agent=params.get("agent"), since=params.get("since"),
                                                    page_size=int(size) if size else None)]

    def put_eval(self, agent: str, result: dict[str, Any]) -> dict[str, Any]:
        return _json(self.typed.put_eval(agent, result))

    def evals(self, agent: str, **params: str | None) -> list[dict[str, Any]]:
        accepted, size = params.get("accepted"), params.get("page_size")
        return [_json(e) for e in self.typed.evals(
            agent, version=params.get("version"), accepted=None if not accepted else accepted == "true",
            page_size=int(size) if size else None)]
