"""Event bus port: notifications to the outside (Pub/Sub in the cloud)."""

from __future__ import annotations

import abc
from typing import Any


class EventBus(abc.ABC):
    @abc.abstractmethod
    def publish(self, topic: str, message: dict[str, Any], attributes: dict[str, str] | None = None) -> str:
        """Publish a JSON message; return its id. ``topic`` is the short topic name."""
