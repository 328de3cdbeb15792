"""Following a run's event stream (``?follow=true``) across connections: each (re)connection asks for the
events after the last one received (``Last-Event-ID``), so a dropped connection or the server's
``event: reconnect`` loses and repeats nothing; ``event: end`` ends it. Shared by both clients, which only
read the lines."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import Enum

import httpx

from agex.app.http.views import EventView
from agex.client.errors import ApiUnreachable, error_of
from agex.client.retry import RetryPolicy
from agex.client.sse import Message, Parser

LASTED_S = 30.0


class Turn(Enum):
    END = "end"
    """The run ended and every event was sent."""
    RECONNECT = "reconnect"
    """The server closes the stream (its request timeout nears): connect again, right away."""


@dataclass(frozen=True)
class ModelText:
    """A piece of the text a step's model is writing (``event: model_text``): it goes at ``offset`` of the step's
    text, ``offset`` 0 starting it over. The step's ``model_response`` event is the answer, whole."""

    step: int
    offset: int
    text: str


@dataclass
class Following:
    path: str
    after: int
    retry: RetryPolicy
    api: str
    read_timeout_s: float
    connect_timeout_s: float
    deadline: float | None = None
    """``time.monotonic()`` past which the follower stops (checked as lines arrive: an event or the server's
    keep-alive every 15 s)."""
    failures: int = 0
    """Connections in a row that broke without bringing an event."""
    parser: Parser = field(default_factory=Parser)
    opened_at: float | None = None
    with_text: bool = False
    """Hand on the model text as it is written (``ModelText``), not only the events."""

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def connection(self) -> tuple[dict[str, str], dict[str, str], httpx.Timeout]:
        """Query, headers and timeouts of the next connection."""
        self.parser = Parser()
        read = self.read_timeout_s
        if self.deadline is not None:
            read = max(0.05, min(read, self.deadline - time.monotonic()))
        return ({"follow": "true"}, {"Last-Event-ID": str(self.after), "Accept": "text/event-stream"},
                httpx.Timeout(read, connect=self.connect_timeout_s))

    def opened(self) -> None:
        self.opened_at = time.monotonic()

    def refused(self, response: httpx.Response) -> float:
        """The stream was not opened: the pause before trying again, or the error raised."""
        self.failures += 1
        error = error_of(response, self.failures)
        pause = self.retry.after_error(error, self.failures)
        if pause is None:
            raise error
        return pause

    def dropped(self, failure: httpx.TransportError | None) -> float:
        """The connection broke (or closed before ``end``): the pause before resuming, or ApiUnreachable once
        ``retry.attempts`` connections in a row brought nothing."""
        if self.opened_at is not None and time.monotonic() - self.opened_at >= LASTED_S:
            self.failures = 0  # an idle stream that lived a while, cut by something on the way: not a failure
        self.opened_at = None
        self.failures += 1
        pause = self.retry.after_failure(self.failures)
        if pause is None:
            cause = failure or httpx.RemoteProtocolError("the stream closed before the run ended")
            raise ApiUnreachable(self.api, cause, self.failures) from cause
        return pause

    def take(self, line: str) -> EventView | ModelText | Turn | None:
        message = self.parser.feed(line)
        return self._step(message) if message is not None else None

    def _step(self, message: Message) -> EventView | ModelText | Turn | None:
        if message.event == "end":
            return Turn.END
        if message.event == "reconnect":
            return Turn.RECONNECT
        if message.event == "model_text":
            if not self.with_text:
                return None
            piece = json.loads(message.data)
            return ModelText(step=int(piece["step"]), offset=int(piece["offset"]), text=str(piece["text"]))
        event = EventView.model_validate(json.loads(message.data), extra="ignore")
        self.failures = 0
        if event.seq <= self.after:
            return None  # already had it
        self.after = event.seq
        return event
