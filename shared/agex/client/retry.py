"""When a request is sent again: only one that is safe to repeat, only after a failure that a repeat can
cure, a bounded number of times, further and further apart."""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

from agex.client.errors import ApiError

RETRIED_STATUSES = frozenset({502, 503, 504})
"""A proxy or a dependency failed on the way: the API says to retry a ``503`` with the same key."""

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport failures before a byte of the request left: retrying them repeats nothing."""


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` in all (1: never retry); the pause before attempt n+1 grows as ``backoff_s`` × 2ⁿ⁻¹ up
    to ``max_backoff_s``, half of it random (so clients that failed together do not come back together), and is
    never shorter than the answer's ``Retry-After``. A ``429`` is retried only when its ``Retry-After`` is at
    most ``max_retry_after_s``; a ``502``/``503``/``504`` whose ``Retry-After`` is longer is not retried
    either. Other ``4xx`` and ``500`` never are."""

    attempts: int = 4
    backoff_s: float = 0.25
    max_backoff_s: float = 5.0
    max_retry_after_s: float = 30.0

    def pause(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after attempt ``attempt`` (from 1) failed."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempt - 1))
        return max(ceiling / 2 + random.uniform(0, ceiling / 2), retry_after or 0.0)

    def after_error(self, error: ApiError, attempt: int) -> float | None:
        """The pause before sending again a safe request that was answered ``error``; None: do not."""
        if attempt >= self.attempts:
            return None
        if error.retry_after is not None and error.retry_after > self.max_retry_after_s:
            return None
        if error.status in RETRIED_STATUSES or (error.status == 429 and error.retry_after is not None):
            return self.pause(attempt, error.retry_after)
        return None

    def after_failure(self, attempt: int) -> float | None:
        """The pause before sending again a request that got no answer; None: do not."""
        return self.pause(attempt) if attempt < self.attempts else None


NO_RETRY = RetryPolicy(attempts=1)
