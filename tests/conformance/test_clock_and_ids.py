"""Clock and id sources: the system ones and the test ones keep the same promises."""

from __future__ import annotations

from datetime import UTC

import pytest

from agex.core.clock import Clock, Ids, ManualClock, RandomIds, SequentialIds, SystemClock


@pytest.mark.parametrize("clock", [SystemClock(), ManualClock()], ids=["system", "manual"])
def test_clocks_tell_aware_utc_time_that_does_not_go_back(clock: Clock) -> None:
    a, b = clock.now(), clock.now()
    assert a.tzinfo is not None and a.utcoffset() == UTC.utcoffset(None)
    assert b >= a


@pytest.mark.parametrize("ids", [RandomIds(), SequentialIds()], ids=["random", "sequential"])
def test_ids_are_unique_prefixed_and_url_safe(ids: Ids) -> None:
    made = [ids.new_id("run_") for _ in range(2000)]
    assert len(set(made)) == len(made)
    assert all(i.startswith("run_") and i.replace("_", "").isalnum() and i.islower() for i in made)


def test_random_ids_sort_by_creation_time() -> None:
    import time

    ids = RandomIds()
    first = ids.new_id("r")
    time.sleep(0.002)
    assert ids.new_id("r") > first
