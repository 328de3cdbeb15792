"""In-memory live text."""

from __future__ import annotations

import threading
from datetime import datetime

from agex.ports.live_text import LiveText, LiveTexts


class InMemoryLiveTexts(LiveTexts):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._texts: dict[tuple[str, str], LiveText] = {}

    def put(self, tenant: str, run_id: str, live: LiveText, expire_at: datetime) -> None:
        with self._lock:
            self._texts[(tenant, run_id)] = live

    def get(self, tenant: str, run_id: str) -> LiveText | None:
        with self._lock:
            return self._texts.get((tenant, run_id))
