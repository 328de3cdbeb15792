"""Following runs on the local stack, through the API function: a stream of a run's events that loses its
connection mid-run and resumes with Last-Event-ID without gap or copy; a hundred streams at once; waiting for
the end; finding runs with every filter and page by page, never another tenant's."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.e2e.conftest import E2E

HEADERS = {"Authorization": "Bearer dev-token"}


def _sse(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    block: dict[str, str] = {}
    for line in lines:
        if not line:
            if block:
                yield block
            block = {}
        elif not line.startswith(":") and ": " in line:
            name, _, value = line.partition(": ")
            block[name] = value


def _follow(e2e: E2E, run_id: str, last: int | None = None, stop_after: int | None = None) -> list[dict[str, str]]:
    headers = {**HEADERS, **({"Last-Event-ID": str(last)} if last is not None else {})}
    got: list[dict[str, str]] = []
    with httpx.stream("GET", f"{e2e.stack.api_url}/v1/runs/{run_id}/events", params={"follow": "true"},
                      headers=headers, timeout=httpx.Timeout(120, connect=10)) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for message in _sse(response.iter_lines()):
            got.append(message)
            if message.get("event") == "end" or (stop_after is not None and len(got) >= stop_after):
                break  # leaving the block drops the connection mid-run
    return got


def test_a_stream_cut_mid_run_resumes_with_last_event_id_without_gap_or_copy(e2e: E2E) -> None:
    run = e2e.client.start_run("ticker", "tick 25")
    first = _follow(e2e, run["run_id"], stop_after=12)
    last = int([m for m in first if "id" in m][-1]["id"])
    rest = _follow(e2e, run["run_id"], last=last)
    ids = [int(m["id"]) for m in first + rest if "id" in m]
    final = e2e.wait(run["run_id"])
    assert ids == list(range(1, ids[-1] + 1)) and rest[-1]["event"] == "end"
    assert json.loads(rest[-1]["data"])["status"] == final["status"] == "succeeded"
    assert [m["event"] for m in first + rest if "id" in m][-1] == "run_finished"
    assert len(ids) == len(e2e.events(run["run_id"]))


def test_a_hundred_streams_at_once_each_get_their_run_whole(e2e: E2E) -> None:
    with ThreadPoolExecutor(max_workers=20) as pool:
        runs = list(pool.map(lambda i: e2e.client.start_run("ticker", "tick 3", metadata={"i": str(i)}), range(100)))
    with ThreadPoolExecutor(max_workers=100) as pool:
        streams = list(pool.map(lambda r: _follow(e2e, r["run_id"]), runs))
    for run, got in zip(runs, streams, strict=True):
        ids = [int(m["id"]) for m in got if "id" in m]
        assert ids == list(range(1, len(ids) + 1)) and got[-1]["event"] == "end", (run["run_id"], got[-3:])
        assert json.loads(got[-1]["data"])["status"] == "succeeded"


def test_waiting_for_a_run_answers_when_it_ends(e2e: E2E) -> None:
    http = httpx.Client(base_url=e2e.stack.api_url, headers=HEADERS, timeout=90)
    started = time.monotonic()
    response = http.post("/v1/agents/ticker/runs", params={"wait": "40s"}, json={"input": "tick 3"})
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    assert time.monotonic() - started < 40
    run_id = response.json()["run_id"]
    assert http.get(f"/v1/runs/{run_id}", params={"wait": "5s"}).json()["status"] == "succeeded"
    slow = http.post("/v1/agents/payer/runs", json={"input": "pay acme 10"}).json()  # waits for a human
    waited = time.monotonic()
    still = http.get(f"/v1/runs/{slow['run_id']}", params={"wait": "2s"})
    assert still.status_code == 200 and still.json()["status"] not in ("succeeded", "failed")
    assert 1.8 < time.monotonic() - waited < 10
    e2e.client.cancel(slow["run_id"])
    assert http.get("/v1/runs/run_x", params={"wait": "2h"}).status_code == 400


def test_finding_runs_by_every_filter_page_by_page_and_only_the_tenants_own(e2e: E2E) -> None:
    http = httpx.Client(base_url=e2e.stack.api_url, headers=HEADERS, timeout=30)
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    mine = [e2e.client.start_run("ticker", "tick 1", metadata={"i": str(i)}) for i in range(5)]
    manager = e2e.manager.start_run("ticker", "tick 1")
    theirs = e2e.acme.start_run("ticker", "tick 1")
    for r in [*mine, manager]:
        e2e.wait(r["run_id"])

    def listing(**params: Any) -> list[str]:
        found: list[str] = []
        token = None
        while True:
            page = http.get("/v1/runs", params={**params, **({"page_token": token} if token else {})})
            assert page.status_code == 200, page.text
            found += [r["run_id"] for r in page.json()["runs"]]
            token = page.json()["next_page_token"]
            if token is None:
                return found

    recent = listing(created_after=since, agent="ticker", page_size=2)
    assert recent == [manager["run_id"], *[r["run_id"] for r in reversed(mine)]]  # newest first, no repeat
    assert theirs["run_id"] not in listing(created_after=since)
    assert listing(created_after=since, principal="manager@example.com") == [manager["run_id"]]
    assert set(listing(created_after=since, status="succeeded", principal="dev@example.com")) == {
        r["run_id"] for r in mine}
    assert listing(created_after=since, agent="support") == []
    until = datetime.now(UTC).isoformat()
    assert listing(created_after=since, created_before=since) == []
    assert len(listing(created_after=since, created_before=until)) == 6
    assert http.get("/v1/runs", params={"status": "sleeping"}).status_code == 400
    assert http.get("/v1/runs", params={"page_token": "garbage!"}).status_code == 400
    assert http.get("/v1/runs", params={"created_after": "yesterday"}).status_code == 400


def test_a_followed_run_streams_its_model_text_as_it_is_written(e2e: E2E) -> None:
    run = e2e.client.start_run("storyteller", "tell me about lighthouses")
    received: list[dict[str, Any]] = []
    text = ""
    with httpx.stream("GET", f"{e2e.stack.api_url}/v1/runs/{run['run_id']}/events", params={"follow": "true"},
                      headers=HEADERS, timeout=httpx.Timeout(120, connect=10)) as response:
        for message in _sse(response.iter_lines()):
            received.append({**message, "at": time.monotonic()})
            if message.get("event") == "model_text":
                piece = json.loads(message["data"])
                text = text[:piece["offset"]] + piece["text"]
            if message.get("event") == "end":
                break
    final = e2e.wait(run["run_id"])
    kinds = [m.get("event") for m in received]
    answered = max(i for i, k in enumerate(kinds) if k == "model_response")
    pieces = [m for m in received[:answered] if m.get("event") == "model_text"]
    # several pieces over the seconds the answer took, each before the answer was recorded
    assert len(pieces) >= 3 and pieces[-1]["at"] - pieces[0]["at"] >= 1.0, kinds
    assert final["status"] == "succeeded" and final["result"].startswith(text) and len(text) > 40
    assert not any("id" in m for m in pieces)  # live text is not an event: Last-Event-ID skips it
