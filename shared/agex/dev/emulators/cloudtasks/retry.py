"""Retry timing, as documented on ``google.cloud.tasks.v2.RetryConfig``."""

from __future__ import annotations

from dataclasses import dataclass

from . import protos


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int  # -1 means unlimited
    max_retry_duration: float  # 0 means unlimited
    min_backoff: float
    max_backoff: float
    max_doublings: int

    @classmethod
    def from_proto(cls, rc: protos.RetryConfigMsg) -> RetryPolicy:
        return cls(
            max_attempts=rc.max_attempts,
            max_retry_duration=protos.duration_seconds(rc.max_retry_duration),
            min_backoff=protos.duration_seconds(rc.min_backoff),
            max_backoff=protos.duration_seconds(rc.max_backoff),
            max_doublings=rc.max_doublings,
        )


def backoff_after(failures: int, policy: RetryPolicy) -> float:
    """Delay before the next attempt once ``failures`` (>= 1) attempts have failed.

    The interval starts at min_backoff, doubles max_doublings times, then grows
    linearly by the last doubled interval, and is capped at max_backoff; e.g.
    10s/300s/3 doublings gives 10, 20, 40, 80, 160, 240, 300, 300, ...
    """
    k = max(failures, 1) - 1
    if k <= policy.max_doublings:
        # Past ~60 doublings any realistic max_backoff is exceeded; capping the
        # exponent avoids float overflow for absurd max_doublings values.
        delay = policy.min_backoff * float(2 ** min(k, 60))
    else:
        step = policy.min_backoff * float(2 ** min(policy.max_doublings, 60))
        delay = step * (k - policy.max_doublings + 1)
    return min(delay, policy.max_backoff)


def should_give_up(attempts: int, since_first_attempt: float, policy: RetryPolicy) -> bool:
    """Whether a task that just failed its ``attempts``-th attempt is dropped.

    A limit that is not set (-1 attempts, 0 duration) does not hold the task
    back; when both are set, both must be reached; with neither set the task
    is retried indefinitely.
    """
    attempts_limited = policy.max_attempts != -1
    duration_limited = policy.max_retry_duration > 0
    if not attempts_limited and not duration_limited:
        return False
    attempts_reached = not attempts_limited or attempts >= policy.max_attempts
    duration_reached = not duration_limited or since_first_attempt >= policy.max_retry_duration
    return attempts_reached and duration_reached
