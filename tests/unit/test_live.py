"""Following a run (agex.app.http.live): waiting for its end and streaming its events with a backoff, as the
API serves ``?wait=`` and ``?follow=true``. Time is the test's: every sleep is a delivery of the run's next
step, so the stream sees the run move while it waits."""

from __future__ import annotations

from typing import Any

import pytest

from agex.app.http import live
from agex.core.agent import Agent
from agex.core.errors import RequestError
from agex.core.run import RunHead
from agex.testing import FunctionModel
from agex.testing.harness import DEFAULT_CALLER, InMemoryRuntime
from examples.ticker_agent import agent as ticker


class Time:
    """A monotonic clock that sleeps by advancing, delivering one due task of the runtime each time."""

    def __init__(self, rt: InMemoryRuntime | None = None) -> None:
        self.now, self.rt, self.sleeps = 0.0, rt, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.rt is not None:
            for task in self.rt.queue.pending()[:1]:
                self.rt.queue.drop(task)
                self.rt.deliver(task)


def _runtime(agent: Agent = ticker) -> InMemoryRuntime:
    def script(request: Any) -> Any:
        turns = sum(1 for m in request.messages if m.role == "model")
        return [("tick", {"n": turns})] if turns < 5 else "ticked"

    return InMemoryRuntime([agent], FunctionModel(script))


def _parse(chunks: list[bytes]) -> list[dict[str, str]]:
    out = []
    for block in b"".join(chunks).decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if fields:
            out.append(fields)
    return out


def test_wait_seconds() -> None:
    assert live.wait_seconds(None, 50) is None
    assert live.wait_seconds("30s", 50) == 30 and live.wait_seconds("2.5", 50) == 2.5 and live.wait_seconds("0", 50) == 0
    for bad in ("51", "-1", "30m", "", "1e3", "s"):
        with pytest.raises(RequestError, match="wait must be a duration"):
            live.wait_seconds(bad, 50)


def test_wait_returns_as_soon_as_the_run_ended_reading_less_and_less_often() -> None:
    rt = _runtime()
    run = rt.start(ticker.name, "tick 5")
    t = Time(rt)
    ended = live.wait_for_end(lambda: rt.service.get(DEFAULT_CALLER, run.run_id), 30, sleep=t.sleep,
                              monotonic=t.monotonic)
    assert ended.status.terminal and t.now < 30
    assert t.sleeps == sorted(t.sleeps)  # backing off


def test_wait_gives_up_at_its_deadline_with_the_run_as_it_is() -> None:
    rt = _runtime()
    run = rt.start(ticker.name, "tick 5")
    t = Time()  # nothing delivers: the run never moves
    seen = live.wait_for_end(lambda: rt.service.get(DEFAULT_CALLER, run.run_id), 10, sleep=t.sleep,
                             monotonic=t.monotonic)
    assert not seen.status.terminal and t.now == pytest.approx(10)
    assert len(t.sleeps) < 20 and max(t.sleeps) <= live.Pace().max_interval_s


def _stream(rt: InMemoryRuntime, run: RunHead, after: int, t: Time, max_seconds: float = 600) -> list[bytes]:
    return list(live.event_stream(
        lambda seq: rt.service.events(DEFAULT_CALLER, run.run_id, after_seq=seq, limit=1000),
        lambda: rt.service.get(DEFAULT_CALLER, run.run_id), after,
        lambda e: {"seq": e.seq, "kind": e.kind.value}, max_seconds=max_seconds, sleep=t.sleep,
        monotonic=t.monotonic))


def test_a_stream_sends_every_event_once_in_order_then_ends_with_the_run() -> None:
    rt = _runtime()
    run = rt.start(ticker.name, "tick 5")
    messages = _parse(_stream(rt, run, 0, Time(rt)))
    events = [m for m in messages if m.get("event") not in ("end", None)]
    final = rt.store.get_run(run.tenant, run.run_id)
    assert final is not None and final.status.terminal
    assert [int(m["id"]) for m in events] == list(range(1, final.seq + 1))
    assert events[-1]["event"] == "run_finished"
    assert messages[-1]["event"] == "end" and '"succeeded"' in messages[-1]["data"]


