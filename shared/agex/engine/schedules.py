"""Schedules as a service: fire one (start its run, once per due time), list a tenant's, pause and resume
(docs/schedules.md). ``croniter`` is imported where a next firing time is computed, not at cold start."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from agex.core.clock import Clock
from agex.core.errors import ConfigurationError, NotFound
from agex.core.schedule import Schedule, ScheduleState, firing_key
from agex.engine.runs import CreateRunRequest, RunService, Started
from agex.obs import logging as log
from agex.ports.auth import Caller
from agex.ports.schedules import ScheduleStore

_log = log.get("schedules")


def check(schedule: Schedule) -> None:
    """Raise ``ConfigurationError`` for a cron expression or time zone Cloud Scheduler would refuse."""
    from croniter import croniter

    if len(schedule.cron.split()) != 5 or not croniter.is_valid(schedule.cron):
        raise ConfigurationError(f"schedule {schedule.name!r}: {schedule.cron!r} is not a cron expression of five "
                                 "fields (minute hour day-of-month month day-of-week), like '0 6 * * 1-5'")
    try:
        ZoneInfo(schedule.time_zone)
    except (KeyError, ValueError) as e:
        raise ConfigurationError(f"schedule {schedule.name!r}: unknown time zone {schedule.time_zone!r}") from e


def next_due(schedule: Schedule, after: datetime) -> datetime:
    """The first time after ``after`` the schedule is due, in UTC."""
    from croniter import croniter

    zone = ZoneInfo(schedule.time_zone)
    due: datetime = croniter(schedule.cron, after.astimezone(zone)).get_next(datetime)
    return due.astimezone(ZoneInfo("UTC"))


@dataclass(frozen=True)
class ScheduleView:
    schedule: Schedule
    state: ScheduleState | None
    next_due: datetime | None
    """None while paused."""


class ScheduleService:
    def __init__(self, schedules: Sequence[Schedule], store: ScheduleStore, runs: RunService, clock: Clock) -> None:
        self.schedules = {s.name: s for s in schedules}
        self.store, self.runs, self.clock = store, runs, clock

    def _get(self, name: str, tenant: str | None = None) -> Schedule:
        schedule = self.schedules.get(name)
        if schedule is None or (tenant is not None and schedule.tenant != tenant):
            # another tenant's schedule is indistinguishable from a missing one
            raise NotFound(f"unknown schedule {name!r}")
        return schedule

    def fire(self, name: str, due: datetime) -> Started | None:
        """Start the run the schedule's firing due at ``due`` asks for; the same run for a firing delivered
        twice (its idempotency key is the schedule and the due minute). None while the schedule is paused."""
        schedule = self._get(name)
        state = self.store.state(name)
        if state is not None and state.paused:
            log.info(_log, f"schedule {name} is paused (by {state.by}); firing due {due.isoformat()} skipped",
                     schedule=name, due=due.isoformat())
            return None
        started = self.runs.start(
            Caller(schedule.tenant, schedule.started_by), schedule.agent,
            CreateRunRequest(input=schedule.input, metadata={**schedule.metadata, "schedule": name,
                                                             "due": due.isoformat()}),
            idempotency_key=firing_key(name, due))
        log.info(_log, f"schedule {name} fired for {due.isoformat()}: run {started.run.run_id}"
                       + (" (already started by an earlier delivery)" if started.replayed else ""),
                 schedule=name, run=started.run.run_id, replayed=started.replayed)
        return started

    def list(self, caller: Caller) -> list[ScheduleView]:
        now = self.clock.now()
        views = []
        for s in sorted(self.schedules.values(), key=lambda s: s.name):
            if s.tenant != caller.tenant:
                continue
            state = self.store.state(s.name)
            views.append(ScheduleView(s, state, None if state is not None and state.paused else next_due(s, now)))
        return views

    def set_paused(self, caller: Caller, name: str, paused: bool) -> ScheduleView:
        schedule = self._get(name, caller.tenant)
        state = self.store.set_paused(name, paused, caller.principal, self.clock.now())
        log.info(_log, f"schedule {name} {'paused' if paused else 'resumed'} by {caller.principal}", schedule=name)
        return ScheduleView(schedule, state, None if paused else next_due(schedule, self.clock.now()))
