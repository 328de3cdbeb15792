"""Following a run over HTTP: waiting for it to end (``?wait=30s``) and streaming its events as they are
committed (``text/event-stream``, resumable with ``Last-Event-ID``). See docs/api.md, "Following a run".

Both read the store with a backoff: a fresh read soon after something changed, then less and less often
(up to every ``max_interval_s``) while nothing does, so a thousand idle streams cost about a thousand reads
a few seconds, not a tight loop. A stream ends after the run's final event, or after ``max_seconds`` (under
Cloud Run's request timeout): the client reconnects with the last id it got and misses nothing.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from agex.core.errors import RequestError
from agex.core.run import Event, EventKind, RunHead
from agex.ports.live_text import LiveText

WATCH_RENEW_S = 10.0
"""How often a stream says again that the run is watched (the mark lasts ``WATCHED_FOR``)."""
WATCHED_FOR = timedelta(seconds=30)

_WAIT = re.compile(r"([0-9]{1,4}(?:\.[0-9]{1,3})?)s?")
_FINAL = (EventKind.run_finished, EventKind.run_cancelled)


def wait_seconds(raw: str | None, limit: float) -> float | None:
    """``?wait=30s`` (or ``30``, ``2.5s``) as seconds; None when absent. At most ``limit``."""
    if raw is None:
        return None
    m = _WAIT.fullmatch(raw)
    seconds = float(m.group(1)) if m else -1.0
    if not 0 <= seconds <= limit:
        raise RequestError(f"query parameter wait must be a duration in seconds from 0 to {limit:g}, like 30s; "
                           f"got {raw[:40]!r}")
    return seconds


@dataclass(frozen=True)
class Pace:
    """How often a follower reads: ``first_s`` after a change, growing by ``factor`` to ``max_interval_s``."""

    first_s: float = 0.05
    factor: float = 1.6
    max_interval_s: float = 2.0

    def intervals(self) -> Iterator[float]:
        delay = self.first_s
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_interval_s)


def wait_for_end(read: Callable[[], RunHead], seconds: float, *, pace: Pace = Pace(),
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> RunHead:
    """The run as soon as it ended, or as it is when ``seconds`` are up."""
    deadline = monotonic() + seconds
    head = read()
    for delay in pace.intervals():
        left = deadline - monotonic()
        if head.status.terminal or left <= 0:
            return head
        sleep(min(delay, left))
        head = read()
    raise AssertionError("unreachable")


def sse(event: str, data: object, event_id: int | None = None) -> bytes:
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines += [f"event: {event}", f"data: {json.dumps(data, separators=(',', ':'), default=str)}"]
    return ("\n".join(lines) + "\n\n").encode()


@dataclass
class _Text:
    """What a follower was sent of the model text being written: the step, the attempt writing it, how much."""

    step: int = 0
    attempt: str = ""
    sent: int = 0
    answered: int = 0
    """The last step whose recorded answer was sent: its live text is old."""

    def delta(self, live: LiveText | None) -> dict[str, object] | None:
        if live is None or live.step <= self.answered:
            return None
        if (live.step, live.attempt) != (self.step, self.attempt):
            self.step, self.attempt, self.sent = live.step, live.attempt, 0  # another step, model or attempt
        if len(live.text) <= self.sent:
            return None
        piece = {"step": live.step, "offset": self.sent, "text": live.text[self.sent:]}
        self.sent = len(live.text)
        return piece


def event_stream(list_events: Callable[[int], list[Event]], read: Callable[[], RunHead], after_seq: int,
                 view: Callable[[Event], dict[str, object]], *, max_seconds: float, heartbeat_s: float = 15.0,
                 pace: Pace = Pace(), sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic,
                 text: Callable[[], LiveText | None] | None = None, watch: Callable[[], None] | None = None,
                 watch_every_s: float = WATCH_RENEW_S) -> Iterator[bytes]:
    """The run's events after ``after_seq`` as server-sent events (``id`` the event's sequence number,
    ``event`` its kind, ``data`` its view), then ``event: end`` with the run's status once it ended. A comment
    line every ``heartbeat_s`` while nothing happens keeps proxies from closing the connection.

    With ``text`` and ``watch``: the stream marks the run watched (``watch``, again every ``watch_every_s``), so
    its steps write the model's text as it comes, and sends it as ``event: model_text`` (no id: the recorded
    ``model_response`` is the answer) with ``{step, offset, text}``: the text from ``offset`` on, ``offset`` 0
    starting it over (another model or attempt)."""
    started = last_sent = monotonic()
    watched_at = -math.inf
    shown = _Text()
    yield b"retry: 1000\n\n"
    intervals = pace.intervals()
    while True:
        now = monotonic()
        if watch is not None and now - watched_at >= watch_every_s:
            watched_at = now
            watch()
        events = list_events(after_seq)
        for e in events:
            yield sse(e.kind.value, view(e), e.seq)
            after_seq = e.seq
            if e.kind == EventKind.model_response:
                shown.answered = max(shown.answered, e.step)
        now = monotonic()
        if events:
            last_sent, intervals = now, pace.intervals()
            if events[-1].kind not in _FINAL:
                continue  # a full page may have more behind it
        piece = shown.delta(text()) if text is not None else None
        if piece is not None:
            yield sse("model_text", piece)
            # a model is writing: look again soon
            last_sent, intervals = now, pace.intervals()
        head = read() if not events or events[-1].kind in _FINAL else None
        if head is not None and head.status.terminal and head.seq <= after_seq:
            yield sse("end", {"status": head.status.value, "run_id": head.run_id})
            return
        if now - started >= max_seconds:
            # Cloud Run would cut the request soon: the client reconnects with Last-Event-ID
            yield sse("reconnect", {"after": after_seq})
            return
        if now - last_sent >= heartbeat_s:
            yield b": keep-alive\n\n"
            last_sent = now
        sleep(min(next(intervals), max(0.0, started + max_seconds - now)))
