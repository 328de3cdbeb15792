"""A small client of the public API, for the CLI (and anyone scripting against a deployment)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx

DEFAULT_API = "http://127.0.0.1:8080"
DEFAULT_TOKEN = "dev-token"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Client:
    def __init__(self, api: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.api = (api or os.environ.get("AGEX_API_URL") or DEFAULT_API).rstrip("/")
        self.http = httpx.Client(base_url=self.api, timeout=timeout, headers={
            "Authorization": f"Bearer {token or os.environ.get('AGEX_TOKEN') or DEFAULT_TOKEN}"})

    def _call(self, method: str, path: str, *, retry: bool = False, **kwargs: Any) -> Any:
        """``retry``: the request is safe to send twice (a read, or a write with an Idempotency-Key), so a
        connection that broke (a server restarting, a keep-alive connection it dropped) is tried again."""
        attempts = 3 if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                response = self.http.request(method, path, **kwargs)
                break
            except httpx.TransportError as e:
                if attempt < attempts:
                    time.sleep(0.2 * attempt)
                    continue
                raise ApiError(0, "unreachable", f"cannot reach the API at {self.api} ({e}); is `agex dev` running?") from e
            except httpx.HTTPError as e:
                raise ApiError(0, "unreachable", f"cannot reach the API at {self.api} ({e})") from e
        if response.status_code >= 400:
            self._raise(response)
        return response.json() if response.headers.get("content-type", "").startswith("application/json") else {}

    @staticmethod
    def _raise(response: httpx.Response) -> None:
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        err = body.get("error", {}) if isinstance(body, dict) else {}
        raise ApiError(response.status_code, err.get("code", "error"), err.get("message", response.text))

    def start_run(self, agent: str, input: str, metadata: dict[str, str] | None = None,
                  idempotency_key: str | None = None) -> dict[str, Any]:
        # always keyed, so a retry after a lost response returns the same run instead of a second one
        headers = {"Idempotency-Key": idempotency_key or f"cli-{uuid.uuid4()}"}
        return self._call("POST", f"/v1/agents/{agent}/runs", json={"input": input, "metadata": metadata or {}},
                          headers=headers, retry=True)

    def run(self, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/runs/{run_id}", retry=True)

    def events_page(self, run_id: str, after: int = 0, size: int = 100) -> dict[str, Any]:
        params: dict[str, Any] = {"page_size": size}
        if after:
            params["page_token"] = str(after)
        return self._call("GET", f"/v1/runs/{run_id}/events", params=params, retry=True)

    def events(self, run_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
        while True:
            page = self.events_page(run_id, after, 1000)
            yield from page["events"]
            if not page["next_page_token"]:
                return
            after = int(page["next_page_token"])

    def follow(self, run_id: str, after: int = 0, deadline: float | None = None) -> Iterator[dict[str, Any]]:
        """The run's events as they are committed (``?follow=true``, server-sent events), from after ``after``
        until the run ended or ``deadline`` (``time.monotonic()``) passed. A dropped connection, or the
        server's ``reconnect``, is resumed from the last event received (``Last-Event-ID``)."""
        while True:
            try:
                with self.http.stream("GET", f"/v1/runs/{run_id}/events", params={"follow": "true"},
                                      headers={"Last-Event-ID": str(after)},
                                      timeout=httpx.Timeout(60.0, connect=10.0)) as response:
                    if response.status_code >= 400:
                        response.read()
                        self._raise(response)
                    for message in _server_sent(response.iter_lines(), deadline):
                        if message is None:
                            return  # the deadline passed
                        if message.get("event") == "end":
                            return
                        if message.get("event") == "reconnect":
                            break
                        event = json.loads(message["data"])
                        after = event["seq"]
                        yield event
            except httpx.TransportError:
                time.sleep(0.5)  # the stream broke: resume after the last event received
            if deadline is not None and time.monotonic() > deadline:
                return

    def runs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """The tenant's runs, newest first, with ``agent``, ``status``, ``principal``, ``created_after`` and
        ``created_before`` as the API takes them, page after page."""
        params = {k: v for k, v in filters.items() if v is not None}
        while True:
            page = self._call("GET", "/v1/runs", params=params, retry=True)
            yield from page["runs"]
            if not page["next_page_token"]:
                return
            params["page_token"] = page["next_page_token"]

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/runs/{run_id}:cancel")

    def agents(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/agents", retry=True)["agents"]

    def approvals_page(self, status: str | None = None, page_token: str | None = None,
                       size: int = 100) -> dict[str, Any]:
        params: dict[str, Any] = {"page_size": size}
        if status:
            params["status"] = status
        if page_token:
            params["page_token"] = page_token
        return self._call("GET", "/v1/approvals", params=params, retry=True)

    def approvals(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every approval of the tenant (of one status, or all when ``status`` is None), oldest first."""
        found: list[dict[str, Any]] = []
        token = None
        while True:
            page = self.approvals_page(status, token, 1000)
            found.extend(page["approvals"])
            token = page["next_page_token"]
            if not token:
                return found

    def approval(self, approval_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/approvals/{approval_id}", retry=True)

    def decide(self, approval_id: str, decision: str, comment: str = "", arguments: dict[str, Any] | None = None,
               idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit ``approve`` or ``reject``; the API answers once the decision is queued, not applied."""
        # always keyed, so a retry after a lost response is the same decision, applied once
        headers = {"Idempotency-Key": idempotency_key or f"cli-{uuid.uuid4()}"}
        body: dict[str, Any] = {"decision": decision, "comment": comment}
        if arguments is not None:
            body["arguments"] = arguments
        return self._call("POST", f"/v1/approvals/{approval_id}", json=body, headers=headers, retry=True)

    def metrics(self, agent: str, **params: str | None) -> dict[str, Any]:
        return self._call("GET", f"/v1/agents/{agent}/metrics", params=_present(params), retry=True)

    def usage(self, **params: str | None) -> dict[str, Any]:
        return self._call("GET", "/v1/usage", params=_present(params), retry=True)

    def alerts(self, **params: str | None) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/alerts", params=_present(params), retry=True)["alerts"]

    def put_eval(self, agent: str, result: dict[str, Any]) -> dict[str, Any]:
        # keyed by its eval_id (set by the caller), so a retry stores the same result once
        return self._call("POST", f"/v1/agents/{agent}/evals", json=result, retry="eval_id" in result)["eval"]

    def evals(self, agent: str, **params: str | None) -> list[dict[str, Any]]:
        return self._call("GET", f"/v1/agents/{agent}/evals", params=_present(params), retry=True)["evals"]


def _present(params: dict[str, str | None]) -> dict[str, str]:
    return {k: v for k, v in params.items() if v is not None and v != ""}


def _server_sent(lines: Iterator[str], deadline: float | None) -> Iterator[dict[str, str] | None]:
    """Server-sent events as ``{field: value}`` (comments, the server's heartbeats, only check the deadline);
    ``None`` once ``deadline`` passed."""
    block: dict[str, str] = {}
    for line in lines:
        if deadline is not None and time.monotonic() > deadline:
            yield None
            return
        if not line:
            if block:
                yield block
            block = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            block[name] = value.removeprefix(" ")
