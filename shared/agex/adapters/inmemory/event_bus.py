"""In-memory event bus: keeps every message so tests and embedders can read them back."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any

from agex.ports.event_bus import EventBus


@dataclass(frozen=True)
class Published:
    id: str
    topic: str
    message: dict[str, Any]
    attributes: dict[str, str]


class InMemoryEventBus(EventBus):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.messages: list[Published] = []

    def publish(self, topic: str, message: dict[str, Any], attributes: dict[str, str] | None = None) -> str:
        with self._lock:
            msg = Published(str(next(self._ids)), topic, dict(message), dict(attributes or {}))
            self.messages.append(msg)
            return msg.id

    def on(self, topic: str) -> list[Published]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]
