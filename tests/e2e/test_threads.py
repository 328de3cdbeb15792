"""Threads on the local stack, through the real functions (docs/threads.md): a 50-turn conversation whose
per-turn bytes and model input stay flat, the queue policy keeping turns in order, a busy thread refusing a
message, `agex chat` in a terminal, and bad input and other tenants getting nothing."""

from __future__ import annotations

import io
import sys
import time
from statistics import mean
from typing import Any

import httpx
import pytest

from agex.cli import main as cli
from agex.ports.rules import document_size

from .conftest import E2E


def _written(e2e: E2E, run_id: str, thread_id: str) -> int:
    """Bytes of what the turn left in Firestore: its run's head and events, and the thread document."""
    from google.cloud import firestore

    with e2e.stack.client_env():
        db = firestore.Client(project=e2e.stack.config.project)
        tenant = db.collection("tenants").document("dev")
        head = tenant.collection("runs").document(run_id)
        docs = [head.get(), tenant.collection("threads").document(thread_id).get(),
                *head.collection("events").stream()]
        return sum(document_size(d.reference.path, d.to_dict() or {}) for d in docs)


def test_fifty_turns_cost_the_same_bytes_and_model_input_as_the_tenth(e2e: E2E) -> None:
    typed = e2e.client.typed
    thread = typed.create_thread("ticker")
    written, tokens = [], []
    for _ in range(50):
        run = typed.send(thread.thread_id, "tick 1", wait=30)
        if run.status.value != "succeeded":
            run = typed.wait(run.run_id, 60)
        assert run.status.value == "succeeded" and run.result == "ticked 1 times", run
        assert run.thread_id == thread.thread_id
        written.append(_written(e2e, run.run_id, thread.thread_id))
        tokens.append(run.usage.input_tokens)
    thread = typed.thread(thread.thread_id)
    assert thread.turns == 50 and thread.summary and thread.summarized_turns + len(thread.recent_turns) == 50
    # flat: the summary folds the older turns every few turns, a sawtooth that never grows (whether a fold ran
    # before the next turn started moves a turn's size within it: the summary runs after the next turn started)
    for sizes in (written, tokens):
        assert mean(sizes[40:]) <= mean(sizes[10:20]) * 1.05 and max(sizes[40:]) <= max(sizes[10:20]) * 1.1, sizes
    runs = list(typed.runs(thread=thread.thread_id, page_size=20))
    assert len(runs) == 50 and {r.thread_id for r in runs} == {thread.thread_id}


def test_queued_messages_take_their_turns_in_order(e2e: E2E) -> None:
    typed = e2e.client.typed
    thread = typed.create_thread("ticker", policy="queue")
    sent = [typed.send(thread.thread_id, f"tick {n}") for n in (3, 1, 2)]
    assert [r.status.value for r in sent[1:]] == ["waiting_turn", "waiting_turn"]
    done = [typed.wait(r.run_id, 120) for r in sent]
    assert [r.result for r in done] == ["ticked 3 times", "ticked 1 times", "ticked 2 times"]
    assert [r.created_at for r in done] == sorted(r.created_at for r in done)
    # each started once the one before it ended
    assert all(done[i].updated_at <= done[i + 1].updated_at for i in range(2))
    # the last turn is recorded by the thread task that follows its run's end, a moment after it (docs/threads.md)
    deadline = time.monotonic() + 30
    while len(turns := typed.thread(thread.thread_id).recent_turns) < len(sent):
        assert time.monotonic() < deadline, turns
        time.sleep(0.2)
    assert [t.run_id for t in turns] == [r.run_id for r in sent]


def test_a_busy_thread_refuses_a_message_and_other_tenants_see_nothing(e2e: E2E) -> None:
    headers = {"Authorization": "Bearer dev-token"}
    created = e2e.http.post("/v1/agents/ticker/threads", headers=headers, json={})
    assert created.status_code == 201 and created.headers["Location"].endswith(created.json()["thread_id"])
    thread_id = created.json()["thread_id"]
    first = e2e.http.post(f"/v1/threads/{thread_id}/runs", headers=headers, json={"input": "tick 5"})
    assert first.status_code == 202
    busy = e2e.http.post(f"/v1/threads/{thread_id}/runs", headers=headers, json={"input": "tick 1"})
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "thread_busy"
    acme = {"Authorization": "Bearer acme-token"}
    assert e2e.http.get(f"/v1/threads/{thread_id}", headers=acme).status_code == 404
    assert e2e.http.post(f"/v1/threads/{thread_id}/runs", headers=acme, json={"input": "hi"}).status_code == 404
    assert e2e.http.get("/v1/runs", params={"thread": thread_id}, headers=acme).json()["runs"] == []
    for path, body, status in [
            ("/v1/threads/thr_nope/runs", {"input": "hi"}, 404),
            (f"/v1/threads/{thread_id}/runs", {"input": ""}, 400),
            (f"/v1/threads/{thread_id}/runs", {"input": "hi", "extra": 1}, 400),
            ("/v1/agents/ticker/threads", {"policy": "whenever"}, 400),
            ("/v1/agents/nope/threads", {}, 404)]:
        answer = e2e.http.post(path, headers=headers, json=body)
        assert answer.status_code == status, (path, body, answer.text)
    e2e.wait(first.json()["run_id"])


def test_agex_chat_holds_a_conversation_in_the_terminal(e2e: E2E, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("tick 2\n\ntick 1\n/exit\n"))
    assert cli.main(["--api", e2e.stack.api_url, "chat", "ticker"]) == 0
    out = capsys.readouterr().out
    assert "ticker> ticked 2 times" in out and "ticker> ticked 1 times" in out
    assert "tool      tick" in out  # the steps, as they happened
    thread_id = out.split("thread ", 1)[1].split()[0]
    thread: dict[str, Any] = httpx.get(f"{e2e.stack.api_url}/v1/threads/{thread_id}",
                                       headers={"Authorization": "Bearer dev-token"}).json()
    assert thread["turns"] == 2 and "agex chat ticker --thread " + thread_id in out
