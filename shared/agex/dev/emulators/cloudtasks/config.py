"""Runtime settings of one emulator process."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EmulatorConfig:
    host: str = "127.0.0.1"
    grpc_port: int = 8123
    http_port: int = 8124
    # When set, other projects are refused the way the service refuses a
    # project the caller has no access to; catches misconfigured project ids.
    project: str | None = None
    # The service keeps names of finished/deleted tasks reserved for hours to
    # days; one hour keeps dedupe observable without pinning names forever.
    dedupe_window_seconds: float = 3600.0
    # The service refuses to recreate a just-deleted queue for up to 3 days.
    # Off by default because local setups routinely delete and recreate.
    queue_tombstone_seconds: float = 0.0
    # The service's floor is 15s; tests lower it to exercise deadlines quickly.
    min_dispatch_deadline_seconds: float = 15.0
    max_dispatch_deadline_seconds: float = 1800.0
    # Upper bound on HTTP requests in flight across all queues.
    dispatch_workers: int = 64
    initial_queues: tuple[str, ...] = field(default_factory=tuple)
