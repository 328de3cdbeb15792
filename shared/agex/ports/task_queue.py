"""Task queue port: the step tasks that drive runs forward (Cloud Tasks in the cloud)."""

from __future__ import annotations

import abc
from datetime import datetime

from pydantic import BaseModel, ConfigDict


class StepTask(BaseModel):
    """One delivery of one step of one run. The name is deterministic, so a retry that enqueues the
    same step again is refused by the queue's name dedupe instead of running the step twice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str
    run_id: str
    step: int
    generation: int = 0
    schedule_at: datetime | None = None
    traceparent: str = ""

    @property
    def name(self) -> str:
        suffix = f"-g{self.generation}" if self.generation else ""
        return f"{self.tenant}--{self.run_id}--s{self.step:06d}{suffix}"

    def body(self) -> dict[str, object]:
        return {"tenant": self.tenant, "run_id": self.run_id, "step": self.step, "generation": self.generation}


class TaskQueue(abc.ABC):
    @abc.abstractmethod
    def enqueue(self, task: StepTask) -> bool:
        """Create the task; True if created, False if a task of that name exists or ran recently."""

    @abc.abstractmethod
    def exists(self, task: StepTask) -> bool:
        """Whether the task is still pending (scheduled, dispatching or being retried)."""
