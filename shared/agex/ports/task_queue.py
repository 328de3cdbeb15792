"""Task queue port: the step tasks that drive runs forward (Cloud Tasks in the cloud)."""

from __future__ import annotations

import abc
from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from agex.core.run import RunHead


class _RunTask(BaseModel):
    """What every task carries: whose run it is about, when it is due, the trace it continues, and the agent
    (which picks the agent's own queue when queues are per agent: its rate limits and retries)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str
    run_id: str
    schedule_at: datetime | None = None
    traceparent: str = ""
    agent: str = ""


class StepTask(_RunTask):
    """One delivery of one step of one run. The name is deterministic, so a retry that enqueues the
    same step again is refused by the queue's name dedupe instead of running the step twice."""

    step: int
    generation: int = 0
    window_through: int | None = None
    window: str | None = None
    """The context window the step before sealed for this one, as of event ``window_through``
    (``agex.engine.window``): it spares the step reading it. The step trusts it only if the head has its digest."""

    @classmethod
    def next_of(cls, head: RunHead, *, schedule_at: datetime | None = None, traceparent: str = "",
                window: tuple[int, str] | None = None) -> StepTask:
        """The task of the run's next step, in its current generation; ``window``: ``(through, text)``."""
        return cls(tenant=head.tenant, run_id=head.run_id, step=head.step + 1, generation=head.generation,
                   agent=head.agent, schedule_at=schedule_at, traceparent=traceparent or head.trace,
                   window_through=window[0] if window else None, window=window[1] if window else None)

    @property
    def name(self) -> str:
        suffix = f"-g{self.generation}" if self.generation else ""
        return f"{self.tenant}--{self.run_id}--s{self.step:06d}{suffix}"

    path: ClassVar[str] = "/"
    """Where on the step function's URL the task is delivered."""

    def body(self) -> dict[str, object]:
        carried = {"window_through": self.window_through, "window": self.window} if self.window else {}
        return {"tenant": self.tenant, "run_id": self.run_id, "step": self.step, "generation": self.generation,
                **carried}


class ApprovalExpiryTask(_RunTask):
    """Fires at an approval's ``expires_at``; if the approval is still pending it expires then. The only
    task a run waiting for approval has."""

    approval_id: str

    path: ClassVar[str] = "/approval-expiry"

    @property
    def name(self) -> str:
        return f"{self.tenant}--{self.run_id}--{self.approval_id}-expiry"

    def body(self) -> dict[str, object]:
        return {"tenant": self.tenant, "run_id": self.run_id, "approval_id": self.approval_id}


class WebhookTask(_RunTask):
    """Delivers one webhook of a run that ended (``agex.core.webhook``): the step function POSTs it, and answers
    503 until the endpoint answers 2xx, so Cloud Tasks retries it with the queue's backoff."""

    webhook: str

    path: ClassVar[str] = "/webhook"

    @property
    def name(self) -> str:
        return f"{self.tenant}--{self.run_id}--webhook-{self.webhook}"

    def body(self) -> dict[str, object]:
        return {"tenant": self.tenant, "run_id": self.run_id, "webhook": self.webhook}


class ThreadTask(_RunTask):
    """Moves a thread on once its turn's run ended (``run_id``): records the turn, starts the next queued run, and
    brings the summary up to date (a model call, here rather than in anyone's run). Idempotent: the thread
    changes only if its active run is still ``run_id``, and the summary only if no other task moved it."""

    thread_id: str

    path: ClassVar[str] = "/thread"

    @property
    def name(self) -> str:
        return f"{self.tenant}--{self.run_id}--thread"

    def body(self) -> dict[str, object]:
        return {"tenant": self.tenant, "run_id": self.run_id, "thread_id": self.thread_id}


class MemoryTask(_RunTask):
    """Learns from a run that ended, for an agent that remembers (docs/memory.md): asks the agent's model what is
    worth remembering and keeps it. Idempotent: what was learned is recorded on the run once, and re-applied as is."""

    path: ClassVar[str] = "/memory"

    @property
    def name(self) -> str:
        return f"{self.tenant}--{self.run_id}--memory"

    def body(self) -> dict[str, object]:
        return {"tenant": self.tenant, "run_id": self.run_id}


Task = StepTask | ApprovalExpiryTask | WebhookTask | ThreadTask | MemoryTask


class TaskQueue(abc.ABC):
    @abc.abstractmethod
    def enqueue(self, task: Task) -> bool:
        """Create the task; True if created, False if a task of that name exists or ran recently."""

    @abc.abstractmethod
    def exists(self, task: Task) -> bool:
        """Whether the task is still pending (scheduled, dispatching or being retried)."""
