"""Threads: conversations made of runs, one turn per run (docs/threads.md).

Stored as ``tenants/{tenant}/threads/{thread}``. A thread keeps what the next turn needs and nothing that grows:
a rolling summary the model writes of the older turns, and the last turns whole. So the thread document, what a
turn's run carries of it, and the model's input stay the same size at turn 200 as at turn 2.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

FORMAT_VERSION = 1
THREAD_RETENTION = timedelta(days=30)
"""A thread is deleted (Firestore TTL) this long after its last turn."""
KEEP_TURNS = 6
"""Turns kept whole: older ones are folded into the summary."""
SUMMARY_BATCH = 4
"""Turns folded into the summary at once: one summary call every this many turns, not one per turn."""
MAX_RECENT_TURNS = 2 * KEEP_TURNS + SUMMARY_BATCH
"""Turns kept at most when the summary lags (its model call failing): past this the oldest are dropped, and the
model is told how many are missing."""
TURN_TEXT_CHARS = 4000
"""A turn's input and answer are each kept to this many characters in the thread (the runs keep them whole)."""
SUMMARY_CHARS = 4000
MAX_PENDING = 10
"""Messages queued behind the active run at most (``queue`` policy); one more is refused (409)."""


class ThreadPolicy(StrEnum):
    """What a message sent while the thread's run is still going does."""

    reject = "reject"
    """Refused with 409 ``thread_busy``: the sender retries once the run ended."""
    queue = "queue"
    """Its run waits (``waiting_turn``) and starts when the runs before it ended, in order."""
    interrupt = "interrupt"
    """The active run (and any queued one) is cancelled, and this message's run goes next."""


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Turn(_Doc):
    run_id: str
    input: str
    """What the user said, as the model saw it (redacted when a guard said so), cut to ``TURN_TEXT_CHARS``."""
    answer: str
    """The run's answer; for a run that did not succeed, what became of it (``[failed: ...]``)."""
    at: datetime


class ThreadContext(_Doc):
    """What a turn's run is given of the conversation before it: fixed when the run starts, kept on its head,
    so every step and every redelivery of the run sees the same history."""

    summary: str = ""
    summarized_turns: int = 0
    """How many of the earliest turns the summary covers."""
    dropped_turns: int = 0
    """Turns neither in the summary nor kept (the summary lagged): the model is told they are missing."""
    turns: list[Turn] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.summary and not self.turns and not self.dropped_turns


class Thread(_Doc):
    format: int = FORMAT_VERSION
    thread_id: str
    tenant: str
    agent: str
    principal: str
    """Who created the thread."""
    policy: ThreadPolicy = ThreadPolicy.reject
    metadata: dict[str, str] = Field(default_factory=dict)
    active_run: str | None = None
    """The run of the turn under way: the only run of the thread that steps."""
    pending: list[str] = Field(default_factory=list)
    """Runs waiting their turn (``queue`` and ``interrupt``), oldest first."""
    turns: int = 0
    """Turns ended so far."""
    context: ThreadContext = Field(default_factory=ThreadContext)
    summary_calls: int = 0
    summary_cost_usd: float = 0.0
    """The model calls that made the summary, and their cost (also in the spend ledger, as the agent's)."""
    idempotency_key: str | None = None
    request_hash: str | None = None
    created_at: datetime
    updated_at: datetime
    expire_at: datetime


def clip(text: str, limit: int = TURN_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 14] + " …[truncated]"
