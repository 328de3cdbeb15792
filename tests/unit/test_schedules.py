"""Schedules (docs/schedules.md): a firing starts one run however often it is delivered (keyed by the schedule
and the minute it was due); a paused schedule starts none until resumed; a tenant sees and pauses only its
own; cron and time zones are checked at start and read as Cloud Scheduler reads them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agex.core.errors import ConfigurationError, NotFound
from agex.core.run import RunStatus
from agex.core.schedule import Schedule
from agex.engine.schedules import check, next_due
from agex.ports.auth import Caller
from agex.testing import FunctionModel
from agex.testing.harness import InMemoryRuntime
from examples.ticker_agent import agent as ticker

ACME, GLOBEX = Caller("acme", "ops@acme.com"), Caller("globex", "ops@globex.com")
NIGHTLY = Schedule(name="nightly", agent="ticker", cron="0 6 * * *", time_zone="Europe/Paris", input="tick 1",
                   tenant="acme", metadata={"kind": "report"})
DUE = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)


def _rt(*schedules: Schedule) -> InMemoryRuntime:
    def script(request: object) -> object:
        return "done"

    return InMemoryRuntime([ticker], FunctionModel(script), schedules=schedules or (NIGHTLY,))


def test_a_firing_delivered_twice_starts_one_run_as_the_schedule_says() -> None:
    rt = _rt()
    first = rt.runtime.schedules.fire("nightly", DUE)
    again = rt.runtime.schedules.fire("nightly", DUE)
    assert first is not None and again is not None
    assert again.run.run_id == first.run.run_id and again.replayed and not first.replayed
    run = first.run
    assert (run.tenant, run.principal, run.agent, run.input) == ("acme", "schedule:nightly", "ticker", "tick 1")
    assert run.metadata == {"kind": "report", "schedule": "nightly", "due": DUE.isoformat()}
    nxt = rt.runtime.schedules.fire("nightly", datetime(2026, 11, 30, 5, 0, tzinfo=UTC))
    assert nxt is not None and nxt.run.run_id != run.run_id
    rt.drive()
    assert rt.store.get_run("acme", run.run_id).status == RunStatus.succeeded  # type: ignore[union-attr]


def test_a_paused_schedule_starts_nothing_until_resumed() -> None:
    rt = _rt()
    service = rt.runtime.schedules
    paused = service.set_paused(ACME, "nightly", True)
    assert paused.state is not None and paused.state.paused and paused.state.by == "ops@acme.com"
    assert paused.next_due is None
    assert service.fire("nightly", DUE) is None
    resumed = service.set_paused(ACME, "nightly", False)
    assert resumed.next_due is not None and service.fire("nightly", DUE) is not None


def test_a_tenant_sees_and_pauses_only_its_own_schedules() -> None:
    rt = _rt()
    service = rt.runtime.schedules
    assert [v.schedule.name for v in service.list(ACME)] == ["nightly"]
    assert service.list(GLOBEX) == []
    with pytest.raises(NotFound):
        service.set_paused(GLOBEX, "nightly", True)
    with pytest.raises(NotFound):
        service.fire("weekly", DUE)


def test_cron_is_read_in_the_schedules_time_zone() -> None:
    # 6:00 in Paris is 5:00 UTC in winter
    assert next_due(NIGHTLY, datetime(2026, 11, 29, 4, 59, tzinfo=UTC)) == DUE
    assert next_due(NIGHTLY, DUE) == datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
    summer = next_due(NIGHTLY, datetime(2026, 7, 1, 0, 0, tzinfo=UTC))
    assert summer == datetime(2026, 7, 1, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize(("changes", "why"), [
    ({"cron": "every day at six"}, "not a cron expression"),
    ({"cron": "0 6 * * * *"}, "five"),
    ({"time_zone": "Mars/Olympus"}, "unknown time zone"),
])
def test_bad_schedules_are_refused_at_start(changes: dict[str, str], why: str) -> None:
    bad = NIGHTLY.model_copy(update=changes)
    with pytest.raises(ConfigurationError, match=why):
        check(bad)
    with pytest.raises(ConfigurationError, match=why):
        _rt(bad)


def test_a_schedule_of_an_agent_not_deployed_is_refused_at_start() -> None:
    with pytest.raises(ConfigurationError, match="not deployed"):
        _rt(NIGHTLY.model_copy(update={"agent": "support"}))
    with pytest.raises(ConfigurationError, match="same name"):
        _rt(NIGHTLY, NIGHTLY)
