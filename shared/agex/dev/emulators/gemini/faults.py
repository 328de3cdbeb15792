"""Fault injection state: queued admin faults and per-turn scenario faults.

This is the only mutable state that affects generateContent answers. Scenario replies
stay a pure function of the request; faults decide only *whether* (or how late) that
reply is delivered, which is what retry and timeout logic needs to be tested against.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Method = Literal["generateContent", "cachedContents.create", "cachedContents.get", "cachedContents.list",
                 "cachedContents.update", "cachedContents.delete", "embedContent", "batchEmbedContents"]
"""The API methods a fault can be aimed at (the Gemini emulator's; the OpenAI emulator's requests are all
``generateContent``)."""


class FaultRequest(BaseModel):
    """Body of POST /_emulator/faults."""

    model_config = ConfigDict(extra="forbid")

    status: int | None = Field(default=None, ge=400, le=599)
    count: int = Field(default=1, ge=1)
    delay_ms: int | None = Field(default=None, ge=0)
    model: str | None = None
    retry_after_s: int | None = Field(default=None, ge=0)
    """The ``Retry-After`` header to answer the fault with (the OpenAI-compatible emulator sends it)."""
    method: Method = "generateContent"
    """Which requests it fails: generation (streamed or not) unless it names a ``cachedContents`` or an
    embedding method."""

    @model_validator(mode="after")
    def _needs_effect(self) -> FaultRequest:
        if self.status is None and self.delay_ms is None:
            raise ValueError("give `status` (an HTTP error to return) and/or `delay_ms` (a slow response)")
        return self


@dataclass
class QueuedFault:
    status: int | None
    remaining: int
    delay_ms: int
    model: str | None
    retry_after_s: int | None = None
    method: str = "generateContent"

    def as_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "remaining": self.remaining,
            "delay_ms": self.delay_ms,
            "model": self.model,
            "retry_after_s": self.retry_after_s,
            "method": self.method,
        }


@dataclass(frozen=True)
class FaultEffect:
    status: int | None
    delay_ms: int
    source: str  # "injected" (admin endpoint) or "scenario" (per-turn fault)
    retry_after_s: int | None = None


def normalize_model(name: str) -> str:
    return name.removeprefix("models/")


class FaultQueue:
    """Faults queued through the admin endpoint, consumed in FIFO order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[QueuedFault] = []

    def add(self, req: FaultRequest) -> QueuedFault:
        fault = QueuedFault(
            status=req.status,
            remaining=req.count,
            delay_ms=req.delay_ms or 0,
            model=normalize_model(req.model) if req.model else None,
            retry_after_s=req.retry_after_s,
            method=req.method,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, model: str | None, method: str = "generateContent") -> FaultEffect | None:
        """Consumes one use of the first pending fault that applies to `method` on `model` (None: a method
        of no model, such as listing caches, which only faults without a model take)."""
        model = normalize_model(model) if model is not None else None
        with self._lock:
            for fault in self._faults:
                if fault.method == method and (fault.model is None or fault.model == model):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return FaultEffect(status=fault.status, delay_ms=fault.delay_ms, source="injected",
                                       retry_after_s=fault.retry_after_s)
        return None

    def clear(self) -> int:
        with self._lock:
            n = len(self._faults)
            self._faults.clear()
        return n

    def pending(self) -> list[dict[str, object]]:
        with self._lock:
            return [f.as_json() for f in self._faults]


class TurnFaultTracker:
    """Counts faulted deliveries per (conversation, turn) for scenario `fault.times`.

    The key is the request digest: a retry of the same request is the same
    conversation at the same turn, so after `times` failures the retry succeeds.
    Two identical conversations running concurrently share the count.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._served: dict[str, int] = {}

    def should_fault(self, key: str, times: int) -> bool:
        with self._lock:
            served = self._served.get(key, 0)
            if served >= times:
                return False
            self._served[key] = served + 1
            return True

    def reset(self) -> None:
        with self._lock:
            self._served.clear()
