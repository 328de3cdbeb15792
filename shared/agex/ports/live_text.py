"""Live text port: the answer a model is writing in a step, as far as it got, for the followers of the run
(``GET /v1/runs/{id}/events?follow=true``). Advice, never state: the step's committed ``model_response`` event
is the answer; a lost or late write only makes a follower see the text later."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class LiveText:
    step: int
    attempt: str
    """Who writes it (the step's lease owner) and with which model: a follower starts the text over when this
    changes (a fallback model, another attempt)."""
    text: str
    at: datetime


class LiveTexts(abc.ABC):
    @abc.abstractmethod
    def put(self, tenant: str, run_id: str, live: LiveText, expire_at: datetime) -> None:
        """The text so far (the whole of it, not the last piece: a follower that missed a write misses nothing)."""

    @abc.abstractmethod
    def get(self, tenant: str, run_id: str) -> LiveText | None: ...