def test_a_reconnection_after_the_last_id_resumes_without_gap_or_copy() -> None:
    rt = _runtime()
    run = rt.start(ticker.name, "tick 5")
    t = Time(rt)
    first = _parse(_stream(rt, run, 0, t, max_seconds=0.12))  # cut short, as Cloud Run's timeout would
    assert first[-1]["event"] == "reconnect"
    got = [int(m["id"]) for m in first if "id" in m]
    rest = _parse(_stream(rt, run, got[-1], t))
    got += [int(m["id"]) for m in rest if "id" in m]
    final = rt.store.get_run(run.tenant, run.run_id)
    assert final is not None and got == list(range(1, final.seq + 1))


def test_an_idle_stream_sends_heartbeats() -> None:
    rt = _runtime()
    run = rt.start(ticker.name, "tick 5")
    chunks = _stream(rt, run, 0, Time(), max_seconds=60)  # nothing delivers
    assert b": keep-alive\n\n" in chunks
    assert _parse(chunks)[-1]["event"] == "reconnect"


class Streaming(FunctionModel):
    """Streams its answer's text a word at a time, as Gemini does."""

    def stream(self, request: Any, on_text: Any) -> Any:
        response = self.request(request)
        for word in response.message.text.split(" "):
            on_text(word + " ")
        return response


def test_a_followed_run_writes_its_model_text_as_it_comes_and_an_unfollowed_one_does_not() -> None:
    agent = Agent(name="talker", instructions="You talk.")
    rt = InMemoryRuntime([agent], Streaming(lambda request: "Hello there, how are you today?"))
    texts = rt.runtime.backends.live()
    followed, alone = rt.start("talker", "hi"), rt.start("talker", "hi")
    rt.service.watch(DEFAULT_CALLER, followed.run_id, live.WATCHED_FOR)
    rt.drive()
    written = texts.get(DEFAULT_CALLER.tenant, followed.run_id)
    assert written is not None and written.step == 1 and "Hello there, how are you today?".startswith(written.text)
    assert texts.get(DEFAULT_CALLER.tenant, alone.run_id) is None
    head = rt.store.get_run(DEFAULT_CALLER.tenant, followed.run_id)
    assert head is not None and head.result == "Hello there, how are you today?"


def test_a_stream_sends_the_model_text_as_it_grows_and_starts_it_over_for_another_attempt() -> None:
    from datetime import UTC, datetime

    from agex.ports.live_text import LiveText

    rt = _runtime()
    run = rt.start(ticker.name, "tick 5")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    script = iter([None, LiveText(1, "a", "Hel", at), LiveText(1, "a", "Hello wor", at),
                   LiveText(1, "a", "Hello wor", at), LiveText(1, "b", "Hi", at)])
    watched: list[float] = []
    t = Time()  # nothing delivers until the script is done
    stream = live.event_stream(
        lambda seq: rt.service.events(DEFAULT_CALLER, run.run_id, after_seq=seq, limit=1000),
        lambda: rt.service.get(DEFAULT_CALLER, run.run_id), 0,
        lambda e: {"seq": e.seq, "kind": e.kind.value}, max_seconds=30, sleep=t.sleep, monotonic=t.monotonic,
        text=lambda: next(script, None), watch=lambda: watched.append(t.now), watch_every_s=10)
    messages = _parse(list(stream))
    pieces = [m["data"] for m in messages if m.get("event") == "model_text"]
    assert pieces == ['{"step":1,"offset":0,"text":"Hel"}', '{"step":1,"offset":3,"text":"lo wor"}',
                      '{"step":1,"offset":0,"text":"Hi"}']
    assert watched[0] == 0 and len(watched) == 3  # marked watched at once, then every 10 s until the stream ends
