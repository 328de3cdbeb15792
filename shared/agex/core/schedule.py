"""Schedules: agents run on a cron schedule, declared in the fleet file (docs/schedules.md).

Cloud Scheduler fires each schedule in the cloud (a job per schedule, Terraform's), the local stack's scheduler
locally; each firing is keyed by the schedule and the time it was due, so a firing delivered twice starts one
run. A schedule can be paused and resumed from the API without a deploy.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    agent: str
    cron: str = Field(min_length=9, max_length=200)
    """Five fields, minute hour day-of-month month day-of-week, as Cloud Scheduler takes them (``0 6 * * 1-5``:
    6:00 on weekdays)."""
    time_zone: str = "Etc/UTC"
    """An IANA time zone the cron is read in (``Europe/Paris``)."""
    input: str = Field(min_length=1)
    tenant: str = Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")
    """The tenant the runs belong to: only its callers see and pause the schedule."""
    principal: str = ""
    """Who the runs are started as; default ``schedule:{name}``."""
    metadata: dict[str, str] = Field(default_factory=dict)

    @property
    def started_by(self) -> str:
        return self.principal or f"schedule:{self.name}"


class ScheduleState(BaseModel):
    """What the API changed about a schedule: paused or not, by whom, when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    paused: bool
    by: str
    at: datetime


def firing_key(name: str, due: datetime) -> str:
    """The idempotency key of a schedule's firing due at ``due``: the same for a firing delivered twice."""
    return f"schedule-{name}-{due.strftime('%Y%m%dT%H%M')}"
