"""Conformance of Limiter implementations: the in-memory limiter, Firestore (on the emulator) and Redis (on a
``redis-server`` started for the session).

``limiters()`` hands out limiters that share one state: the same object in memory, and new instances on
the same collection or key prefix for Firestore and Redis (each Redis one with its own connections), like
separate processes of the step function."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agex.adapters.inmemory.limiter import InMemoryLimiter
from agex.core.errors import ConfigurationError
from agex.ports.limiter import Limiter, Permit, Wait
from agex.tools import ToolLimits

from .conftest import unique

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)  # a whole second
SLOTS_1 = ToolLimits(max_concurrent=1)

Factory = Callable[[], Limiter]


@pytest.fixture(params=["memory", "firestore", "redis"])
def limiters(request: pytest.FixtureRequest) -> Iterator[Factory]:
    if request.param == "memory":
        shared = InMemoryLimiter()
        yield lambda: shared
    elif request.param == "firestore":
        from agex.adapters.gcp.firestore_limiter import FirestoreLimiter

        client = request.getfixturevalue("firestore_client")
        prefix = unique("l") + "_"
        yield lambda: FirestoreLimiter(client, prefix=prefix)
    else:
        from agex.adapters.redis.limiter import RedisLimiter

        url, prefix = request.getfixturevalue("redis_url"), unique("l") + ":"
        made: list[RedisLimiter] = []

        def make() -> Limiter:
            made.append(RedisLimiter.from_url(url, prefix=prefix))
            return made[-1]

        yield make
        for limiter in made:
            limiter.close()


@pytest.fixture
def limiter(limiters: Factory) -> Limiter:
    return limiters()


def permit(result: Permit | Wait) -> Permit:
    assert isinstance(result, Permit), result
    return result


def wait(result: Permit | Wait) -> Wait:
    assert isinstance(result, Wait), result
    return result


def test_no_limits_always_permits(limiter: Limiter) -> None:
    p = permit(limiter.acquire("t", ToolLimits(), "h1", T0, 10))
    assert p == Permit("t", "h1", None)
    limiter.release(p)


def test_slots_never_exceed_max_concurrent_under_threads(limiters: Factory) -> None:
    max_concurrent, threads, cycles = 3, 8, 6
    limits = ToolLimits(max_concurrent=max_concurrent)
    lock = threading.Lock()
    holding: dict[int, str] = {}
    peak = 0
    errors: list[BaseException] = []

    def work(i: int) -> None:
        nonlocal peak
        limiter = limiters()  # one per thread: separate "processes" for Firestore
        try:
            done = 0
            while done < cycles:
                holder = f"h{i}-{done}"
                got = limiter.acquire("hammer", limits, holder, datetime.now(UTC), 60)
                if isinstance(got, Wait):
                    time.sleep(0.002)
                    continue
                assert got.slot is not None and 0 <= got.slot < max_concurrent
                with lock:
                    assert got.slot not in holding, f"slot {got.slot} held by {holding[got.slot]} and {holder}"
                    holding[got.slot] = holder
                    peak = max(peak, len(holding))
                time.sleep(0.005)
                with lock:
                    del holding[got.slot]
                limiter.release(got)
                done += 1
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not errors, errors
    assert 2 <= peak <= max_concurrent
    # every slot was given back
    assert isinstance(limiters().acquire("hammer", ToolLimits(max_concurrent=max_concurrent), "last",
                                         datetime.now(UTC), 60), Permit)


def test_same_holder_gets_its_slot_again(limiter: Limiter) -> None:
    limits = ToolLimits(max_concurrent=2)
    first = permit(limiter.acquire("t", limits, "h1", T0, 10))
    again = permit(limiter.acquire("t", limits, "h1", T0 + timedelta(seconds=1), 10))
    assert again == first
    other = permit(limiter.acquire("t", limits, "h2", T0, 10))
    assert other.slot != first.slot
    wait(limiter.acquire("t", limits, "h3", T0, 10))


def test_reentry_refreshes_the_lease(limiter: Limiter) -> None:
    permit(limiter.acquire("t", SLOTS_1, "h1", T0, 10))
    permit(limiter.acquire("t", SLOTS_1, "h1", T0 + timedelta(seconds=8), 10))
    # the first lease would have ended at T0+10; the renewed one ends at T0+18
    w = wait(limiter.acquire("t", SLOTS_1, "h2", T0 + timedelta(seconds=12), 10))
    assert w.seconds == pytest.approx(6, abs=0.01)


def test_unreleased_slot_expires_after_its_lease(limiters: Factory) -> None:
    a, b = limiters(), limiters()
    first = permit(a.acquire("t", SLOTS_1, "h1", T0, 10))
    w = wait(b.acquire("t", SLOTS_1, "h2", T0 + timedelta(seconds=4), 10))
    assert w.seconds == pytest.approx(6, abs=0.01)
    assert "t" in w.reason and "1" in w.reason
    taken = permit(b.acquire("t", SLOTS_1, "h2", T0 + timedelta(seconds=10, milliseconds=1), 10))
    assert taken.slot == first.slot
    a.release(first)  # too late: h2 holds the slot now, and keeps it
    wait(a.acquire("t", SLOTS_1, "h3", T0 + timedelta(seconds=11), 10))
    b.release(taken)
    permit(a.acquire("t", SLOTS_1, "h3", T0 + timedelta(seconds=11), 10))


def test_slot_wait_is_capped(limiter: Limiter) -> None:
    permit(limiter.acquire("long", SLOTS_1, "h1", T0, 3600))
    assert wait(limiter.acquire("long", SLOTS_1, "h2", T0, 10)).seconds == 30
    permit(limiter.acquire("short", SLOTS_1, "h1", T0, 0.2))
    assert wait(limiter.acquire("short", SLOTS_1, "h2", T0, 10)).seconds == 1


def test_release_by_another_holder_is_a_no_op(limiters: Factory) -> None:
    a, b = limiters(), limiters()
    held = permit(a.acquire("t", SLOTS_1, "h1", T0, 60))
    b.release(Permit("t", "h2", held.slot))
    a.release(Permit("t", "h2", held.slot))
    wait(b.acquire("t", SLOTS_1, "h2", T0, 60))
    a.release(held)
    a.release(held)  # twice: still a no-op
    permit(b.acquire("t", SLOTS_1, "h2", T0, 60))


def test_release_from_another_instance(limiters: Factory) -> None:
    a, b = limiters(), limiters()
    held = permit(a.acquire("t", SLOTS_1, "h1", T0, 60))
    b.release(held)  # the step resumed elsewhere
    permit(a.acquire("t", SLOTS_1, "h2", T0, 60))


def test_per_second_cap_and_next_second(limiters: Factory) -> None:
    a, b = limiters(), limiters()
    limits = ToolLimits(per_second=3)
    now = T0 + timedelta(milliseconds=250)
    for i in range(3):
        p = permit((a, b)[i % 2].acquire("t", limits, f"h{i}", now + timedelta(milliseconds=i), 10))
        assert p.slot is None
    w = wait(b.acquire("t", limits, "h3", now + timedelta(milliseconds=500), 10))
    assert w.seconds == pytest.approx(0.25, abs=0.001)
    assert "t" in w.reason and "3" in w.reason
    wait(a.acquire("t", limits, "h4", T0 + timedelta(milliseconds=999), 10))
    for i in range(3):
        permit((b, a)[i % 2].acquire("t", limits, f"n{i}", T0 + timedelta(seconds=1), 10))
    wait(a.acquire("t", limits, "n3", T0 + timedelta(seconds=1, milliseconds=10), 10))


def test_fractional_rates(limiter: Limiter) -> None:
    # 2.5/s is a maximum: 2 calls in a second, not 3
    limits = ToolLimits(per_second=2.5)
    permit(limiter.acquire("a", limits, "h1", T0, 10))
    permit(limiter.acquire("a", limits, "h2", T0, 10))
    wait(limiter.acquire("a", limits, "h3", T0, 10))
    # 0.4/s: one call per 3 s window (windows start at epoch seconds divisible by 3)
    limits = ToolLimits(per_second=0.4)
    start = datetime.fromtimestamp(T0.timestamp() // 3 * 3 + 3, UTC)
    permit(limiter.acquire("b", limits, "h1", start + timedelta(seconds=0.5), 10))
    w = wait(limiter.acquire("b", limits, "h2", start + timedelta(seconds=1), 10))
    assert w.seconds == pytest.approx(2, abs=0.001)
    wait(limiter.acquire("b", limits, "h2", start + timedelta(seconds=2.9), 10))
    permit(limiter.acquire("b", limits, "h2", start + timedelta(seconds=3), 10))


def test_per_second_under_threads(limiters: Factory) -> None:
    limits = ToolLimits(per_second=5)
    now = T0 + timedelta(milliseconds=100)
    results: list[Permit | Wait] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        limiter = limiters()
        for j in range(3):
            got = limiter.acquire("busy", limits, f"h{i}-{j}", now, 10)
            with lock:
                results.append(got)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert len(results) == 24
    assert sum(isinstance(r, Permit) for r in results) == 5


def test_rate_permit_is_spent_when_no_slot_is_free(limiter: Limiter) -> None:
    limits = ToolLimits(max_concurrent=1, per_second=2)
    held = permit(limiter.acquire("t", limits, "h1", T0, 60))
    assert held.slot == 0
    assert "slot" in wait(limiter.acquire("t", limits, "h2", T0, 60)).reason
    limiter.release(held)
    assert "rate" in wait(limiter.acquire("t", limits, "h3", T0, 60)).reason
    permit(limiter.acquire("t", limits, "h3", T0 + timedelta(seconds=1), 60))


def test_tools_are_isolated(limiter: Limiter) -> None:
    both = ToolLimits(max_concurrent=1, per_second=1)
    permit(limiter.acquire("a", both, "h1", T0, 60))
    permit(limiter.acquire("b", both, "h2", T0, 60))
    wait(limiter.acquire("a", both, "h3", T0 + timedelta(seconds=1), 60))
    wait(limiter.acquire("b", both, "h4", T0, 60))
    permit(limiter.acquire("c", ToolLimits(per_second=1), "h5", T0, 60))


@pytest.mark.parametrize("limits", [ToolLimits(max_concurrent=0), ToolLimits(per_second=0),
                                    ToolLimits(per_second=-1.0), ToolLimits(per_second=float("inf"))])
def test_limits_that_can_never_grant_are_refused(limiter: Limiter, limits: ToolLimits) -> None:
    with pytest.raises(ConfigurationError):
        limiter.acquire("t", limits, "h1", T0, 10)


def test_firestore_cost_per_call(firestore_client: Any) -> None:
    from agex.adapters.gcp.firestore_limiter import FirestoreLimiter

    prefix = unique("l") + "_"
    a, b = FirestoreLimiter(firestore_client, prefix=prefix), FirestoreLimiter(firestore_client, prefix=prefix)
    limits = ToolLimits(max_concurrent=4)
    held = permit(a.acquire("t", limits, "h1", T0, 60))
    assert a.stats == {"reads": 1, "writes": 1, "lost": 0}  # an empty query is billed one read
    permit(a.acquire("t", limits, "h2", T0, 60))
    assert a.stats == {"reads": 2, "writes": 2, "lost": 0}
    a.release(held)
    assert a.stats == {"reads": 2, "writes": 3, "lost": 0}  # release: one conditional delete
    other = permit(a.acquire("t", limits, "h3", T0, 60))
    b.release(other)
    assert b.stats == {"reads": 1, "writes": 1, "lost": 0}  # another instance reads the slot first
    rate = ToolLimits(per_second=2)
    permit(b.acquire("r", rate, "h1", T0, 60))
    assert b.stats == {"reads": 1, "writes": 2, "lost": 0}  # a rate permit: one create, no read
    permit(b.acquire("r", rate, "h2", T0, 60))
    # this instance knows it took the window's permits: refused without a single create
    wait(b.acquire("r", rate, "h3", T0, 60))
    assert b.stats == {"reads": 1, "writes": 3, "lost": 0}
    # another instance learns it by failed creates, once per permit
    c = FirestoreLimiter(firestore_client, prefix=prefix)
    wait(c.acquire("r", rate, "h4", T0, 60))
    wait(c.acquire("r", rate, "h5", T0, 60))
    assert c.stats == {"reads": 0, "writes": 0, "lost": 2}
