"""Time and identifiers come from ports, never from globals, so a step can be replayed and tested."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class Ids(Protocol):
    def new_id(self, prefix: str) -> str:
        """A new unique identifier starting with ``prefix``."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to: for unit tests of timeouts, leases and expiry."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now


_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


class RandomIds:
    """Time-ordered random ids (48-bit millisecond time + 80 random bits, base32), ULID-like.

    Time ordering keeps ids of runs created close together near each other in listings and logs.
    """

    def new_id(self, prefix: str) -> str:
        value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
        chars = []
        for _ in range(26):
            value, rem = divmod(value, 32)
            chars.append(_CROCKFORD[rem])
        return prefix + "".join(reversed(chars))


def derived_id(prefix: str, key: str) -> str:
    """A deterministic id: ``prefix`` and 26 base32 characters (130 bits) of the SHA-256 of ``key``. For ids
    that must come out the same on a retry (an approval of a step's call, the run of an Idempotency-Key);
    ``key`` must hold everything that tells two such ids apart."""
    digest = hashlib.sha256(key.encode()).digest()
    return prefix + base64.b32encode(digest).decode().lower().rstrip("=")[:26]


class SequentialIds:
    """Predictable ids for tests: ``prefix`` followed by a counter of its own (``run_000001``, then
    ``dec_000001`` for the first decision, whatever came before)."""

    def __init__(self) -> None:
        self._n: dict[str, int] = {}
        self._lock = threading.Lock()

    def new_id(self, prefix: str) -> str:
        with self._lock:
            self._n[prefix] = n = self._n.get(prefix, 0) + 1
            return f"{prefix}{n:06d}"
